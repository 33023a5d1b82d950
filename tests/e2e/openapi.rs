//! Issue 13, item 2: the API's OpenAPI document is served at
//! `/api/v1/openapi.json` without a token and is the one `hub
//! print-openapi` prints; every error is an RFC 9457 problem, axum's own
//! rejections included; and schemathesis (PyPI), run against a live hub
//! holding real devices, resources, residents and bookings, finds no 5xx
//! and no answer that breaks the document (status, media type or schema)
//! within a bounded number of examples per operation.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tests::*;

const CONFIG: &str = include_str!("../fixtures/schedule.toml");

/// What schemathesis checks on every answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";
/// Examples per operation and phase: with 39 operations the run takes
/// 15-25 s on a 2-core machine running other tests beside it.
const MAX_EXAMPLES: &str = "25";
/// A run that has not ended by then is stopped and fails the test.
const DEADLINE: Duration = Duration::from_secs(120);

/// The schemathesis program: on the PATH, else in the virtual environment
/// `./scripts/test.sh` installs it into.
fn schemathesis() -> Result<PathBuf> {
    let on_path = Command::new("schemathesis").arg("--version").output();
    if on_path.is_ok_and(|out| out.status.success()) {
        return Ok(PathBuf::from("schemathesis"));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let venv = cache.join("yizhan/schemathesis/bin/schemathesis");
    ensure!(
        venv.exists(),
        "schemathesis is not installed: ./scripts/test.sh installs it (PyPI schemathesis) into {}",
        venv.display()
    );
    Ok(venv)
}

/// A hub holding what the document's examples name: the device `piano1`,
/// center `c1` and its room `spin`, the resources of the schedule fixture
/// (`yoga`, `piano1`, ...), a resident and a booking.
async fn stocked_hub() -> Result<HubProcess> {
    let hub = HubProcess::start(HubOptions {
        extra_config: CONFIG.into(),
        ..HubOptions::default()
    })
    .await?;
    hub.provision("piano1", protocol::DeviceKind::Piano).await?;
    let (status, body) = hub
        .post_json(
            "/api/v1/residents",
            &json!({"id": "r1", "credential": "card-r1"}),
        )
        .await?;
    ensure!(status == 201, "resident: {status} {body}");
    let (status, body) = hub
        .post_json(
            "/api/v1/bookings",
            &json!({"resource": "yoga", "slot_start": "2027-01-04T19:00:00+08:00",
                    "resident": "r1", "group": "adult"}),
        )
        .await?;
    ensure!(status == 201, "booking: {status} {body}");
    Ok(hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_without_a_token_and_is_the_one_the_binary_prints() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", hub.api)).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await?;
    let printed = Command::new(workspace_binary("hub"))
        .arg("print-openapi")
        .output()?;
    ensure!(printed.status.success(), "hub print-openapi failed");
    let printed: Value = serde_json::from_slice(&printed.stdout)?;
    assert_eq!(served, printed);
    assert_eq!(served["openapi"], "3.1.0");
    let routes = listed_routes()?;
    for route in &routes {
        let operation = &served["paths"][&route.path][route.method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
    }
    Ok(())
}

/// One request the API refuses, and the problem it must answer.
struct Refused {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    kind: &'static str,
    /// What `detail` must contain.
    names: &'static str,
}

fn refused(method: &'static str, path: &'static str, status: u16, kind: &'static str) -> Refused {
    Refused {
        method,
        path,
        content_type: None,
        body: String::new(),
        status,
        kind,
        names: "",
    }
}

impl Refused {
    /// The request carries `body` as `content_type`, and `detail` must
    /// name `names`.
    fn sending(
        self,
        content_type: Option<&'static str>,
        body: String,
        names: &'static str,
    ) -> Refused {
        Refused {
            content_type,
            body,
            names,
            ..self
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_problem_including_axums_own_rejections() -> Result<()> {
    let hub = stocked_hub().await?;
    let json = Some("application/json");
    let cases = [
        refused("GET", "/api/v1/nothing", 404, "no-such-route"),
        refused("PATCH", "/api/v1/devices", 405, "method-not-allowed"),
        refused("GET", "/api/v1/devices/nobody", 404, "not-found"),
        refused("GET", "/api/v1/devices/%FF", 400, "invalid-parameter"),
        refused("GET", "/api/v1/devices?limit=x", 400, "invalid-parameter"),
        refused("GET", "/api/v1/devices?color=red", 400, "invalid-parameter"),
        refused("POST", "/api/v1/residents", 400, "malformed-body").sending(json, "{".into(), ""),
        refused("POST", "/api/v1/residents", 415, "unsupported-media-type").sending(
            None,
            "{}".into(),
            "",
        ),
        refused("POST", "/api/v1/residents", 422, "invalid-field").sending(
            json,
            "{}".into(),
            "`id`",
        ),
        refused("POST", "/api/v1/residents", 413, "body-too-large").sending(
            json,
            format!(
                "{{\"id\":\"r9\",\"credential\":\"{}\"}}",
                "x".repeat(20_000)
            ),
            "",
        ),
        refused("POST", "/api/v1/bookings", 422, "booking-rule").sending(
            json,
            json!({"resource": "yoga", "slot_start": "2027-02-01T19:00:00+08:00",
                   "resident": "r1", "group": "adult"})
            .to_string(),
            "",
        ),
    ];
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let mut request = client
            .request(case.method.parse()?, format!("{}{}", hub.api, case.path))
            .bearer_auth(ADMIN_TOKEN)
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let media = response.headers().get("content-type").cloned();
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        let kind = problem["type"].as_str().unwrap_or_default();
        let detail = problem["detail"].as_str().unwrap_or_default();
        let right = status == case.status
            && media.is_some_and(|m| m == "application/problem+json")
            && kind == format!("https://yizhan.dev/problems/{}", case.kind)
            && problem["status"] == case.status
            && problem["title"].is_string()
            && !detail.is_empty()
            && detail.contains(case.names)
            && (case.kind != "booking-rule" || problem["rule"] == "horizon");
        if !right {
            wrong.push(format!(
                "{} {} → want {} {}, got {status}: {problem}",
                case.method, case.path, case.status, case.kind
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// The last lines of a log (a fuzzed hub logs thousands).
fn log_end(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() -> Result<()> {
    let program = schemathesis()?;
    let hub = stocked_hub().await?;
    let work = tempfile::tempdir()?;
    let started = Instant::now();
    let output = tokio::process::Command::new(&program)
        .current_dir(work.path())
        .args([
            "run",
            &format!("{}/api/v1/openapi.json", hub.api),
            "--header",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "--checks",
            CHECKS,
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "13",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .with_context(|| format!("schemathesis ran over {DEADLINE:?}"))??;
    let took = started.elapsed();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("schemathesis ({took:?}):\n{report}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}\nthe hub log's end:\n{}",
        output.status,
        log_end(&hub.log())
    );
    let ready = hub.get("/readyz").send().await?;
    assert_eq!(
        ready.status(),
        200,
        "the hub is no longer ready:\n{}",
        hub.log()
    );
    Ok(())
}
