//! What an operator meets (issue 11): a busy hub's scrape that `promtool
//! check metrics` accepts, holding only the families of docs/metrics.md;
//! the scrape-only token, which reads `/metrics` and is refused by every
//! other route `hub print-routes` lists, and tokens read from files;
//! `hub check-config`, `RUST_LOG` and `hub --version`.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tests::*;

/// The metric catalog the hub's scrape must keep to.
const CATALOG: &str = include_str!("../../docs/metrics.md");

/// The `hub` binary with `args` and `env` (no token or log variables of
/// the test's own environment); its output.
fn hub_command(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let output = Command::new(workspace_binary("hub"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("YIZHAN_ADMIN_TOKEN")
        .env_remove("YIZHAN_METRICS_TOKEN")
        .envs(env.iter().copied())
        .output()?;
    Ok(output)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `/metrics` read with `token`.
async fn scrape(hub: &HubProcess, token: &str) -> Result<String> {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", hub.api))
        .bearer_auth(token)
        .send()
        .await?;
    ensure!(response.status() == 200, "/metrics: {}", response.status());
    Ok(response.text().await?)
}

/// The catalog's families and their types, from the tables' first two
/// cells (a cell may name several families).
fn catalog_families() -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in CATALOG.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split('`').skip(1).step_by(2) {
            families.insert(name.to_string(), kind.to_string());
        }
    }
    families
}

/// Asserts that `exposition` passes `promtool check metrics` and holds
/// only families of docs/metrics.md, each with its type there; returns the
/// scrape's families (also for the uplink's test).
pub(crate) fn check_against_catalog(exposition: &str) -> Result<BTreeMap<String, String>> {
    let (passed, said) = tests::promtool::check(exposition)?;
    assert!(passed && said.is_empty(), "promtool check metrics: {said}");
    let catalog = catalog_families();
    let scraped = scraped_families(exposition);
    for (name, kind) in &scraped {
        assert_eq!(
            catalog.get(name),
            Some(kind),
            "{name} ({kind}) is not in docs/metrics.md as a {kind}"
        );
    }
    Ok(scraped)
}

/// The scrape's families and their types (`# TYPE` lines).
fn scraped_families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_hubs_scrape_passes_promtool_and_holds_only_the_catalogs_families() -> Result<()> {
    let hub = HubProcess::start(HubOptions {
        token_files: true,
        ..HubOptions::simulated_clocks()
    })
    .await?;
    let args = "--centers 2 --speed 600 --seed 7 --sim-duration 1h --telemetry-interval 1s";
    let run = run_device_sim(&hub, args, Duration::from_secs(120)).await?;
    let exposition = scrape(&hub, METRICS_TOKEN).await?;
    let scraped = check_against_catalog(&exposition)?;
    for name in [
        "yizhan_build_info",
        "yizhan_devices",
        "yizhan_center_visits",
        "yizhan_pianos_in_use",
        "yizhan_alarms_active",
        "yizhan_certificate_expiry_timestamp_seconds",
        "yizhan_commands_open",
        "yizhan_webhook_outbox_messages",
        "yizhan_http_request_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(scraped.contains_key(name), "{name} missing from the scrape");
    }
    let devices = run.truth["devices"].as_array().map_or(0, Vec::len);
    assert_eq!(
        sum_metric(&exposition, "yizhan_devices", ""),
        devices as f64
    );
    // The API reads the stored days (written within 250 ms), the gauge
    // memory: the same numbers once ingest wrote its counts.
    eventually(
        Duration::from_secs(5),
        "visits as the API shows them",
        || async { visits_agree(&hub).await.ok().filter(|agree| *agree) },
    )
    .await?;

    // `hub --version` names the commit `yizhan_build_info` carries.
    let version = text(&hub_command(&["--version"], &[])?.stdout);
    let commit = version
        .trim()
        .rsplit_once('(')
        .and_then(|(_, c)| c.strip_suffix(')'))
        .context("hub --version: `hub <version> (<commit>)`")?;
    assert!(
        exposition.contains(&format!("yizhan_build_info{{commit=\"{commit}\",")),
        "{version}"
    );
    Ok(())
}

/// Whether `yizhan_center_visits` shows each simulated center's visits
/// today and this month as `GET /api/v1/centers/{id}/occupancy` does.
async fn visits_agree(hub: &HubProcess) -> Result<bool> {
    let exposition = hub.metrics().await?;
    for center in ["center01", "center02"] {
        let shown = hub
            .get_json(&format!("/api/v1/centers/{center}/occupancy"))
            .await?;
        for (period, field) in [("day", "visits_today"), ("month", "visits_this_month")] {
            let labels = format!("center=\"{center}\",period=\"{period}\"");
            let gauge = sum_metric(&exposition, "yizhan_center_visits", &labels);
            if Some(gauge) != shown[field].as_f64() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[tokio::test]
async fn the_metrics_token_reads_metrics_and_every_other_route_refuses_it() -> Result<()> {
    let hub = HubProcess::start(HubOptions {
        token_files: true,
        ..HubOptions::default()
    })
    .await?;
    let routes: Vec<(String, String)> = listed_routes()?
        .into_iter()
        .map(|route| (route.method, route.path))
        .collect();
    assert!(routes.len() >= 30, "{routes:?}");
    let http = reqwest::Client::new();
    let mut open = Vec::new();
    for (method, path) in &routes {
        let url = format!("{}{}", hub.api, fill_template(path));
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let anonymous = http.request(method.clone(), &url).send().await?.status();
        let answer = http
            .request(method.clone(), &url)
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await?;
        let status = answer.status();
        let body = answer.text().await?;
        if path == "/metrics" {
            assert_eq!((anonymous.as_u16(), status.as_u16()), (401, 200));
        } else if anonymous == 401 {
            assert_eq!(status, 403, "{method} {path}: {body}");
            assert!(body.contains("metrics token"), "{method} {path}: {body}");
        } else {
            assert!(status.is_success(), "{method} {path}: {status}");
            open.push(path.as_str());
        }
    }
    assert_eq!(
        open,
        ["/healthz", "/readyz", "/api/v1/openapi.json"],
        "routes that need no token"
    );
    // The admin token, read from its file too, still reads everything.
    scrape(&hub, ADMIN_TOKEN).await?;
    hub.get_json("/api/v1/devices").await?;
    Ok(())
}

#[test]
fn check_config_prints_the_merged_configuration_with_secrets_masked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hub.toml");
    std::fs::write(
        &file,
        "[api]\nlisten = \"127.0.0.1:8181\"\n\n[broker.plain]\n\
         users = [{ username = \"tool\", password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\" }]\n",
    )?;
    let token = "check-config-metrics-token";
    let output = hub_command(
        &["check-config", "--config", &file.display().to_string()],
        &[
            ("YIZHAN_API__LISTEN", "127.0.0.1:9191"),
            ("YIZHAN_METRICS_TOKEN", token),
            ("YIZHAN_UPLINK__USERNAME", "lianhua"),
            ("YIZHAN_UPLINK_PASSWORD", "uplink-secret-pw"),
            ("YIZHAN_CREDENTIAL_KEY", &"c0ffee42".repeat(8)),
        ],
    )?;
    let printed = text(&output.stdout);
    assert!(
        printed.contains("\ncredential_key = \"<masked>\""),
        "{printed}"
    );
    assert!(
        !printed.contains("c0ffee42"),
        "the credential key: {printed}"
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        printed.contains("listen = \"127.0.0.1:9191\""),
        "the variable overrides the file:\n{printed}"
    );
    assert!(
        printed.contains("metrics_token_sha256 = \"<masked>\""),
        "{printed}"
    );
    assert!(
        printed.contains("password_hash = \"<masked>\""),
        "{printed}"
    );
    assert!(
        printed.contains("admin_token_sha256 = \"\""),
        "unset: {printed}"
    );
    assert!(printed.contains("password = \"<masked>\""), "{printed}");
    assert!(
        !printed.contains(token)
            && !printed.contains("argon2")
            && !printed.contains("uplink-secret"),
        "{printed}"
    );
    Ok(())
}

/// A configuration file, environment variables, and the field the error
/// must name.
type BadConfig = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn check_config_names_the_bad_field_and_exits_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hub.toml");
    let cases: [BadConfig; 7] = [
        ("[broker]\nsegment_count = 1\n", &[], "broker.segment_count"),
        ("[api]\nbogus = 1\n", &[], "bogus"),
        ("", &[("YIZHAN_INGEST__BATCH_MAX", "0")], "ingest.batch_max"),
        (
            "",
            &[("YIZHAN_ADMIN_TOKEN_FILE", "/nonexistent/admin_token")],
            "YIZHAN_ADMIN_TOKEN_FILE",
        ),
        ("", &[("RUST_LOG", "hub=loudest")], "RUST_LOG"),
        (
            "[uplink]\nurls = [\"http://district\"]\n",
            &[],
            "uplink.urls[0]",
        ),
        (
            "",
            &[(
                "YIZHAN_UPLINK_PASSWORD_FILE",
                "/nonexistent/uplink_password",
            )],
            "YIZHAN_UPLINK_PASSWORD_FILE",
        ),
    ];
    for (config, env, field) in cases {
        std::fs::write(&file, config)?;
        let output = hub_command(
            &["check-config", "--config", &file.display().to_string()],
            env,
        )?;
        let said = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{field}: {said}");
        assert!(said.contains(field), "{said:?} should name {field}");
        assert!(output.stdout.is_empty(), "nothing printed for {field}");
    }
    Ok(())
}

#[tokio::test]
async fn rust_log_overrides_the_configured_log_filter() -> Result<()> {
    // The test hubs' log.filter is `info`: "hub started" is logged.
    let hub = HubProcess::start(HubOptions {
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..HubOptions::default()
    })
    .await?;
    hub.get_json("/api/v1/devices").await?;
    let log = hub.log();
    assert!(!log.contains("hub started"), "{log}");
    let default = HubProcess::start(HubOptions::default()).await?;
    eventually(Duration::from_secs(5), "hub started logged", || async {
        default.log().contains("hub started").then_some(())
    })
    .await?;
    Ok(())
}
