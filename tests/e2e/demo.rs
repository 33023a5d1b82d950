//! `device-sim demo`, the README's first command: it starts the hub binary
//! as a child on a config for simulated centers (the ts window opened for
//! simulated clocks, a `fixed:` schedule clock), sets up their rooms
//! through the API, its devices come online, residents book and check in
//! within a minute, and a SIGTERM stops the devices, then the hub.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_a_hub_with_a_simulated_center_and_stops_it() -> anyhow::Result<()> {
    let _heavy = heavy();
    let data = tempfile::tempdir()?;
    let mut demo = tokio::process::Command::new(workspace_binary("device-sim"))
        .arg("demo")
        .args(["--centers", "1", "--speed", "60"])
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .arg("--hub")
        .arg(workspace_binary("hub"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("--device-dir")
        .arg(data.path().join("devices"))
        .env("YIZHAN_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let endpoints = data.path().join("endpoints.json");
    let api = eventually(Duration::from_secs(20), "the hub's endpoints", || async {
        let text = std::fs::read_to_string(&endpoints).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        Some(format!("http://{}", value["api"].as_str()?))
    })
    .await?;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{api}{path}")).bearer_auth(ADMIN_TOKEN);
        async move { request.send().await.ok()?.json::<Value>().await.ok() }
    };
    eventually(
        Duration::from_secs(30),
        "18 simulated devices online",
        || async {
            let online = get("/api/v1/devices?online=true".into()).await?;
            (online["devices"].as_array()?.len() == 18).then_some(())
        },
    )
    .await?;
    // The counters report at once: their rooms have the seats the demo
    // configured.
    eventually(
        Duration::from_secs(20),
        "rooms with their seats",
        || async {
            let occupancy = get("/api/v1/centers/center01/occupancy".into()).await?;
            let rooms = occupancy["rooms"].as_array()?;
            let seats = rooms.iter().all(|room| room["seats"].as_u64().is_some());
            (!rooms.is_empty() && seats).then_some(())
        },
    )
    .await?;
    // Bookings flow from the start, check-ins within a minute (the demo
    // starts in the centers' hours; 60x: a slot's start is a minute away).
    let scrape = || async {
        let request = http.get(format!("{api}/metrics")).bearer_auth(ADMIN_TOKEN);
        request.send().await.ok()?.text().await.ok()
    };
    let outcome = |metrics: &str, outcome: &str| {
        sum_metric(
            metrics,
            "yizhan_bookings_total",
            &format!("outcome=\"{outcome}\""),
        )
    };
    eventually(Duration::from_secs(20), "bookings", || async {
        let metrics = scrape().await?;
        (outcome(&metrics, "booked") > 0.0).then_some(())
    })
    .await?;
    // The minute is the demo's on an idle machine; the suite shares 2 cores
    // with it (it timed out once at 60 s in a full run): allow two.
    let metrics = eventually(Duration::from_secs(120), "check-ins", || async {
        let metrics = scrape().await?;
        (outcome(&metrics, "checked_in") > 0.0).then_some(metrics)
    })
    .await?;
    let invalid_ts = sum_metric(
        &metrics,
        "yizhan_ingest_rejected_total",
        "reason=\"invalid_ts\"",
    );
    assert_eq!(
        invalid_ts, 0.0,
        "the ts window is open for simulated clocks"
    );

    let pid = demo.id().unwrap_or_default().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(15), demo.wait()).await??;
    assert!(status.success(), "{status}");
    let after = http.get(format!("{api}/healthz")).send().await;
    assert!(after.is_err(), "the hub stopped with the demo");
    Ok(())
}
