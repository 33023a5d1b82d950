//! Retention and paging (issue 13, item 6): a real hub keeping events,
//! command records and notifications for 4 s proves old ones are removed
//! and counted, an open command and an undelivered notification kept; and
//! every list of records pages with `after`, `limit` and `next`.

use std::collections::HashSet;
use std::time::Duration;

use protocol::DeviceKind;
use serde_json::{json, Value};
use tests::*;

const WAIT: Duration = Duration::from_secs(20);
const SCHEDULE: &str = include_str!("../fixtures/schedule.toml");
const RETENTION: &str = "\n[retention]\nevents = \"4s\"\ncommands = \"4s\"\n\
                         notifications = \"4s\"\nevery = \"1s\"\n";

/// The schedule fixture with its webhook at `url`, keeping records 4 s.
fn config(webhook_url: &str) -> String {
    let webhook = format!("tick_ms = 20\nwebhook_url = {webhook_url:?}\nwebhook_retry_ms = 50");
    SCHEDULE.replace("tick_ms = 20", &webhook) + RETENTION
}

/// A URL where nothing listens: every delivery fails, so the notification
/// stays in the outbox.
fn dead_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(format!("http://{}/hook", listener.local_addr()?))
}

async fn publish_events(
    device: &mut TestDevice,
    ids: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    for (seq, id) in ids.enumerate() {
        device
            .event(&id, seq as u64 + 1, "passage", json!({"direction": "in"}))
            .await?;
        let ack = device.message_on("/tenants/door9/event/ack", WAIT).await?;
        anyhow::ensure!(serde_json::from_slice::<Value>(&ack)? == json!({"id": id}));
    }
    Ok(())
}

async fn issue(hub: &HubProcess, device: &str) -> anyhow::Result<String> {
    let body = json!({"op": "open", "expires_in_ms": 600_000});
    let (status, record) = hub
        .post_json(&format!("/api/v1/devices/{device}/commands"), &body)
        .await?;
    anyhow::ensure!(status == 202, "{status} {record}");
    Ok(record["id"].as_str().unwrap_or_default().to_owned())
}

/// Bob waitlisted for alice's piano slot, then alice cancels: bob is
/// promoted and notified.
async fn notify_bob(hub: &HubProcess) -> anyhow::Result<()> {
    let book = |resident: &str| {
        json!({"resource": "piano1", "slot_start": "2027-01-04T09:00:00+08:00",
               "resident": resident, "group": "adult"})
    };
    let (status, alice) = hub.post_json("/api/v1/bookings", &book("alice")).await?;
    anyhow::ensure!(status == 201, "{alice}");
    let (status, refused) = hub.post_json("/api/v1/bookings", &book("bob")).await?;
    anyhow::ensure!(status == 409, "{refused}");
    let waitlist = refused["waitlist"].as_str().unwrap_or_default().to_owned();
    let (status, bob) = hub.post_json(&waitlist, &json!({})).await?;
    anyhow::ensure!(status == 200, "{bob}");
    let cancel = hub
        .delete(&format!(
            "/api/v1/bookings/{}",
            alice["id"].as_str().unwrap_or_default()
        ))
        .send()
        .await?;
    anyhow::ensure!(cancel.status() == 200, "cancel: {}", cancel.status());
    Ok(())
}

async fn notifications_of_bob(hub: &HubProcess) -> usize {
    hub.get_json("/api/v1/notifications?resident=bob")
        .await
        .ok()
        .and_then(|notes| notes["notifications"].as_array().map(Vec::len))
        .unwrap_or(usize::MAX)
}

async fn pruned(hub: &HubProcess, kind: &str) -> f64 {
    hub.metric("yizhan_records_pruned_total", &format!("kind=\"{kind}\""))
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_records_and_keeps_open_commands_and_undelivered_notifications(
) -> anyhow::Result<()> {
    let mut hub = HubProcess::start(HubOptions {
        extra_config: config(&dead_url()?),
        ..HubOptions::default()
    })
    .await?;
    let creds = hub.provision("door9", DeviceKind::Gate).await?;
    let mut door = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    hub.provision("piano7", DeviceKind::Piano).await?;
    publish_events(&mut door, (0..5).map(|i| format!("old{i}"))).await?;
    let done = issue(&hub, "door9").await?;
    let command = door.next_command(WAIT).await?;
    door.ack(&command.id, true, None).await?;
    let open = issue(&hub, "piano7").await?; // offline: stays pending
    notify_bob(&hub).await?;
    eventually(WAIT, "door9's command acked", || async {
        let record = hub
            .get_json(&format!("/api/v1/devices/door9/commands/{done}"))
            .await
            .ok()?;
        (record["status"] == "acked").then_some(())
    })
    .await?;
    assert_eq!(notifications_of_bob(&hub).await, 1);

    eventually(WAIT, "old events and the acked command pruned", || async {
        (pruned(&hub, "events").await >= 5.0 && pruned(&hub, "commands").await >= 1.0).then_some(())
    })
    .await?;
    publish_events(&mut door, std::iter::once("new0".to_string())).await?;
    let events = hub.get_json("/api/v1/devices/door9/events").await?;
    let ids: Vec<&str> = events["events"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|e| e["event"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, ["new0"], "old events gone, the new one kept: {events}");
    let piano = hub.get_json("/api/v1/devices/piano7/commands").await?;
    assert_eq!(
        piano["commands"][0]["id"],
        json!(open),
        "the open command stays: {piano}"
    );
    assert_eq!(piano["commands"][0]["status"], "pending", "{piano}");
    let door_commands = hub.get_json("/api/v1/devices/door9/commands").await?;
    assert_eq!(door_commands["count"], 0, "{door_commands}");
    assert_eq!(notifications_of_bob(&hub).await, 1, "undelivered: kept");
    assert_eq!(pruned(&hub, "notifications").await, 0.0);
    assert_eq!(pruned(&hub, "commands").await, 1.0, "only the acked one");

    // A webhook that takes it: delivered, then pruned like any other.
    let webhook = WebhookSink::start(0).await?;
    hub.options_mut().extra_config = config(&webhook.url);
    hub.restart().await?;
    eventually(WAIT, "bob's notification delivered and pruned", || async {
        (!webhook.received().is_empty()
            && notifications_of_bob(&hub).await == 0
            && pruned(&hub, "notifications").await == 1.0)
            .then_some(())
    })
    .await?;
    let piano = hub.get_json("/api/v1/devices/piano7/commands").await?;
    assert_eq!(piano["count"], 1, "still open after the restart: {piano}");
    Ok(())
}

/// Walks `path` (with `?` or `&` for the query) `limit` at a time; the
/// ids `id` picks from each page's `items` array, in order.
async fn walk(
    hub: &HubProcess,
    path: &str,
    items: &str,
    limit: usize,
    id: fn(&Value) -> Option<String>,
) -> anyhow::Result<(Vec<String>, usize)> {
    let (mut ids, mut pages, mut after) = (Vec::new(), 0, String::new());
    loop {
        let page = hub.get_json(&format!("{path}limit={limit}{after}")).await?;
        let list = page[items].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(list.len() <= limit, "a page longer than its limit: {page}");
        ids.extend(list.iter().filter_map(id));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => {
                anyhow::ensure!(!page.as_object().is_some_and(|o| o.contains_key("next")));
                return Ok((ids, pages));
            }
        }
        anyhow::ensure!(!list.is_empty(), "an empty page with a next: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_after_limit_and_next_without_gaps_or_repeats() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("door9", DeviceKind::Gate).await?;
    let mut door = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    let first: Vec<String> = (0..23).map(|i| format!("e{i:03}")).collect();
    publish_events(&mut door, first.iter().cloned()).await?;

    // Walk while the device keeps sending: every event stored before the
    // walk is met once, in order; none twice.
    let more = (23..60).map(|i| format!("e{i:03}"));
    let (sent, walked) = tokio::join!(
        publish_events(&mut door, more),
        walk(&hub, "/api/v1/devices/door9/events?", "events", 5, |e| {
            e["event"]["id"].as_str().map(str::to_owned)
        })
    );
    sent?;
    let (ids, pages) = walked?;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {ids:?}"
    );
    let met: HashSet<&String> = ids.iter().collect();
    assert!(first.iter().all(|id| met.contains(id)), "no gap: {ids:?}");
    assert!(pages >= 5, "{pages} pages");

    let (all, pages) = walk(&hub, "/api/v1/devices/door9/events?", "events", 20, |e| {
        e["event"]["id"].as_str().map(str::to_owned)
    })
    .await?;
    assert_eq!(
        (all.len(), pages),
        (60, 3),
        "exactly three full pages, no empty fourth"
    );
    let default = hub.get_json("/api/v1/devices/door9/events").await?;
    assert_eq!(
        default["count"], 60,
        "the default page (100) holds them all"
    );

    hub.provision("piano7", DeviceKind::Piano).await?;
    let mut issued = Vec::new();
    for _ in 0..12 {
        issued.push(issue(&hub, "piano7").await?);
    }
    let (commands, _) = walk(
        &hub,
        "/api/v1/devices/piano7/commands?",
        "commands",
        5,
        |c| c["id"].as_str().map(str::to_owned),
    )
    .await?;
    assert_eq!(commands, issued, "oldest first, each once");
    let (devices, _) = walk(&hub, "/api/v1/devices?", "devices", 1, |d| {
        d["id"].as_str().map(str::to_owned)
    })
    .await?;
    assert_eq!(devices, ["door9", "piano7"]);

    for (query, field) in [
        ("after=zz", "`after`"),
        ("limit=0", "`limit`"),
        ("limit=10001", "`limit`"),
    ] {
        for path in [
            "/api/v1/devices/door9/events",
            "/api/v1/devices/door9/commands",
            "/api/v1/notifications?resident=bob&x=1",
        ] {
            let url = if path.contains('?') {
                format!("{}&{query}", path.replace("&x=1", ""))
            } else {
                format!("{path}?{query}")
            };
            let response = hub.get(&url).send().await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            assert_eq!(status, 400, "{url}: {body}");
            assert!(body.contains(field), "{url}: {body}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_booking_list_pages_by_slot_then_id() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions {
        extra_config: SCHEDULE.into(),
        ..HubOptions::default()
    })
    .await?;
    let mut booked = Vec::new();
    for hour in 9..16 {
        let body = json!({"resource": "piano1", "slot_start": format!("2027-01-04T{hour:02}:00:00+08:00"),
                          "resident": format!("r{hour}"), "group": "adult"});
        let (status, booking) = hub.post_json("/api/v1/bookings", &body).await?;
        anyhow::ensure!(status == 201, "{booking}");
        booked.push(booking["id"].as_str().unwrap_or_default().to_owned());
    }
    let path = "/api/v1/bookings?resource=piano1&from=2027-01-04T08:00:00%2B08:00\
                &to=2027-01-04T22:00:00%2B08:00&";
    let (ids, pages) = walk(&hub, path, "bookings", 3, |b| {
        b["id"].as_str().map(str::to_owned)
    })
    .await?;
    assert_eq!((ids, pages), (booked, 3), "slot order, each once, 3+3+1");
    let bad = hub.get(&format!("{path}after=00")).send().await?;
    assert_eq!(bad.status(), 400, "a cursor shorter than a slot start");
    let unpaged = hub
        .get("/api/v1/resources/piano1/availability?from=2027-01-04&to=2027-01-05&limit=5")
        .send()
        .await?;
    assert_eq!(
        unpaged.status(),
        400,
        "availability is not paged: no `limit`"
    );
    Ok(())
}
