//! The Grafana dashboards, checked without Grafana: they are what
//! `dashboards/build.py` writes; uids are unique; every datasource
//! reference resolves to the provisioned Prometheus (directly or through
//! the `datasource` variable defaulting to it); rates use Grafana's
//! interval variables; every variable an expression uses is defined. That
//! every expression returns data from a real Prometheus, and names only
//! metrics a live hub exports, is `prometheus_live.rs`.

use std::collections::BTreeSet;

use serde_json::Value;
use tests::ops_files::{dashboards, provisioned_datasource_uid, repo_root, run_tool_ok};

/// The Grafana version the dashboards are written for (11.0/11.1).
const SCHEMA_VERSION: u64 = 39;

/// Range selectors inside rate() and friends may only be these.
const RANGE_VARIABLES: &[&str] = &["$__rate_interval", "$__interval", "$__range"];

#[test]
fn the_dashboards_are_what_their_build_script_writes() -> anyhow::Result<()> {
    let root = repo_root();
    run_tool_ok(
        "python3",
        "Debian python3",
        &["dashboards/build.py", "--check"],
        &root,
    )?;
    let names: Vec<String> = dashboards()?.into_iter().map(|d| d.file).collect();
    assert_eq!(
        names,
        [
            "center-detail.json",
            "district-overview.json",
            "hub-internals.json"
        ]
    );
    Ok(())
}

#[test]
fn dashboard_uids_are_unique_and_schema_versions_pinned() -> anyhow::Result<()> {
    let mut uids = BTreeSet::new();
    for dashboard in dashboards()? {
        let uid = dashboard.uid().to_string();
        assert!(!uid.is_empty(), "{}: no uid", dashboard.file);
        assert!(
            uids.insert(uid.clone()),
            "{}: uid {uid} twice",
            dashboard.file
        );
        assert_eq!(
            dashboard.json["schemaVersion"].as_u64(),
            Some(SCHEMA_VERSION),
            "{}",
            dashboard.file
        );
        let ids: Vec<u64> = dashboard
            .panels()
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{}: panel ids repeat",
            dashboard.file
        );
    }
    Ok(())
}

#[test]
fn every_datasource_reference_resolves_to_the_provisioned_prometheus() -> anyhow::Result<()> {
    let uid = provisioned_datasource_uid()?;
    for dashboard in dashboards()? {
        let variable = dashboard
            .variables()
            .into_iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{}: no datasource variable", dashboard.file));
        let name = variable["name"].as_str().expect("variable name");
        assert_eq!(variable["query"], "prometheus", "{}", dashboard.file);
        assert_eq!(
            variable["current"]["value"].as_str(),
            Some(uid.as_str()),
            "{}: the datasource variable defaults to the provisioned uid",
            dashboard.file
        );
        let through_variable = [format!("${{{name}}}"), format!("${name}")];
        let refs = dashboard.datasource_refs();
        assert!(
            refs.len() > dashboard.queries().len(),
            "{}: panels and targets name their datasource",
            dashboard.file
        );
        for (at, reference) in refs {
            let target = match &reference {
                Value::String(s) => s.clone(),
                other => other["uid"].as_str().unwrap_or_default().to_string(),
            };
            let resolves = target == uid || through_variable.contains(&target);
            assert!(
                resolves,
                "{} {at}: datasource {reference} does not resolve to {uid}",
                dashboard.file
            );
            if let Some(kind) = reference["type"].as_str() {
                assert_eq!(kind, "prometheus", "{} {at}", dashboard.file);
            }
        }
    }
    Ok(())
}

#[test]
fn dashboard_queries_use_grafana_intervals_and_defined_variables() -> anyhow::Result<()> {
    for dashboard in dashboards()? {
        let defined: BTreeSet<String> = dashboard
            .variables()
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .collect();
        let queries = dashboard.queries();
        assert!(!queries.is_empty(), "{}: no queries", dashboard.file);
        for query in queries {
            let what = format!("{} / {}: {}", dashboard.file, query.panel, query.expr);
            for range in ranges(&query.expr) {
                assert!(
                    RANGE_VARIABLES.contains(&range.as_str()),
                    "{what}: range [{range}]"
                );
            }
            for used in variables_used(&query.expr) {
                let builtin = used.starts_with("__");
                assert!(
                    builtin || defined.contains(&used),
                    "{what}: ${used} is not defined"
                );
            }
        }
        let center = dashboard
            .variables()
            .into_iter()
            .find(|v| v["name"] == "center");
        if dashboard
            .queries()
            .iter()
            .any(|q| q.expr.contains("$center"))
        {
            let center = center.unwrap_or_else(|| panic!("{}: no center variable", dashboard.file));
            let query = center["query"]["query"].as_str().unwrap_or_default();
            assert!(
                query.starts_with("label_values(yizhan_") && query.ends_with(", center)"),
                "{}: {query}",
                dashboard.file
            );
        }
    }
    Ok(())
}

/// The `[...]` range selectors of an expression.
fn ranges(expr: &str) -> Vec<String> {
    expr.split('[')
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(range, _)| range.to_string()))
        .collect()
}

/// `$name` and `${name}` variables an expression uses.
fn variables_used(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            let rest = rest.strip_prefix('{').unwrap_or(rest);
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}
