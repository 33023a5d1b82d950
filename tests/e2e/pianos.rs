//! Piano usage: a session's minutes are filed under the local days it
//! spans, survive a hub restart in the middle, and are exported per center.

use std::time::Duration;

use protocol::api::CenterPianoUsage;
use protocol::topic::Channel;
use protocol::DeviceKind;
use serde_json::json;
use tests::*;

const WAIT: Duration = Duration::from_secs(10);
/// 2026-11-28 23:50 in Shanghai.
const BEFORE_MIDNIGHT: u64 = 1_795_881_000_000;
const MINUTE: u64 = 60_000;

async fn stored_events(hub: &HubProcess, device: &str) -> anyhow::Result<u64> {
    let events = hub
        .get_json(&format!("/api/v1/devices/{device}/events"))
        .await?;
    Ok(events["count"].as_u64().unwrap_or(0))
}

async fn session_event(device: &TestDevice, seq: u64, kind: &str, ts: u64) -> anyhow::Result<()> {
    let event =
        json!({"id": format!("e{seq}"), "ts": ts, "seq": seq, "type": kind, "source": "walk_in"});
    device
        .publish(Channel::Event, serde_json::to_vec(&event)?)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_across_midnight_and_a_restart_is_split_between_the_days() -> anyhow::Result<()> {
    let mut hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub
        .provision_in("piano1", DeviceKind::Piano, "c1", "music")
        .await?;
    let piano = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    session_event(&piano, 1, "session_start", BEFORE_MIDNIGHT).await?;
    eventually(WAIT, "session_start stored", || async {
        (stored_events(&hub, "piano1").await.ok()? == 1).then_some(())
    })
    .await?;
    drop(piano);

    hub.restart().await?;
    let piano = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    session_event(&piano, 2, "session_end", BEFORE_MIDNIGHT + 25 * MINUTE).await?;
    let usage: CenterPianoUsage = eventually(WAIT, "usage on both days", || async {
        let usage: CenterPianoUsage = hub
            .get_as("/api/v1/centers/c1/pianos?from=2026-11-28&to=2026-11-29")
            .await
            .ok()?;
        (usage.usage.len() == 2).then_some(usage)
    })
    .await?;
    let minutes: Vec<(&str, &str, f64)> = usage
        .usage
        .iter()
        .map(|u| (u.day.as_str(), u.piano.as_str(), u.minutes))
        .collect();
    assert_eq!(
        minutes,
        [
            ("2026-11-28", "piano1", 10.0),
            ("2026-11-29", "piano1", 15.0)
        ]
    );
    assert_eq!(usage.total_minutes, 25.0);
    let exported = hub
        .metric("yizhan_piano_usage_seconds_total", "center=\"c1\"")
        .await?;
    assert_eq!(exported, 1_500.0);
    Ok(())
}
