//! The uplink (issue 12) against a real upstream: mosquitto with
//! persistence as the district's broker, a persistent-session QoS 1
//! subscriber standing for the district, and TCP proxies the test cuts
//! and restores. What the hub stored (events, alarms, booking changes,
//! visits) is compared by message id with what reached the subscriber.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::{Channel, DeviceKind};
use serde_json::{json, Value};
use tests::*;

/// The hub's client id: the first part of every message id.
const HUB_ID: &str = "hub-e2e";
const USER: &str = "hub";
const PASSWORD: &str = "uplink-password-0123";
const WAIT: Duration = Duration::from_secs(30);

/// A yoga class of three places on Mondays, Wednesdays and Fridays, and a
/// schedule clock standing at Monday 2027-01-04 08:00, Shanghai.
const YOGA: &str = r#"
[schedule]
clock = "fixed:2027-01-04T08:00:00+08:00"

[[resources]]
id = "yoga"
center = "center01"
kind = "class"
room = "hall"
capacity = 3
slots = [{ days = ["mon", "wed", "fri"], start = "19:00", end = "20:00" }]
price = 0.0
market_price = 80.0
"#;

/// The district's broker: mosquitto with persistence, and the district's
/// subscriber on it.
struct District {
    mosquitto: Mosquitto,
    subscriber: UpstreamSubscriber,
    _dir: tempfile::TempDir,
}

impl District {
    async fn start() -> anyhow::Result<District> {
        District::start_with("").await
    }

    /// With `extra` lines in mosquitto's configuration (another listener).
    async fn start_with(extra: &str) -> anyhow::Result<District> {
        let dir = tempfile::tempdir()?;
        let persistence = format!(
            "persistence true\npersistence_location {}/\n{extra}",
            dir.path().display()
        );
        let mosquitto = Mosquitto::start_with(USER, PASSWORD, &persistence)?;
        let subscriber = UpstreamSubscriber::connect(SubscriberOptions {
            port: mosquitto.port,
            client_id: "district-e2e".into(),
            credentials: Some((USER.into(), PASSWORD.into())),
        })
        .await?;
        Ok(District {
            mosquitto,
            subscriber,
            _dir: dir,
        })
    }
}

/// A hub forwarding to `urls`, its password in a file named by
/// `YIZHAN_UPLINK_PASSWORD_FILE`; `extra` goes into `[uplink]`.
fn uplink_hub(urls: &[String], extra: &str, dir: &tempfile::TempDir) -> anyhow::Result<HubOptions> {
    let password: PathBuf = dir.path().join("uplink_password");
    std::fs::write(&password, format!("{PASSWORD}\n"))?;
    let uplink = format!(
        "[uplink]\nenabled = true\nurls = {urls:?}\nclient_id = {HUB_ID:?}\nusername = {USER:?}\n\
         keepalive_secs = 2\nconnect_timeout_secs = 2\nbackoff_initial_ms = 100\n\
         backoff_max_ms = 1000\ntelemetry_window_secs = 1\n{extra}\n"
    );
    Ok(HubOptions {
        extra_config: format!("{SIMULATED_CLOCKS}{YOGA}{uplink}"),
        env: vec![(
            "YIZHAN_UPLINK_PASSWORD_FILE".into(),
            password.display().to_string(),
        )],
        ..HubOptions::default()
    })
}

/// A uplink metric of `hub` (0 while it restarts).
async fn uplink_metric(hub: &HubProcess, name: &str, labels: &str) -> f64 {
    hub.metric(name, labels).await.unwrap_or(0.0)
}

async fn wait_metric(
    hub: &HubProcess,
    name: &str,
    labels: &str,
    holds: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    let last = std::sync::Mutex::new(f64::NAN);
    let waited = eventually(WAIT, &format!("{name}{{{labels}}}"), || async {
        let value = uplink_metric(hub, name, labels).await;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = value;
        holds(value).then_some(value)
    })
    .await;
    let last = *last.lock().unwrap_or_else(|p| p.into_inner());
    waited.map_err(|error| error.context(format!("last value {last}")))
}

/// Books the yoga class of local `day` full (three places), a fourth
/// resident joins its waitlist, the first cancels and the fourth is
/// promoted: 4 bookings, 8 writes. Returns the booking ids.
async fn booking_round(hub: &HubProcess, day: &str, tag: &str) -> anyhow::Result<Vec<String>> {
    let slot = format!("{day}T19:00:00+08:00");
    let mut ids = Vec::new();
    for n in 1..=4 {
        let body = json!({"resource": "yoga", "slot_start": slot, "resident": format!("{tag}r{n}"), "group": "adult"});
        let (status, answer) = hub.post_json("/api/v1/bookings", &body).await?;
        let id = match (n, status) {
            (1..=3, 201) => answer["id"].clone(),
            (4, 409) => answer["offer"]["id"].clone(),
            _ => anyhow::bail!("booking {n} of {day}: {status} {answer}"),
        };
        ids.push(id.as_str().unwrap_or_default().to_string());
    }
    let (status, waiting) = hub
        .post_json(&format!("/api/v1/bookings/{}/waitlist", ids[3]), &json!({}))
        .await?;
    anyhow::ensure!(status == 200, "waitlist: {status} {waiting}");
    let cancelled = hub
        .delete(&format!("/api/v1/bookings/{}", ids[0]))
        .send()
        .await?;
    anyhow::ensure!(cancelled.status() == 200, "cancel: {}", cancelled.status());
    Ok(ids)
}

/// A therapy robot overheats (an interlock trip) and staff acknowledge the
/// alarm: two alarm events.
async fn overheat_and_acknowledge(hub: &HubProcess) -> anyhow::Result<()> {
    let creds = hub
        .provision_in("robot99", DeviceKind::TherapyRobot, "center01", "therapy")
        .await?;
    let mut robot = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::TherapyRobot).await?;
    robot.event("s1", 1, "session_start", json!({})).await?;
    robot
        .publish(Channel::Telemetry, telemetry(1, &[("temp_c", json!(47.5))]))
        .await?;
    let stop = robot.next_command(WAIT).await?;
    robot.ack(&stop.id, true, None).await?;
    eventually(WAIT, "the alarm on the twin", || async {
        let twin = hub.twin("robot99").await.ok()?;
        (!twin["alarm"].is_null()).then_some(())
    })
    .await?;
    let (status, body) = hub
        .post_json("/api/v1/devices/robot99/alarm/ack", &json!({}))
        .await?;
    anyhow::ensure!(status == 202, "alarm ack: {status} {body}");
    Ok(())
}

/// Every event the hub stored, as message ids.
async fn stored_event_ids(hub: &HubProcess) -> anyhow::Result<BTreeSet<String>> {
    let devices = hub.get_json("/api/v1/devices").await?;
    let mut ids = BTreeSet::new();
    for device in devices["devices"].as_array().into_iter().flatten() {
        let id = device["id"].as_str().unwrap_or_default();
        let events = hub
            .get_json(&format!("/api/v1/devices/{id}/events?limit=10000"))
            .await?;
        for event in events["events"].as_array().into_iter().flatten() {
            let event_id = event["event"]["id"].as_str().unwrap_or_default();
            ids.insert(format!("{HUB_ID}/ev/{id}/{event_id}"));
        }
    }
    Ok(ids)
}

/// Every write of each booking reached the district once (revisions
/// 1..=n, each once by id) and the last one has the status the hub shows.
/// Returns the writes counted.
async fn check_bookings(
    hub: &HubProcess,
    ids: &[String],
    received: &Received,
) -> anyhow::Result<usize> {
    let mut revisions: HashMap<&str, BTreeMap<u64, &Value>> = HashMap::new();
    for message in received.on(&["booking"]) {
        let booking = message.payload["booking"].as_str().unwrap_or_default();
        let rev = message.payload["rev"].as_u64().unwrap_or_default();
        revisions
            .entry(booking)
            .or_default()
            .insert(rev, &message.payload);
    }
    let mut writes = 0;
    for id in ids {
        let booking = hub.get_json(&format!("/api/v1/bookings/{id}")).await?;
        let revs = revisions.get(id.as_str()).cloned().unwrap_or_default();
        let numbers: Vec<u64> = revs.keys().copied().collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "booking {id}: every write, once");
        let last = revs.values().last().copied().unwrap_or(&Value::Null);
        assert_eq!(
            last["status"], booking["status"],
            "booking {id}: the last write"
        );
        writes += numbers.len();
    }
    Ok(writes)
}

/// The district's last visits of each center and day equal the hub's.
async fn check_visits(hub: &HubProcess, received: &Received) -> anyhow::Result<u64> {
    let mut latest: BTreeMap<(String, String), u64> = BTreeMap::new();
    for message in received.on(&["visits"]) {
        let key = (
            message.payload["center"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            message.payload["day"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let visits = message.payload["visits"].as_u64().unwrap_or_default();
        let slot = latest.entry(key).or_default();
        *slot = (*slot).max(visits);
    }
    let mut total = 0;
    for ((center, day), visits) in &latest {
        let stored = hub
            .get_json(&format!(
                "/api/v1/centers/{center}/visits?from={day}&to={day}"
            ))
            .await?;
        assert_eq!(stored["total"].as_u64(), Some(*visits), "{center} {day}");
        total += visits;
    }
    Ok(total)
}

/// Each device's events and alarms first arrived in the order the hub
/// stored them (`received_at`): resends after a lost session come again,
/// never first.
fn assert_device_order(messages: &[UpstreamMessage]) {
    let mut seen = BTreeSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for message in messages {
        if !["event", "alarm"].contains(&message.what()) || !seen.insert(message.id().to_string()) {
            continue;
        }
        let device = message.payload["device"].as_str().unwrap_or_default();
        let at = message.payload["received_at"].as_u64().unwrap_or_default();
        let before = last.insert(device.to_string(), at).unwrap_or(0);
        assert!(
            before <= at,
            "{device}: {} arrived after a later event",
            message.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_receives_every_event_alarm_and_booking_once_across_a_failover_a_cut_and_kill_9(
) -> anyhow::Result<()> {
    let mut district = District::start().await?;
    let proxies = [
        TcpProxy::start(district.mosquitto.port).await?,
        TcpProxy::start(district.mosquitto.port).await?,
    ];
    let urls: Vec<String> = proxies.iter().map(TcpProxy::url).collect();
    let secrets = tempfile::tempdir()?;
    // Paced to 100 messages/s, so the drain lasts long enough to be cut by
    // a second kill -9.
    let paced = "max_messages_per_second = 100";
    let mut hub = HubProcess::start(uplink_hub(&urls, paced, &secrets)?).await?;
    let sim = tokio::spawn({
        let (api, port) = (hub.api.clone(), hub.mqtt_port);
        async move {
            let args = "--centers 1 --speed 600 --seed 12 --overheat-chance 0.5 \
                        --start 2027-01-04T08:00:00+08:00 --sim-duration 5h";
            run_device_sim_at(&api, port, args, Duration::from_secs(240)).await
        }
    });
    let mut bookings = Vec::new();

    // Connected through the first proxy; the simulated center is running.
    wait_metric(&hub, "yizhan_uplink_sent_total", "", |n| n >= 20.0).await?;
    bookings.extend(booking_round(&hub, "2027-01-04", "mon").await?);

    // The first broker address goes dark: the hub moves to the second.
    proxies[0].cut();
    wait_metric(
        &hub,
        "yizhan_uplink_connect_attempts_total",
        "outcome=\"connected\"",
        |n| n >= 2.0,
    )
    .await?;
    let failed_over = uplink_metric(&hub, "yizhan_uplink_connected", "").await;
    assert_eq!(failed_over, 1.0, "connected through the second address");

    // Both go dark: the outbox grows while the center goes on.
    proxies[1].cut();
    wait_metric(&hub, "yizhan_uplink_connected", "", |n| n == 0.0).await?;
    overheat_and_acknowledge(&hub).await?;
    bookings.extend(booking_round(&hub, "2027-01-06", "wed").await?);
    let peak = wait_metric(&hub, "yizhan_uplink_backlog_messages", "", |n| n >= 150.0).await?;
    let oldest = uplink_metric(&hub, "yizhan_uplink_oldest_age_seconds", "").await;

    // kill -9 while the upstream is away: the backlog is on disk.
    let before_kill = uplink_metric(&hub, "yizhan_uplink_backlog_messages", "").await;
    hub.restart().await?;
    let after_restart = uplink_metric(&hub, "yizhan_uplink_backlog_messages", "").await;
    assert!(
        after_restart > 0.0,
        "the backlog survived kill -9 ({before_kill} before, {after_restart} after)"
    );

    // The network is back: the backlog drains; kill -9 again mid-drain
    // (publishes in flight are lost with the process and sent again from
    // the outbox); the district's subscriber crashes and comes back
    // meanwhile (its broker session kept what came).
    let restored = Instant::now();
    for proxy in &proxies {
        proxy.restore();
    }
    let sent_before_kill = wait_metric(&hub, "yizhan_uplink_sent_total", "", |n| n >= 30.0).await?;
    let backlog_at_kill = uplink_metric(&hub, "yizhan_uplink_backlog_messages", "").await;
    hub.restart().await?;
    assert!(backlog_at_kill > 0.0, "the second kill came mid-drain");
    district.subscriber.reconnect().await?;
    wait_metric(&hub, "yizhan_uplink_backlog_messages", "", |n| n == 0.0).await?;
    let drain_time = restored.elapsed();
    let drained_sent = uplink_metric(&hub, "yizhan_uplink_sent_total", "").await;

    let run = sim.await??;
    bookings.extend(booking_round(&hub, "2027-01-08", "fri").await?);
    wait_metric(&hub, "yizhan_uplink_backlog_messages", "", |n| n == 0.0).await?;
    wait_metric(&hub, "yizhan_uplink_oldest_age_seconds", "", |n| n == 0.0).await?;
    assert_eq!(
        uplink_metric(&hub, "yizhan_uplink_dropped_total", "").await,
        0.0,
        "nothing dropped under the default bound"
    );

    // Every stored event (alarms included) reached the district once by id.
    let stored = stored_event_ids(&hub).await?;
    let received = eventually(WAIT, "every stored event at the district", || async {
        let received = district.subscriber.by_id();
        let ids: BTreeSet<String> = received
            .on(&["event", "alarm"])
            .iter()
            .map(|m| m.id().to_string())
            .collect();
        stored.is_subset(&ids).then_some(received)
    })
    .await?;
    let forwarded: BTreeSet<String> = received
        .on(&["event", "alarm"])
        .iter()
        .map(|m| m.id().to_string())
        .collect();
    assert_eq!(
        forwarded, stored,
        "the district has exactly the hub's events"
    );
    assert_device_order(&district.subscriber.messages());
    let alarms = received.on(&["alarm"]);
    let alarm_types: BTreeSet<&str> = alarms
        .iter()
        .filter_map(|m| m.payload["event"]["type"].as_str())
        .collect();
    assert_eq!(alarm_types, BTreeSet::from(["alarm_ack", "interlock_trip"]));
    let writes = check_bookings(&hub, &bookings, &received).await?;
    assert_eq!(bookings.len(), 12);
    let visits = check_visits(&hub, &received).await?;
    assert!(visits > 0, "the center counted visits");
    let scraped = crate::operations::check_against_catalog(&hub.metrics().await?)?;
    for family in [
        "yizhan_uplink_sent_total",
        "yizhan_uplink_connect_attempts_total",
    ] {
        assert!(scraped.contains_key(family), "{family} in the scrape");
    }
    let counts = received.counts();
    println!(
        "uplink e2e: {} events and {} alarms stored and received once by id; {writes} booking \
         writes of {} bookings; {visits} visits; {} twin changes, {} telemetry windows; \
         {} duplicate copies; backlog peak seen {peak} ({oldest:.1} s oldest), {before_kill} \
         before kill -9, {after_restart} after; drain at 100/s: {sent_before_kill} sent, \
         kill -9 with {backlog_at_kill} left, {drained_sent} sent after, {drain_time:?} in \
         all; device-sim: {}",
        forwarded.len() - alarms.len(),
        alarms.len(),
        bookings.len(),
        counts.get("twin").copied().unwrap_or(0),
        counts.get("telemetry").copied().unwrap_or(0),
        received.duplicates,
        run.truth["totals"],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_uplink_down_and_a_small_bound_telemetry_is_dropped_oldest_first_and_no_event(
) -> anyhow::Result<()> {
    const READINGS: u64 = 400;
    const EVENTS: u64 = 40;
    let district = District::start().await?;
    let proxy = TcpProxy::start(district.mosquitto.port).await?;
    proxy.cut();
    let secrets = tempfile::tempdir()?;
    let options = uplink_hub(
        &[proxy.url()],
        "max_backlog_bytes = 65536\nraw_telemetry = true",
        &secrets,
    )?;
    let hub = HubProcess::start(options).await?;
    let mut devices = Vec::new();
    for id in ["piano41", "piano42"] {
        let creds = hub
            .provision_in(id, DeviceKind::Piano, "center01", "music")
            .await?;
        devices.push(TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?);
    }
    let padding = "x".repeat(120);
    for n in 1..=READINGS {
        for device in &devices {
            let reading = telemetry(n, &[("keys", json!(n % 88)), ("note", json!(padding))]);
            device.publish(Channel::Telemetry, reading).await?;
            if n % (READINGS / EVENTS) == 0 {
                let body = json!({"keys": n % 88});
                device
                    .event(&format!("k{n}"), n, "key_activity", body)
                    .await?;
            }
        }
    }
    let raw = "channel=\"telemetry\"";
    wait_metric(&hub, "yizhan_messages_received_total", raw, |n| {
        n == (2 * READINGS) as f64
    })
    .await?;
    let stored = eventually(WAIT, "every event stored", || async {
        let stored = stored_event_ids(&hub).await.ok()?;
        (stored.len() == 2 * EVENTS as usize).then_some(stored)
    })
    .await?;
    let dropped_raw = wait_metric(
        &hub,
        "yizhan_uplink_dropped_total",
        "class=\"telemetry_raw\"",
        |n| n > 0.0,
    )
    .await?;
    let backlog = uplink_metric(&hub, "yizhan_uplink_backlog_bytes", "").await;
    assert!(backlog <= 65_536.0, "the outbox holds its bound: {backlog}");
    for class in ["event", "alarm", "twin", "booking", "visits"] {
        let dropped = uplink_metric(
            &hub,
            "yizhan_uplink_dropped_total",
            &format!("class=\"{class}\""),
        )
        .await;
        assert_eq!(dropped, 0.0, "no {class} dropped");
    }

    // The uplink comes back: every event arrives; each raw reading either
    // arrived or was counted dropped, and the dropped were the oldest.
    proxy.restore();
    wait_metric(&hub, "yizhan_uplink_backlog_messages", "", |n| n == 0.0).await?;
    let received = eventually(WAIT, "every event at the district", || async {
        let received = district.subscriber.by_id();
        let ids: BTreeSet<String> = received
            .on(&["event"])
            .iter()
            .map(|m| m.id().to_string())
            .collect();
        (ids == stored).then_some(received)
    })
    .await?;
    let dropped_raw = uplink_metric(
        &hub,
        "yizhan_uplink_dropped_total",
        "class=\"telemetry_raw\"",
    )
    .await
    .max(dropped_raw);
    // Every reading is in a window that arrived, unless windows were
    // dropped (they are telemetry too): then each device's readings in
    // the windows that arrived are fewer.
    let counted_in_windows = |device: &str| -> u64 {
        district
            .subscriber
            .by_id()
            .on(&["telemetry"])
            .iter()
            .filter(|m| m.payload["device"] == device)
            .filter_map(|m| m.payload["count"].as_u64())
            .sum()
    };
    let dropped_windows = eventually(
        WAIT,
        "every reading in a window or a window dropped",
        || async {
            let dropped =
                uplink_metric(&hub, "yizhan_uplink_dropped_total", "class=\"telemetry\"").await;
            let complete = ["piano41", "piano42"]
                .iter()
                .all(|device| counted_in_windows(device) == READINGS);
            // `+ 0.0` turns a -0 into 0 for the report below.
            (complete || dropped > 0.0).then_some(dropped + 0.0)
        },
    )
    .await?;
    let windows = district.subscriber.by_id().on(&["telemetry"]).len();
    let mut arrived_raw = 0;
    for device in ["piano41", "piano42"] {
        let counted = counted_in_windows(device);
        assert!(
            counted <= READINGS,
            "{device}: {counted} readings in windows"
        );
        if dropped_windows == 0.0 {
            assert_eq!(counted, READINGS, "{device}: every reading in a window");
        }
        let seqs: BTreeSet<u64> = received
            .on(&["raw"])
            .iter()
            .filter(|m| m.payload["device"] == device)
            .filter_map(|m| m.payload["seq"].as_u64())
            .collect();
        let first = seqs.first().copied().unwrap_or(READINGS + 1);
        let expected: BTreeSet<u64> = (first..=READINGS).collect();
        assert_eq!(
            seqs, expected,
            "{device}: the newest readings arrived, the oldest were dropped"
        );
        arrived_raw += seqs.len();
    }
    assert_eq!(
        arrived_raw as f64 + dropped_raw,
        (2 * READINGS) as f64,
        "every raw reading arrived or was counted dropped"
    );
    println!(
        "outbox bound 64 KiB: {} events all received; raw telemetry {arrived_raw} received, \
         {dropped_raw} dropped; windows {windows} received, {dropped_windows} dropped; {} \
         duplicate copies",
        stored.len(),
        received.duplicates
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtts_with_a_client_certificate_the_district_gets_the_events() -> anyhow::Result<()> {
    let pki = tempfile::tempdir()?;
    let files = TlsFiles::write(pki.path())?;
    let tls_port = free_port()?;
    let listener = format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\n",
        files.ca.display(),
        files.server_cert.display(),
        files.server_key.display()
    );
    let district = District::start_with(&listener).await?;
    let secrets = tempfile::tempdir()?;
    let tls = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
        files.ca.display().to_string(),
        files.client_cert.display().to_string(),
        files.client_key.display().to_string()
    );
    let url = format!("mqtts://localhost:{tls_port}");
    let hub = HubProcess::start(uplink_hub(&[url], &tls, &secrets)?).await?;
    let creds = hub
        .provision_in("piano51", DeviceKind::Piano, "center01", "music")
        .await?;
    let piano = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    piano
        .event("tls1", 1, "session_start", json!({"source": "walk_in"}))
        .await?;
    let id = format!("{HUB_ID}/ev/piano51/tls1");
    eventually(WAIT, "the event at the district over mqtts", || async {
        district
            .subscriber
            .by_id()
            .by_id
            .contains_key(&id)
            .then_some(())
    })
    .await?;
    let connected = uplink_metric(
        &hub,
        "yizhan_uplink_connect_attempts_total",
        "outcome=\"connected\"",
    )
    .await;
    assert_eq!(
        connected, 1.0,
        "one TLS session, with the client certificate"
    );
    Ok(())
}
