//! The district service (issue 12, item 4) on a cluster of three Debian
//! `nats-server` nodes (JetStream + MQTT, `deploy/nats/yizhan-nats.conf`),
//! fed by three hubs each with a simulated center. During the run the node
//! each hub is connected to is stopped (one after the other), one hub's
//! uplink is cut for 60 s, that hub is killed (-9) and restarted, the
//! district is killed (-9) and restarted. At the end every event, alarm and
//! booking write each hub stored reached the district exactly once (its
//! applied ids against each hub's store), the district's visits per center
//! and day equal the simulators' ground truth, and the backlogs rose and
//! came back to zero.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::nats_cluster::{
    NATS_DISTRICT_PASSWORD, NATS_DISTRICT_USER, NATS_HUB_PASSWORD, NATS_HUB_USER,
};
use tests::*;

const WAIT: Duration = Duration::from_secs(60);
/// The cut the issue asks for.
const CUT: Duration = Duration::from_secs(60);
/// The simulated day the centers run (a Monday), Shanghai time.
const START: &str = "2027-01-04T07:00:00+08:00";

/// Hub `n`'s client id upstream: the first part of its message ids.
fn hub_id(n: usize) -> String {
    format!("hub{n}")
}

fn center(n: usize) -> String {
    format!("center{n:02}")
}

/// A yoga class of two places in the hub's center, Mondays and Wednesdays,
/// and the schedule clock on Monday morning; the uplink to `urls` as
/// `user` (the password in a file).
fn hub_options(
    n: usize,
    urls: &[String],
    (user, password): (&str, &str),
    secrets: &tempfile::TempDir,
) -> anyhow::Result<HubOptions> {
    let password_file = secrets.path().join(format!("uplink_password{n}"));
    std::fs::write(&password_file, password)?;
    let config = format!(
        r#"{SIMULATED_CLOCKS}
[schedule]
clock = "fixed:2027-01-04T08:00:00+08:00"

[[resources]]
id = "yoga"
center = "{center}"
kind = "class"
room = "hall"
capacity = 2
slots = [{{ days = ["mon", "wed"], start = "19:00", end = "20:00" }}]
price = 0.0
market_price = 80.0

[uplink]
enabled = true
urls = {urls:?}
client_id = "{id}"
username = "{user}"
keepalive_secs = 2
connect_timeout_secs = 2
backoff_initial_ms = 100
backoff_max_ms = 1000
telemetry_window_secs = 5
"#,
        center = center(n),
        id = hub_id(n),
    );
    Ok(HubOptions {
        extra_config: config,
        env: vec![(
            "YIZHAN_UPLINK_PASSWORD_FILE".into(),
            password_file.display().to_string(),
        )],
        ..HubOptions::default()
    })
}

/// Two residents book the class of `day`, a third is offered a place (the
/// class is full), the first cancels. Returns the booking ids.
async fn bookings(hub: &HubProcess, day: &str, tag: &str) -> anyhow::Result<Vec<String>> {
    let slot = format!("{day}T19:00:00+08:00");
    let mut ids = Vec::new();
    for (n, expected) in [(1, 201), (2, 201), (3, 409)] {
        let body = json!({"resource": "yoga", "slot_start": slot,
                          "resident": format!("{tag}r{n}"), "group": "adult"});
        let (status, answer) = hub.post_json("/api/v1/bookings", &body).await?;
        anyhow::ensure!(
            status == expected,
            "booking {n} on {day}: {status} {answer}"
        );
        let id = answer["id"].as_str().or(answer["offer"]["id"].as_str());
        ids.push(id.unwrap_or_default().to_string());
    }
    hub.cancel_booking(&ids[0]).await?;
    Ok(ids)
}

/// The highest value each named series reached, sampled every 200 ms.
#[derive(Clone, Default)]
struct Peaks(Arc<Mutex<BTreeMap<String, f64>>>);

impl Peaks {
    /// Samples `metric` of the service at `api` (with `token`) as `name`
    /// until the returned task is aborted.
    fn watch(
        &self,
        name: String,
        api: String,
        token: &'static str,
        metric: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        let peaks = self.0.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let scraped = http
                    .get(format!("{api}/metrics"))
                    .bearer_auth(token)
                    .send()
                    .await;
                if let Ok(response) = scraped {
                    let text = response.text().await.unwrap_or_default();
                    let value = sum_metric(&text, metric, "");
                    let mut peaks = peaks.lock().unwrap_or_else(|p| p.into_inner());
                    let peak = peaks.entry(name.clone()).or_insert(0.0);
                    *peak = peak.max(value);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    fn get(&self, name: &str) -> f64 {
        let peaks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        peaks.get(name).copied().unwrap_or(0.0)
    }
}

async fn wait_metric(
    hub: &HubProcess,
    name: &str,
    holds: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    hub.wait_metric(name, "", holds, WAIT).await
}

/// The hub's stored events as message ids, alarms apart.
async fn stored_events(hub: &HubProcess, id: &str) -> anyhow::Result<(BTreeSet<String>, usize)> {
    let devices = hub.get_json("/api/v1/devices?limit=10000").await?;
    let (mut ids, mut alarms) = (BTreeSet::new(), 0);
    for device in devices["devices"].as_array().into_iter().flatten() {
        let device = device["id"].as_str().unwrap_or_default();
        let events = hub
            .get_json(&format!("/api/v1/devices/{device}/events?limit=10000"))
            .await?;
        for stored in events["events"].as_array().into_iter().flatten() {
            let event = &stored["event"];
            let from_hub = event["source"] == "hub";
            let alarm = from_hub
                && ["interlock_trip", "alarm_ack"]
                    .contains(&event["type"].as_str().unwrap_or_default());
            alarms += usize::from(alarm);
            ids.insert(format!(
                "{id}/ev/{device}/{}",
                event["id"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok((ids, alarms))
}

/// Every id of `hub`'s messages the district applied.
async fn district_ids(district: &DistrictProcess, hub: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let query = after
            .as_ref()
            .map(|a| format!("?after={a}"))
            .unwrap_or_default();
        let page = district
            .get_json(&format!("/api/v1/district/hubs/{hub}/messages{query}"))
            .await?;
        ids.extend(
            page["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from)),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(ids),
        }
    }
}

/// The district's days of `center` over `from..=to`.
async fn district_days(
    district: &DistrictProcess,
    center: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let answer = district
        .get_json(&format!(
            "/api/v1/district/visits?from={from}&to={to}&center={center}"
        ))
        .await?;
    Ok(answer["centers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["days"].as_array().cloned().unwrap_or_default())
        .map(|day| (day["day"].as_str().unwrap_or_default().to_string(), day))
        .collect())
}

/// What the test saw of one hub.
struct Seen {
    events: usize,
    alarms: usize,
    booking_writes: usize,
    visits: u64,
}

/// Hub `n`'s events, alarms and booking writes all reached the district
/// once; its tallies and visits match the hub and the simulator.
async fn check_hub(
    n: usize,
    hub: &HubProcess,
    district: &DistrictProcess,
    bookings: &[String],
    truth: &Value,
) -> anyhow::Result<Seen> {
    let id = hub_id(n);
    let (events, alarms) = stored_events(hub, &id).await?;
    let applied = eventually(WAIT, &format!("{id}'s events at the district"), || async {
        let applied = district_ids(district, &id).await.ok()?;
        events
            .iter()
            .all(|e| applied.contains(e))
            .then_some(applied)
    })
    .await?;
    let forwarded: BTreeSet<String> = applied
        .iter()
        .filter(|i| i.starts_with(&format!("{id}/ev/")))
        .cloned()
        .collect();
    assert_eq!(
        forwarded, events,
        "{id}: the district has exactly the hub's events"
    );

    // Every write of every booking: revisions 1..=n, each once.
    let mut revisions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for applied in applied
        .iter()
        .filter_map(|i| i.strip_prefix(&format!("{id}/bk/")))
    {
        let (booking, rev) = applied.rsplit_once('/').unwrap_or_default();
        revisions
            .entry(booking)
            .or_default()
            .push(rev.parse().unwrap_or(0));
    }
    let known: BTreeSet<&str> = bookings.iter().map(String::as_str).collect();
    assert_eq!(
        revisions.keys().copied().collect::<BTreeSet<_>>(),
        known,
        "{id}: every booking"
    );
    for (booking, revs) in &mut revisions {
        revs.sort_unstable();
        let expected: Vec<u64> = (1..=revs.len() as u64).collect();
        assert_eq!(*revs, expected, "{id}: booking {booking}, every write once");
    }

    // The tallies: events and alarms of the real day (when the hub stored
    // them), bookings by status on the class's days, visits on the
    // simulated days.
    let calendar = protocol::calendar::Calendar::default();
    let today = calendar.day(now_ms());
    let (yesterday, tomorrow) = (
        today.pred_opt().unwrap_or(today),
        today.succ_opt().unwrap_or(today),
    );
    let days = district_days(
        district,
        &center(n),
        &yesterday.to_string(),
        &tomorrow.to_string(),
    )
    .await?;
    let sum = |field: &str| {
        days.values()
            .map(|d| d[field].as_u64().unwrap_or(0))
            .sum::<u64>() as usize
    };
    assert_eq!(
        sum("events") + sum("alarms") + sum("alarm_acks"),
        events.len(),
        "{id}: events counted once"
    );
    assert_eq!(
        sum("alarms") + sum("alarm_acks"),
        alarms,
        "{id}: alarms counted once"
    );
    let mut hub_statuses: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for booking in bookings {
        let stored = hub.get_json(&format!("/api/v1/bookings/{booking}")).await?;
        let day = calendar
            .day(stored["slot_start"].as_u64().unwrap_or(0))
            .to_string();
        let status = stored["status"].as_str().unwrap_or_default().to_string();
        *hub_statuses
            .entry(day)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }
    let mut booking_writes = 0;
    for (day, statuses) in &hub_statuses {
        let counted = district_days(district, &center(n), day, day).await?;
        let counted = &counted[day];
        let by_status: BTreeMap<String, u64> = serde_json::from_value(counted["bookings"].clone())?;
        assert_eq!(
            &by_status, statuses,
            "{id}: bookings of {day} by latest status"
        );
        booking_writes += counted["booking_writes"].as_u64().unwrap_or(0) as usize;
    }
    assert_eq!(
        booking_writes,
        revisions.values().map(Vec::len).sum::<usize>(),
        "{id}: writes counted once"
    );

    // Visits per day: the simulator's ground truth.
    let truth_days = truth["days"][center(n)]
        .as_object()
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(!truth_days.is_empty(), "{id}: the simulator counted days");
    let mut visits = 0;
    for (day, expected) in &truth_days {
        let expected = expected["visits"].as_u64().unwrap_or(0);
        let counted = district_days(district, &center(n), day, day).await?;
        assert_eq!(
            counted[day]["visits"].as_u64(),
            Some(expected),
            "{} on {day}: visits",
            center(n)
        );
        visits += expected;
    }
    Ok(Seen {
        events: events.len() - alarms,
        alarms,
        booking_writes,
        visits,
    })
}

/// Messages and mean payload bytes per class, from a district scrape.
fn message_sizes(scrape: &str) -> String {
    ["event", "alarm", "twin", "telemetry", "booking", "visits"]
        .iter()
        .map(|class| {
            let label = format!("class=\"{class}\"");
            let bytes = sum_metric(scrape, "yizhan_district_received_bytes_total", &label);
            let messages = sum_metric(scrape, "yizhan_district_messages_total", &label);
            format!("{class} {messages} × {:.0} B", bytes / messages.max(1.0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_reach_the_district_exactly_once_through_node_stops_a_cut_and_kill_9(
) -> anyhow::Result<()> {
    let _heavy = heavy();
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await?;
    let source = format!(
        "[source]\nkind = \"nats\"\nurls = {:?}\nusername = \"{NATS_DISTRICT_USER}\"\n\
         ack_wait_secs = 5\nbatch = 256\n",
        cluster.nats_urls()
    );
    let password = vec![(
        "DISTRICT_SOURCE_PASSWORD".to_string(),
        NATS_DISTRICT_PASSWORD.to_string(),
    )];
    let mut district = DistrictProcess::start(&source, password).await?;

    // Hub 1 reaches every node through a proxy the test cuts; hubs 2 and 3
    // directly. Each starts on its own node and fails over to the next.
    let nodes = cluster.mqtt_urls();
    let mut proxies = Vec::new();
    for node in &cluster.nodes {
        proxies.push(TcpProxy::start(node.mqtt_port).await?);
    }
    let secrets = tempfile::tempdir()?;
    let mut hubs = Vec::new();
    for n in 1..=3 {
        let urls: Vec<String> = (0..3)
            .map(|k| (n - 1 + k) % 3)
            .map(|node| match n {
                1 => proxies[node].url(),
                _ => nodes[node].clone(),
            })
            .collect();
        let login = (NATS_HUB_USER, NATS_HUB_PASSWORD);
        hubs.push(HubProcess::start(hub_options(n, &urls, login, &secrets)?).await?);
    }
    let peaks = Peaks::default();
    let mut watchers = Vec::new();
    for (n, hub) in hubs.iter().enumerate() {
        watchers.push(peaks.watch(
            hub_id(n + 1),
            hub.api.clone(),
            ADMIN_TOKEN,
            "yizhan_uplink_backlog_messages",
        ));
    }
    watchers.push(peaks.watch(
        "district".into(),
        district.api.clone(),
        DISTRICT_TOKEN,
        "yizhan_district_source_pending_messages",
    ));

    // The centers open: hub 1's for 5 simulated hours, the others' for 15
    // (at 600x: 30 s and 90 s).
    let mut sims = Vec::new();
    for (n, hub) in hubs.iter().enumerate() {
        let hours = if n == 0 { 5 } else { 15 };
        let args = format!(
            "--centers 1 --first-center {} --pianos 1 --therapy-robots 1 --gates 1 --counters 2 \
             --speed 600 --seed {} --overheat-chance 0.5 --start {START} --sim-duration {hours}h",
            n + 1,
            20 + n
        );
        let (api, port) = (hub.api.clone(), hub.mqtt_port);
        sims.push(tokio::spawn(async move {
            run_device_sim_at(&api, port, &args, Duration::from_secs(240)).await
        }));
    }
    let mut booked: Vec<Vec<String>> = Vec::new();
    for (n, hub) in hubs.iter().enumerate() {
        booked.push(bookings(hub, "2027-01-04", &format!("h{}mon", n + 1)).await?);
    }

    // The node each hub is connected to stops; the hub moves to another;
    // the node comes back and catches up before the next one stops. (A
    // stop can move other hubs too: a QoS 1 publish whose JetStream store
    // fails while a stream's leader moves ends its connection.)
    let mut stopped = Vec::new();
    for n in 1..=3 {
        let node = cluster.wait_connected(&hub_id(n), WAIT).await?;
        cluster.stop(node).await?;
        let moved = cluster.wait_connected(&hub_id(n), WAIT).await?;
        assert_ne!(moved, node, "{} left the stopped node", hub_id(n));
        cluster.restart(node).await?;
        stopped.push(format!(
            "{}: {} → {}",
            hub_id(n),
            cluster.nodes[node].name,
            cluster.nodes[moved].name
        ));
    }

    // Hub 1's uplink goes dark for 60 s: its backlog grows while its
    // center finishes the day and takes Wednesday's bookings.
    let cut_at = Instant::now();
    for proxy in &proxies {
        proxy.cut();
    }
    wait_metric(&hubs[0], "yizhan_uplink_connected", |v| v == 0.0).await?;
    booked[0].extend(bookings(&hubs[0], "2027-01-06", "h1wed").await?);
    let truth1 = sims.remove(0).await??.truth;
    let counted_by_hub1 = eventually(WAIT, "hub 1 counted its center's visits", || async {
        let day = START[..10].to_string();
        let path = format!("/api/v1/centers/{}/visits?from={day}&to={day}", center(1));
        let counted = hubs[0].get_json(&path).await.ok()?["total"].as_u64()?;
        (counted == truth1["days"][center(1)][&day]["visits"].as_u64()?).then_some(counted)
    })
    .await?;

    // kill -9 hub 1 during the cut: its backlog is on disk.
    let before_kill = hubs[0].metric("yizhan_uplink_backlog_messages", "").await?;
    hubs[0].restart().await?;
    let after_restart = hubs[0].metric("yizhan_uplink_backlog_messages", "").await?;
    assert!(
        after_restart > 0.0,
        "hub 1's backlog survived kill -9 ({before_kill} before)"
    );

    // kill -9 the district while hubs 2 and 3 keep sending: what it had
    // not acknowledged comes again (and is dropped by id), the rest waited
    // in the stream.
    let applied_before = district
        .metric("yizhan_district_messages_total", "outcome=\"applied\"")
        .await;
    district.kill9_and_restart().await?;

    // The network comes back after 60 s; hub 1 drains.
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
    let cut_for = cut_at.elapsed();
    for proxy in &proxies {
        proxy.restore();
    }
    let mut truths = vec![truth1];
    for sim in sims {
        truths.push(sim.await??.truth);
    }
    for (n, hub) in hubs.iter().enumerate() {
        // Twice the usual wait: the whole suite shares 2 cores with this
        // test; a failure names the hub and shows its log's end.
        let drained = hub
            .wait_metric("yizhan_uplink_backlog_messages", "", |v| v == 0.0, 2 * WAIT)
            .await;
        if let Err(error) = drained {
            let log = hub.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("hub {}: {error}\n{}", n + 1, tail.join("\n"));
        }
        wait_metric(hub, "yizhan_uplink_oldest_age_seconds", |v| v == 0.0).await?;
        assert_eq!(
            hub.metric("yizhan_uplink_dropped_total", "").await?,
            0.0,
            "nothing dropped"
        );
    }
    eventually(WAIT, "the district's consumer drained", || async {
        let pending = district
            .metric("yizhan_district_source_pending_messages", "")
            .await;
        (pending == 0.0).then_some(())
    })
    .await?;

    let mut seen = Vec::new();
    for (n, hub) in hubs.iter().enumerate() {
        seen.push(check_hub(n + 1, hub, &district, &booked[n], &truths[n]).await?);
    }
    for watcher in watchers {
        watcher.abort();
    }

    // A hub resends a message the district has (as after a crash before
    // the PUBACK): it is dropped by its id and counts nothing twice.
    let day = &START[..10];
    let visits = truths[1]["days"][center(2)][day]["visits"]
        .as_u64()
        .unwrap_or(0);
    let resent = json!({"id": format!("{}/vi/{}/{day}/{visits}", hub_id(2), center(2)),
                        "hub": hub_id(2), "center": center(2), "day": day, "visits": visits, "at": now_ms()});
    let published = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.nodes[0].mqtt_port.to_string(),
        ])
        .args([
            "-u",
            NATS_HUB_USER,
            "-P",
            NATS_HUB_PASSWORD,
            "-q",
            "1",
            "-i",
            "resend",
        ])
        .args([
            "-t",
            &format!("yz/v1/{}/visits", center(2)),
            "-m",
            &resent.to_string(),
        ])
        .status()?;
    assert!(published.success(), "mosquitto_pub");
    eventually(WAIT, "the resent message dropped", || async {
        let label = "class=\"visits\",outcome=\"duplicate\"";
        (district
            .metric("yizhan_district_messages_total", label)
            .await
            >= 1.0)
            .then_some(())
    })
    .await?;
    let days = district_days(&district, &center(2), day, day).await?;
    assert_eq!(
        days[day]["visits"].as_u64(),
        Some(visits),
        "the resend counted nothing"
    );
    assert!(
        peaks.get(&hub_id(1)) > 0.0,
        "hub 1's backlog rose during the cut"
    );
    let duplicates = district
        .metric("yizhan_district_messages_total", "outcome=\"duplicate\"")
        .await;
    let applied = district
        .metric("yizhan_district_messages_total", "outcome=\"applied\"")
        .await;
    let rejected = district
        .metric("yizhan_district_messages_total", "outcome=\"rejected\"")
        .await;
    assert_eq!(rejected, 0.0, "the district refused nothing");
    let scrape = district.metrics().await?;
    let (passed, said) = tests::promtool::check(&scrape)?;
    assert!(
        passed && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    let sizes = message_sizes(&scrape);
    let centers = district.get_json("/api/v1/district/centers").await?;
    assert_eq!(centers["hubs"].as_array().map(Vec::len), Some(3));
    let per_hub: Vec<String> = seen
        .iter()
        .enumerate()
        .map(|(n, s)| {
            format!(
                "{}: {} events, {} alarms, {} booking writes, {} visits (truth), backlog peak {}",
                hub_id(n + 1),
                s.events,
                s.alarms,
                s.booking_writes,
                s.visits,
                peaks.get(&hub_id(n + 1))
            )
        })
        .collect();
    println!(
        "district e2e in {:?}: messages applied: {applied_before} by the district before its \
         kill -9, {applied} by the restarted one; {duplicates} duplicates dropped; \
         district pending peak {}; hub 1 cut for {cut_for:?}, its visits {counted_by_hub1} before \
         kill -9, backlog {before_kill} before and {after_restart} after it; nodes stopped: {}; \
         {}; mean payload per class since the restart: {sizes}",
        started.elapsed(),
        peaks.get("district"),
        stopped.join(", "),
        per_hub.join("; ")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mosquitto_the_district_keeps_a_persistent_session_and_gets_every_fact_once(
) -> anyhow::Result<()> {
    const USER: &str = "district-e2e";
    const PASSWORD: &str = "mosquitto-password-0123";
    let dir = tempfile::tempdir()?;
    // Persistent sessions on disk; the district's queue unbounded while it
    // is away (mosquitto keeps 1,000 by default, then drops).
    let extra = format!(
        "persistence true\npersistence_location {}/\nmax_queued_messages 0\n",
        dir.path().display()
    );
    let mosquitto = Mosquitto::start_with(USER, PASSWORD, &extra)?;
    let source = format!(
        "[source]\nkind = \"mqtt\"\nurls = [\"mqtt://127.0.0.1:{}\"]\nusername = \"{USER}\"\n\
         consumer = \"district-e2e\"\nkeepalive_secs = 2\n",
        mosquitto.port
    );
    let password = vec![("DISTRICT_SOURCE_PASSWORD".to_string(), PASSWORD.to_string())];
    let mut district = DistrictProcess::start(&source, password).await?;
    let secrets = tempfile::tempdir()?;
    let url = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    let hub = HubProcess::start(hub_options(1, &[url], (USER, PASSWORD), &secrets)?).await?;
    let sim = tokio::spawn({
        let (api, port) = (hub.api.clone(), hub.mqtt_port);
        let args = format!(
            "--centers 1 --pianos 1 --therapy-robots 1 --gates 1 --counters 2 --speed 600 \
             --seed 31 --overheat-chance 0.5 --start {START} --sim-duration 3h"
        );
        async move { run_device_sim_at(&api, port, &args, Duration::from_secs(120)).await }
    });
    let booked = bookings(&hub, "2027-01-04", "mq").await?;

    // The district crashes mid-run; the broker keeps its session.
    wait_metric(&hub, "yizhan_uplink_sent_total", |v| v >= 20.0).await?;
    district.kill9();
    let sent_while_away = hub.metric("yizhan_uplink_sent_total", "").await?;
    wait_metric(&hub, "yizhan_uplink_sent_total", |v| {
        v >= sent_while_away + 20.0
    })
    .await?;
    district.kill9_and_restart().await?;

    let truth = sim.await??.truth;
    wait_metric(&hub, "yizhan_uplink_backlog_messages", |v| v == 0.0).await?;
    let seen = check_hub(1, &hub, &district, &booked, &truth).await?;
    let duplicates = district
        .metric("yizhan_district_messages_total", "outcome=\"duplicate\"")
        .await;
    println!(
        "district on mosquitto: {} events, {} alarms, {} booking writes, {} visits (truth); \
         {duplicates} duplicates dropped after the restart",
        seen.events, seen.alarms, seen.booking_writes, seen.visits
    );
    Ok(())
}

#[tokio::test]
async fn the_district_names_a_bad_setting_and_answers_only_its_tokens() -> anyhow::Result<()> {
    let check = |vars: &[(&str, &str)], file: &str, field: &str| -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("district.toml");
        std::fs::write(&config, file)?;
        let output = std::process::Command::new(workspace_binary("district"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .env_remove("DISTRICT_TOKEN")
            .envs(vars.iter().copied())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{file:?}: {stderr}");
        assert!(stderr.contains(field), "{stderr:?} should name {field}");
        Ok(())
    };
    let token = [("DISTRICT_TOKEN", DISTRICT_TOKEN)];
    check(&[], "", "api.token_sha256")?;
    check(&token, "[source]\nkind = \"kafka\"\n", "kind")?;
    check(
        &token,
        "[source]\nurls = [\"nats://x\"]\n",
        "source.urls[0]",
    )?;
    check(&token, "[store]\ndedupe = 3\n", "dedupe")?;
    check(&[("DISTRICT_TOKEN", "short")], "", "DISTRICT_TOKEN")?;

    const USER: &str = "district-e2e";
    const PASSWORD: &str = "mosquitto-password-0123";
    const SCRAPE: &str = "e2e-district-metrics-token-0123";
    let mosquitto = Mosquitto::start(USER, PASSWORD)?;
    let source = format!(
        "[source]\nkind = \"mqtt\"\nurls = [\"mqtt://127.0.0.1:{}\"]\nusername = \"{USER}\"\n",
        mosquitto.port
    );
    let env = vec![
        ("DISTRICT_SOURCE_PASSWORD".to_string(), PASSWORD.to_string()),
        ("DISTRICT_METRICS_TOKEN".to_string(), SCRAPE.to_string()),
    ];
    let district = DistrictProcess::start(&source, env).await?;
    let http = reqwest::Client::new();
    let visits = format!(
        "{}/api/v1/district/visits?from=2027-01-04&to=2027-01-04",
        district.api
    );
    for (token, path, expected) in [
        (None, visits.as_str(), 401),
        (Some("wrong-token-0123456789"), visits.as_str(), 401),
        (Some(SCRAPE), visits.as_str(), 403),
        (Some(DISTRICT_TOKEN), visits.as_str(), 200),
        (Some(SCRAPE), &format!("{}/metrics", district.api), 200),
        (None, &format!("{}/metrics", district.api), 401),
        (None, &format!("{}/healthz", district.api), 200),
        (None, &format!("{}/readyz", district.api), 200),
    ] {
        let mut request = http.get(path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await?.status().as_u16();
        assert_eq!(status, expected, "{path} with {token:?}");
    }
    let (status, answer) = district
        .post_json(
            "/api/v1/district/centers/center01/devices/piano1/commands",
            &json!({"op": "unlock", "expires_in_ms": 1000}),
        )
        .await?;
    assert_eq!(status, 409, "commands without a key: {answer}");
    let (passed, said) = tests::promtool::check(&district.metrics().await?)?;
    assert!(
        passed && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    for (query, reason) in [
        ("visits?from=2027-01-04", "to"),
        ("visits?from=2027-01-05&to=2027-01-04", "before"),
        ("visits?from=2020-01-01&to=2027-01-04", "at most"),
        ("visits?from=2027-13-01&to=2027-01-04", "YYYY-MM-DD"),
        ("alarms?limit=0", "limit"),
        ("alarms?center=a%20b", "center"),
        ("hubs/x/messages?limit=100000", "limit"),
    ] {
        let response = district
            .get(&format!("/api/v1/district/{query}"))
            .send()
            .await?;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await?;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{query}: {error:?} should say {reason}"
        );
    }
    Ok(())
}
