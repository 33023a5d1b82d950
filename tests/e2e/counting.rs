//! Counting against the simulator's ground truth: a simulated week of three
//! centers at high speed; the hub's visits per center per local day equal
//! what the entrance counters counted, and every room is empty again after
//! closing (the 24-hour gym holds who passed its gates in and not out).

use std::time::Duration;

use protocol::api::{CenterOccupancy, CenterVisits};
use protocol::{Channel, DeviceKind};
use serde_json::{json, Value};
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_week_of_visits_per_center_and_day_matches_the_ground_truth(
) -> anyhow::Result<()> {
    let _heavy = heavy();
    let hub = HubProcess::start(HubOptions::simulated_clocks()).await?;
    // Monday 00:00 to the next Monday 03:00 (171 h), Shanghai time: ~62 s real.
    let args = "--centers 3 --seed 11 --speed 10000 --start 2026-11-23 \
                --sim-duration 171h --telemetry-interval 1s";
    let run = run_device_sim(&hub, args, Duration::from_secs(240)).await?;
    let truth = run.truth;

    let days = truth["days"].as_object().expect("days per center");
    assert_eq!(days.len(), 3);
    for (center, center_days) in days {
        let center_days = center_days.as_object().expect("days");
        let (from, to) = (
            center_days.keys().next().expect("a first day"),
            center_days.keys().next_back().expect("a last day"),
        );
        let visits: CenterVisits = hub
            .get_as(&format!(
                "/api/v1/centers/{center}/visits?from={from}&to={to}"
            ))
            .await?;
        let mut week = 0;
        for day in &visits.days {
            let expected = center_days
                .get(&day.day)
                .map(|d| d["visits"].as_u64().expect("visits"))
                .unwrap_or(0);
            assert_eq!(day.visits, expected, "{center} on {}", day.day);
            week += expected;
        }
        assert_eq!(visits.total, week);
        assert!(
            week > 10_000,
            "{center}: a week of a busy center, got {week}"
        );

        let now: CenterOccupancy = hub
            .get_as(&format!("/api/v1/centers/{center}/occupancy"))
            .await?;
        assert_eq!(now.headcount, 0, "{center}: everyone left after closing");
        assert!(
            now.rooms.len() >= 4,
            "{center}: metered rooms {:?}",
            now.rooms
        );
        // The 24-hour gym never closes: it holds who passed its gates in
        // and not yet out (its room came through the API, so they open).
        let passed = |way: &str| -> u64 {
            center_days
                .values()
                .map(|d| d[way].as_u64().unwrap_or(0))
                .sum()
        };
        let gym = passed("gym_in") - passed("gym_out");
        for room in &now.rooms {
            let expected = if room.room == "gym" { gym } else { 0 };
            assert_eq!(
                room.people, expected,
                "{center}/{} after closing",
                room.room
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn visit_queries_name_what_is_wrong() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    for (query, reason) in [
        ("from=2026-11-23", "to"),
        ("from=2026-13-01&to=2026-12-01", "YYYY-MM-DD"),
        ("from=2026-11-23&to=2026-11-22", "before"),
        ("from=2020-01-01&to=2026-01-01", "at most"),
    ] {
        let response = hub
            .get(&format!("/api/v1/centers/center01/visits?{query}"))
            .send()
            .await?;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await?;
        let error = body["detail"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{query}: {error}");
    }
    let anonymous = reqwest::get(format!("{}/api/v1/centers/center01/occupancy", hub.api)).await?;
    assert_eq!(anonymous.status(), 401);
    Ok(())
}

#[tokio::test]
async fn a_counter_reporting_negative_people_is_rejected_and_counts_nothing() -> anyhow::Result<()>
{
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub
        .provision_in("door1", DeviceKind::Counter, "c1", "entrance")
        .await?;
    let mut counter = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Counter).await?;
    let error_topic = counter.topic(Channel::Error);
    counter
        .publish(Channel::Telemetry, telemetry(1, &[("in", json!(-2))]))
        .await?;
    let report = counter
        .message_on(&error_topic, Duration::from_secs(5))
        .await?;
    let report: protocol::ErrorReport = serde_json::from_slice(&report)?;
    assert!(report.reason.starts_with("invalid_payload"), "{report:?}");
    assert!(report.reason.contains("`in`"), "{report:?}");

    counter
        .publish(Channel::Telemetry, telemetry(2, &[("in", json!(3))]))
        .await?;
    eventually(
        Duration::from_secs(5),
        "the good message counted",
        || async {
            let now: CenterOccupancy = hub.get_as("/api/v1/centers/c1/occupancy").await.ok()?;
            (now.headcount == 3).then_some(())
        },
    )
    .await?;
    Ok(())
}
