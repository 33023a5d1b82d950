//! `device-sim bench` against a real mosquitto and a real hub (issue 3):
//! the JSON summaries are non-zero and consistent, and at QoS 1 every
//! message sent is acknowledged and received — delivered to the
//! subscriber by mosquitto, ingested into twins by the hub.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tests::{free_port, workspace_binary, HubOptions, HubProcess, Mosquitto, ADMIN_TOKEN};

const USERNAME: &str = "bench";
const PASSWORD: &str = "bench-e2e-password";
/// Messages per run, over three connections at 300 msg/s: about a second.
const COUNT: u64 = 300;

/// Runs a short bench with `args` and returns its JSON summary.
fn bench(args: &[&str]) -> Result<Value> {
    let count = COUNT.to_string();
    let output = Command::new(workspace_binary("device-sim"))
        .arg("bench")
        .args(["--connections", "3", "--count", &count, "--rate", "300"])
        .args(["--username", USERNAME, "--json"])
        .env("BENCH_PASSWORD", PASSWORD)
        .args(args)
        .output()
        .context("running device-sim bench")?;
    ensure!(
        output.status.success(),
        "device-sim bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("bench summary is not JSON")
}

/// QoS 1: sent = acknowledged = received = the count, every PUBACK timed,
/// and the connect phase complete.
fn check_qos1_consistent(summary: &Value) {
    assert_eq!(summary["qos"], json!(1), "{summary:#}");
    assert_eq!(summary["sent"], json!(COUNT), "{summary:#}");
    assert_eq!(summary["acknowledged"], json!(COUNT), "{summary:#}");
    assert_eq!(summary["received"], json!(COUNT), "{summary:#}");
    assert_eq!(summary["puback"]["count"], json!(COUNT), "{summary:#}");
    assert!(
        summary["puback"]["p99_us"].as_u64() > Some(0),
        "{summary:#}"
    );
    assert!(
        summary["received_per_second"].as_f64() > Some(0.0),
        "{summary:#}"
    );
    assert_eq!(summary["connect"]["connected"], json!(3), "{summary:#}");
    assert_eq!(summary["connection_errors"], json!(0), "{summary:#}");
}

#[tokio::test]
async fn bench_against_mosquitto_counts_what_the_subscriber_received() -> Result<()> {
    let mosquitto = Mosquitto::start(USERNAME, PASSWORD)?;
    let port = mosquitto.port.to_string();

    let qos1 = bench(&["--port", &port, "--qos", "1"])?;
    check_qos1_consistent(&qos1);
    assert_eq!(qos1["broker"], json!("mqtt"));
    assert_eq!(qos1["seq_gaps"], Value::Null, "only the hub counts gaps");
    assert_eq!(qos1["event_ack"], Value::Null, "only the hub acks events");

    let qos0 = bench(&["--port", &port, "--qos", "0", "--payload-bytes", "200"])?;
    assert_eq!(qos0["sent"], json!(COUNT), "{qos0:#}");
    assert_eq!(qos0["acknowledged"], json!(0), "{qos0:#}");
    assert!(qos0["received"].as_u64() > Some(0), "{qos0:#}");
    assert_eq!(qos0["puback"], Value::Null, "{qos0:#}");
    Ok(())
}

#[tokio::test]
async fn bench_against_the_hub_counts_what_its_twins_ingested_and_times_event_acks() -> Result<()> {
    let plain = free_port()?;
    let hub =
        HubProcess::start(HubOptions::with_tools_listener(plain, USERNAME, PASSWORD)?).await?;
    let certs = tempfile::tempdir()?;
    let (port, cert_dir) = (plain.to_string(), certs.path().display().to_string());
    let args = [
        "--port",
        port.as_str(),
        "--qos",
        "1",
        "--api",
        hub.api.as_str(),
        "--token",
        ADMIN_TOKEN,
        "--cert-dir",
        cert_dir.as_str(),
        "--event-rate",
        "20",
    ];
    let summary = bench(&args)?;
    check_qos1_consistent(&summary);
    assert_eq!(summary["broker"], json!("hub"));
    assert_eq!(summary["seq_gaps"], json!(0), "{summary:#}");
    let events = summary["events_sent"].as_u64().unwrap_or(0);
    assert!(events > 0, "{summary:#}");
    assert_eq!(summary["events_acknowledged"], json!(events), "{summary:#}");
    assert_eq!(summary["event_ack"]["count"], json!(events), "{summary:#}");

    // The messages really reached the provisioned devices' twins.
    let twin = hub.twin("bench0").await?;
    assert_eq!(twin["center"], json!("bench"));
    assert_eq!(twin["fields"]["in"]["value"], json!(3.0), "{twin:#}");
    assert_eq!(twin["last_telemetry_seq"], json!(COUNT / 3), "{twin:#}");
    Ok(())
}
