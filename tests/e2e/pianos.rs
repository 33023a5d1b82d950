//! Piano usage: a session's minutes are filed under the local days it
//! spans, survive a hub restart in the middle, and are exported per center.

use std::time::Duration;

use protocol::api::CenterPianoUsage;
use protocol::topic::Channel;
use protocol::DeviceKind;
use serde_json::{json, Value};
use tests::*;

const WAIT: Duration = Duration::from_secs(10);
/// 2026-11-28 23:50 in Shanghai.
const BEFORE_MIDNIGHT: u64 = 1_795_881_000_000;
const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

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
    let mut hub = HubProcess::start(HubOptions::simulated_clocks()).await?;
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

/// Publishes a piano event and waits for the hub's answer: `Ok(None)` when
/// it was acknowledged, `Ok(Some(reason))` when it was rejected.
async fn answer_to(piano: &mut TestDevice, event: Value) -> anyhow::Result<Option<String>> {
    let (ack, error) = (piano.topic(Channel::EventAck), piano.topic(Channel::Error));
    piano
        .publish(Channel::Event, serde_json::to_vec(&event)?)
        .await?;
    loop {
        match piano.events.recv().await {
            Some(DeviceEvent::Message { topic, .. }) if topic == ack => return Ok(None),
            Some(DeviceEvent::Message { topic, payload }) if topic == error => {
                let report: protocol::ErrorReport = serde_json::from_slice(&payload)?;
                return Ok(Some(report.reason));
            }
            Some(_) => {}
            None => anyhow::bail!("the piano's connection ended"),
        }
    }
}

/// Issue 9: a session from ts 0 to ts 10^15 made the hub write ~11.6 M
/// usage records on the ingest thread. Times outside the window, sessions
/// running backwards and negative walk-in minutes are rejected with their
/// reasons; the next good session counts.
#[tokio::test]
async fn issue_9_absurd_session_times_are_rejected_and_the_next_session_counts(
) -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub
        .provision_in("piano2", DeviceKind::Piano, "c1", "music")
        .await?;
    let mut piano = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    let now = now_ms();
    let event = |seq: u64, kind: &str, ts: u64, extra: Value| {
        let mut event = json!({"id": format!("e{seq}"), "ts": ts, "seq": seq, "type": kind, "source": "walk_in"});
        if let (Some(map), Value::Object(extra)) = (event.as_object_mut(), extra) {
            map.extend(extra);
        }
        event
    };
    for (event, expect) in [
        (event(1, "session_start", 0, json!({})), Some("invalid_ts")),
        (
            event(2, "session_end", 1_000_000_000_000_000, json!({})),
            Some("invalid_ts"),
        ),
        (
            event(3, "session_start", now - 10 * MINUTE, json!({})),
            None,
        ),
        (
            event(4, "session_end", now - 11 * MINUTE, json!({})),
            Some("invalid_duration"),
        ),
        (
            event(5, "session_start", now, json!({"minutes": -5})),
            Some("invalid_duration"),
        ),
        (event(6, "session_end", now - 5 * MINUTE, json!({})), None),
    ] {
        let what = event.to_string();
        let answer = tokio::time::timeout(WAIT, answer_to(&mut piano, event)).await??;
        let as_expected = match (answer.as_deref(), expect) {
            (None, None) => true,
            (Some(reason), Some(expected)) => reason.starts_with(expected),
            _ => false,
        };
        anyhow::ensure!(as_expected, "{what}: expected {expect:?}, got {answer:?}");
    }
    for (reason, count) in [("invalid_ts", 2.0), ("invalid_duration", 2.0)] {
        let counted = hub
            .metric(
                "yizhan_ingest_rejected_total",
                &format!("reason=\"{reason}\""),
            )
            .await?;
        assert_eq!(counted, count, "{reason}");
    }
    let calendar = protocol::calendar::Calendar::default();
    let (from, to) = (calendar.day(now - DAY), calendar.day(now + DAY));
    let usage: CenterPianoUsage = hub
        .get_as(&format!("/api/v1/centers/c1/pianos?from={from}&to={to}"))
        .await?;
    assert_eq!(usage.total_minutes, 5.0, "{usage:?}");
    assert_eq!(stored_events(&hub, "piano2").await?, 2);
    Ok(())
}
