//! Issue 13, item 5: correct answers under faults, against a real hub
//! whose fsyncs start failing on SIGUSR1 (`YIZHAN_TEST_FAULT=store_flush:
//! error`). A booking whose fsync failed is answered 503 with
//! `Retry-After` (it was 409 "try again" while its writes stayed in sled
//! for the next flush), the desk stops and the hub exits; after a restart
//! that booking is not there, and its retry with the same
//! `Idempotency-Key` books once: the second retry gets the first answer.
//! (The desk's bounded queue is an in-process test in
//! `hub/src/bookings/tests.rs`: filling 1,024 places over HTTP proves no
//! more.)

use std::time::Duration;

use serde_json::{json, Value};
use tests::*;

const CONFIG: &str = include_str!("../fixtures/schedule.toml");
/// The hub's exit status when a component went down.
const COMPONENT_DOWN: i32 = 3;

/// Books piano1 at `hhmm` on Monday 2027-01-04 for `resident` with `key`.
async fn book(
    hub: &HubProcess,
    key: &str,
    hhmm: &str,
    resident: &str,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let body = json!({
        "resource": "piano1", "slot_start": format!("2027-01-04T{hhmm}:00+08:00"),
        "resident": resident, "group": "adult"
    });
    let response = hub
        .post("/api/v1/bookings")
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, retry_after, response.json().await?))
}

/// Ids of the day's bookings of piano1.
async fn booked_ids(hub: &HubProcess) -> anyhow::Result<Vec<String>> {
    let list = hub
        .get_json("/api/v1/bookings?resource=piano1&from=2027-01-04&to=2027-01-05")
        .await?;
    let ids = list["bookings"].as_array().cloned().unwrap_or_default();
    Ok(ids
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_whose_fsync_failed_is_503_not_applied_and_its_retry_books_once(
) -> anyhow::Result<()> {
    let mut hub = HubProcess::start(HubOptions {
        extra_config: CONFIG.into(),
        env: vec![("YIZHAN_TEST_FAULT".into(), "store_flush:error".into())],
        ..HubOptions::default()
    })
    .await?;
    let (status, _, ann) = book(&hub, "k-ann", "09:00", "ann").await?;
    assert_eq!(status, 201, "{ann}");
    let (status, _, again) = book(&hub, "k-ann", "09:00", "ann").await?;
    assert_eq!((status, &again["id"]), (201, &ann["id"]), "{again}");

    hub.signal("USR1")?;
    eventually(Duration::from_secs(5), "the fault to fire", || async {
        hub.log().contains("test fault fires").then_some(())
    })
    .await?;
    let (status, retry_after, refused) = book(&hub, "k-bob", "10:00", "bob").await?;
    assert_eq!(status, 503, "{refused}\n{}", hub.log());
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not applied"),
        "{refused}"
    );
    assert_eq!(refused["type"], "https://yizhan.dev/problems/unavailable");
    let (exit, _) = hub.wait_exit(Duration::from_secs(10)).await?;
    assert_eq!(exit.code(), Some(COMPONENT_DOWN), "{}", hub.log());

    hub.options_mut().env.clear();
    hub.restart().await?;
    let ann_id = ann["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        booked_ids(&hub).await?,
        [ann_id.as_str()],
        "bob's is not applied"
    );
    let (status, _, bob) = book(&hub, "k-bob", "10:00", "bob").await?;
    assert_eq!(status, 201, "the retry books: {bob}");
    let (status, _, bob_again) = book(&hub, "k-bob", "10:00", "bob").await?;
    assert_eq!((status, &bob_again["id"]), (201, &bob["id"]), "{bob_again}");
    let (status, _, ann_again) = book(&hub, "k-ann", "09:00", "ann").await?;
    assert_eq!(
        (status, &ann_again["id"]),
        (201, &ann["id"]),
        "kept across a restart"
    );
    let (status, _, reused) = book(&hub, "k-ann", "11:00", "ann").await?;
    assert_eq!(status, 422, "a key sent with another request: {reused}");
    let mut ids = booked_ids(&hub).await?;
    ids.sort();
    let mut want = vec![ann_id, bob["id"].as_str().unwrap_or_default().to_string()];
    want.sort();
    assert_eq!(ids, want, "two bookings, each once");
    Ok(())
}
