//! The dashboards and alert rules against a real Prometheus (Debian's
//! package, started here) scraping a real hub every second with the scrape
//! token, while the simulated district runs against the hub and a
//! misbehaving device adds what a district also sees (a seq gap, a
//! malformed message, a publish outside its topics, a connection without
//! a certificate). Every dashboard panel's expression and every alert
//! rule's expression is sent to Prometheus's query API and must return
//! data; an alert expression may return nothing only where its
//! `promtool test rules` case proves it fires. Every metric an expression
//! names must be in the hub's `/metrics`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use protocol::{Channel, DeviceKind};
use serde_json::json;
use tests::ops_files::{alert_rules, alert_rules_path, alert_tests, dashboards, PanelQuery};
use tests::prometheus::Prometheus;
use tests::promql::metric_names;
use tests::*;

/// How often the test's Prometheus scrapes the hub and evaluates rules.
const SCRAPE: Duration = Duration::from_secs(1);
/// What the test puts for Grafana's interval variables: `$__rate_interval`
/// is at least four scrapes; `$__range` spans the whole test.
const RATE_INTERVAL: &str = "10s";
const INTERVAL: &str = "5s";
const RANGE: &str = "10m";
/// The misbehaving devices' center.
const PROBE: &str = "probe";
/// Alerts whose expressions the probe center makes return data here: an
/// interlock trip (firing: no `for`) and a third of its devices offline
/// (pending: `for: 10m`).
const LIVE_ALERTS: &[&str] = &["YizhanTherapyInterlockTrip", "YizhanDevicesOffline"];
/// How long the panels may take to all show data.
const DATA_TIMEOUT: Duration = Duration::from_secs(90);

/// The scrape-only token Prometheus reads `/metrics` with
/// (`YIZHAN_METRICS_TOKEN`; the hub answers it 403 on every other route).
const METRICS_TOKEN: &str = "e2e-metrics-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_returns_data_from_a_real_prometheus_and_names_exported_metrics(
) -> anyhow::Result<()> {
    let _heavy = heavy();
    // Three centers from 09:30 today (the hub's "today": visits today and
    // this month follow its wall clock), ten simulated minutes a real
    // second; therapy sessions overheat often.
    let today = protocol::calendar::Calendar::default().day(now_ms());
    let start = format!("{today}T09:30:00+08:00");
    let hub = HubProcess::start(district_hub(&start)).await?;
    let prometheus = Prometheus::start(&prometheus_files(&hub)?).await?;
    let args = format!(
        "--centers 3 --seed 5 --speed 600 --start {start} \
         --duration 60s --telemetry-interval 1s --overheat-chance 0.5"
    );
    let sim = run_device_sim(&hub, &args, Duration::from_secs(180));
    let observe = async {
        misbehave(&hub).await?;
        observe(&hub, &prometheus).await
    };
    let (sim, observed) = tokio::join!(sim, observe);
    if observed.is_err() {
        eprintln!("prometheus log:\n{}", prometheus.log());
    }
    observed?;
    sim?;
    Ok(())
}

/// A hub for the simulated district, taking the scrape token: its
/// devices' clocks, its schedule on a `fixed:` clock at the run's `start`
/// (the residents' front desk moves it along). The run sets up rooms and
/// resources through the API.
fn district_hub(start: &str) -> HubOptions {
    HubOptions {
        extra_config: format!("{SIMULATED_CLOCKS}\n[schedule]\nclock = \"fixed:{start}\"\n"),
        env: vec![("YIZHAN_METRICS_TOKEN".into(), METRICS_TOKEN.into())],
        ..HubOptions::default()
    }
}

/// The test's Prometheus: the hub as a file_sd target, the scrape token
/// from a file, the committed alert rules, everything every second.
fn prometheus_files(hub: &HubProcess) -> anyhow::Result<Vec<(&'static str, String)>> {
    let target = hub.api.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\n  evaluation_interval: {s}s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: yizhan-hub\n    authorization:\n      type: Bearer\n      \
         credentials_file: secrets/metrics_token\n    file_sd_configs:\n      \
         - files: [hubs/*.yml]\n        refresh_interval: {s}s\n",
        s = SCRAPE.as_secs(),
        rules = alert_rules_path().display(),
    );
    Ok(vec![
        ("prometheus.yml", config),
        ("secrets/metrics_token", METRICS_TOKEN.to_string()),
        (
            "hubs/test.yml",
            format!("- targets: [\"{target}\"]\n  labels:\n    street: e2e\n"),
        ),
    ])
}

/// A center, `probe`, whose devices do what real ones sometimes do: a
/// counter skips seqs, sends a malformed message and publishes outside its
/// topics; a client comes without a certificate; a therapy robot
/// overheats (the interlock trips); a provisioned counter never connects
/// (a third of the center offline).
async fn misbehave(hub: &HubProcess) -> anyhow::Result<()> {
    hub.provision_in("probe03", DeviceKind::Counter, PROBE, "hall")
        .await?;
    let creds = hub
        .provision_in("probe01", DeviceKind::Counter, PROBE, "entrance")
        .await?;
    let device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Counter).await?;
    device
        .publish(Channel::Telemetry, telemetry(1, &[]))
        .await?;
    device
        .publish(Channel::Telemetry, telemetry(5, &[]))
        .await?;
    device
        .publish(Channel::Telemetry, b"{not json".to_vec())
        .await?;
    device
        .client
        .publish(
            "/tenants/someone-else/telemetry",
            rumqttc::QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await?;
    let options = DeviceOptions {
        with_certificate: false,
        ..DeviceOptions::default()
    };
    let mut anonymous = TestDevice::connect(&creds, hub.mqtt_port, options);
    let _ = anonymous.disconnected(Duration::from_secs(5)).await;

    let creds = hub
        .provision_in("probe02", DeviceKind::TherapyRobot, PROBE, "therapy")
        .await?;
    let mut robot = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::TherapyRobot).await?;
    robot.event("s1", 1, "session_start", json!({})).await?;
    let hot = [("temp_c", json!(52.0)), ("heating", json!(true))];
    robot
        .publish(Channel::Telemetry, telemetry(1, &hot))
        .await?;
    let stop = robot.next_command(Duration::from_secs(10)).await?;
    robot.ack(&stop.id, true, None).await?;
    Ok(())
}

/// Waits until every panel query returns data (polling), then checks the
/// alert rules and the metric names.
async fn observe(hub: &HubProcess, prometheus: &Prometheus) -> anyhow::Result<()> {
    let substitutions = variable_values(prometheus).await?;
    let queries: Vec<PanelQuery> = dashboards()?.iter().flat_map(|d| d.queries()).collect();
    let start = Instant::now();
    let mut empty = loop {
        let mut empty = Vec::new();
        for query in &queries {
            let expr = substitute(&query.expr, query.interval.as_deref(), &substitutions);
            let result = if query.instant {
                prometheus.query(&expr).await?
            } else {
                prometheus
                    .query_range(&expr, Duration::from_secs(60), Duration::from_secs(5))
                    .await?
            };
            if result.is_empty() {
                empty.push(format!("{} / {}: {expr}", query.dashboard, query.panel));
            }
        }
        if empty.is_empty() || start.elapsed() > DATA_TIMEOUT {
            break empty;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    empty.sort();
    assert!(
        empty.is_empty(),
        "panels without data after {DATA_TIMEOUT:?}:\n{}",
        empty.join("\n")
    );
    println!(
        "{} panel queries returned data after {:?}",
        queries.len(),
        start.elapsed()
    );

    check_alert_expressions(prometheus).await?;
    check_metric_names(hub, &queries).await
}

/// `$center` and `$instance`: the first value Prometheus has for each
/// dashboard variable's `label_values` query (which must have some).
async fn variable_values(prometheus: &Prometheus) -> anyhow::Result<Vec<(String, String)>> {
    let mut values = Vec::new();
    for dashboard in dashboards()? {
        for (name, selector, label) in dashboard.label_values_variables()? {
            let path = format!("/api/v1/label/{label}/values");
            let found = eventually(
                DATA_TIMEOUT,
                &format!("label_values({selector}, {label})"),
                || {
                    let (path, selector) = (path.clone(), selector.clone());
                    async move {
                        let data = prometheus
                            .api(&path, &[("match[]", &selector)])
                            .await
                            .ok()?;
                        data.as_array()?.first()?.as_str().map(String::from)
                    }
                },
            )
            .await?;
            values.retain(|(n, _)| *n != format!("${name}"));
            values.push((format!("${name}"), found));
        }
    }
    Ok(values)
}

/// The expression as Grafana would send it for this test's time range.
fn substitute(expr: &str, panel_interval: Option<&str>, variables: &[(String, String)]) -> String {
    let mut out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", panel_interval.unwrap_or(INTERVAL))
        .replace("$__range", RANGE);
    for (name, value) in variables {
        let braced = format!("${{{}}}", &name[1..]);
        out = out.replace(&braced, value).replace(name, value);
    }
    assert!(!out.contains('$'), "a variable left in {out}");
    out
}

/// Every alert rule is loaded and healthy, and its expression returns
/// data, or its promtool test shows it firing.
async fn check_alert_expressions(prometheus: &Prometheus) -> anyhow::Result<()> {
    let rules = alert_rules()?;
    let tested = alert_tests()?.firing;
    let loaded = prometheus
        .api("/api/v1/rules", &[("type", "alert")])
        .await?;
    let mut healthy = BTreeSet::new();
    for group in loaded["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["name"].as_str().unwrap_or_default().to_string();
            assert_eq!(rule["health"], "ok", "{name}: {}", rule["lastError"]);
            healthy.insert(name);
        }
    }
    let mut quiet = Vec::new();
    for rule in &rules {
        assert!(
            healthy.contains(&rule.name),
            "{} not loaded and evaluated",
            rule.name
        );
        let result = prometheus.query(&rule.expr).await?;
        if LIVE_ALERTS.contains(&rule.name.as_str()) {
            let probe = result.iter().any(|s| s["metric"]["center"] == PROBE);
            assert!(
                probe,
                "{}: no data for center {PROBE}: {result:?}",
                rule.name
            );
        }
        if result.is_empty() {
            assert!(
                tested.contains(&rule.name),
                "{}: no data, and no promtool case shows it firing",
                rule.name
            );
            quiet.push(rule.name.as_str());
        }
    }
    let alerts = prometheus.api("/api/v1/alerts", &[]).await?;
    let firing = alerts["alerts"].as_array().into_iter().flatten().any(|a| {
        a["labels"]["alertname"] == "YizhanTherapyInterlockTrip"
            && a["labels"]["center"] == PROBE
            && a["state"] == "firing"
    });
    assert!(firing, "the interlock trip alert is not firing: {alerts}");
    println!(
        "{} alert expressions; no data (quiet on a healthy district, firing in promtool tests): {}",
        rules.len(),
        quiet.join(", ")
    );
    Ok(())
}

/// Every metric a panel or an alert names is in the hub's `/metrics` (read
/// with the scrape token); `up` is Prometheus's own.
async fn check_metric_names(hub: &HubProcess, queries: &[PanelQuery]) -> anyhow::Result<()> {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", hub.api))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut exprs: Vec<String> = queries.iter().map(|q| q.expr.clone()).collect();
    exprs.extend(alert_rules()?.into_iter().map(|r| r.expr));
    for dashboard in dashboards()? {
        exprs.extend(
            dashboard
                .label_values_variables()?
                .into_iter()
                .map(|(_, s, _)| s),
        );
    }
    let mut missing = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            if name != "up" && !exported.contains(name.as_str()) {
                missing.insert(name);
            }
        }
    }
    assert!(missing.is_empty(), "not in the hub's /metrics: {missing:?}");
    Ok(())
}

#[test]
fn grafana_variables_are_substituted_as_grafana_would() {
    let vars = vec![("$center".to_string(), "center01".to_string())];
    let expr = r#"sum(rate(a{center="$center"}[$__rate_interval])) + increase(b{c="${center}"}[$__range]) + increase(c[$__interval])"#;
    assert_eq!(
        substitute(expr, None, &vars),
        r#"sum(rate(a{center="center01"}[10s])) + increase(b{c="center01"}[10m]) + increase(c[5s])"#
    );
    assert_eq!(
        substitute("increase(c[$__interval])", Some("1h"), &vars),
        "increase(c[1h])"
    );
}
