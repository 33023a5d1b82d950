//! The fleet simulator against a real hub: three centers at `--speed 600`
//! across a local midnight, run to the end; the hub stored exactly the
//! events the simulator saw acknowledged.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_centers_at_speed_600_run_to_the_end_and_the_hub_stored_every_acked_event(
) -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::simulated_clocks()).await?;
    // 22:30 → 01:30 Shanghai time: two local days, 18 s real.
    let args = "--centers 3 --speed 600 --seed 42 \
                --start 2026-11-28T22:30:00+08:00 --sim-duration 3h";
    let run = run_device_sim(&hub, args, Duration::from_secs(120)).await?;
    let truth = run.truth;
    assert!(
        run.stdout.contains("ground truth: 54 devices in 3 centers"),
        "{}",
        run.stdout
    );
    assert_eq!(
        truth["totals"]["events_unacked"], 0,
        "every event was acked"
    );
    let mut stored_total = 0;
    for device in truth["devices"].as_array().expect("devices") {
        let id = device["id"].as_str().expect("id");
        let events = hub
            .get_json(&format!("/api/v1/devices/{id}/events?limit=10000"))
            .await?;
        let stored = events["count"].as_u64().expect("count");
        assert_eq!(stored, device["events_acked"].as_u64().unwrap(), "{id}");
        stored_total += stored;
    }
    assert_eq!(
        stored_total,
        truth["totals"]["events_acked"].as_u64().unwrap()
    );
    assert!(stored_total > 0, "gates and pianos raised events");

    let days = truth["days"].as_object().expect("days per center");
    assert_eq!(days.len(), 3);
    let dates: BTreeSet<&str> = days
        .values()
        .flat_map(|d| d.as_object().expect("days").keys().map(String::as_str))
        .collect();
    assert_eq!(dates, BTreeSet::from(["2026-11-28", "2026-11-29"]));
    Ok(())
}
