//! The crash loop (issue 13, item 10): mixed load — a piano's telemetry
//! and events, a gate's access requests and the decisions it acts on,
//! bookings and cancellations through the API, commands to the piano —
//! while the hub is killed with SIGKILL at 20 random moments and started
//! again on the same data dir each time. Every start must open sled and
//! come up ready; at the end nothing acknowledged is missing: every event
//! a device got an ack for is stored exactly once, every answered booking
//! and cancellation holds, every command outcome once read is still
//! there, no slot holds more bookings than its capacity, and each twin's
//! fields belong to the reading its `last_telemetry_seq` names and end at
//! the device's last one. The counts are printed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{Channel, DeviceKind};
use rand::Rng;
use rumqttc::QoS;
use serde_json::{json, Value};
use tests::*;

const KILLS: usize = 20;
/// Events a device has out without an ack at most.
const WINDOW: usize = 40;
const CAPACITY: usize = 10;
/// The spin class's slots booked (Monday 2027-01-04, hourly).
const SLOTS: [&str; 8] = [
    "09:00", "10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00",
];
const GATE_RESIDENTS: [&str; 4] = ["g0", "g1", "g2", "g3"];
const CONFIG: &str = include_str!("../fixtures/schedule.toml");

fn monday(hhmm: &str) -> String {
    format!("2027-01-04T{hhmm}:00+08:00")
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one device sent and what the hub acknowledged to it.
#[derive(Default)]
struct DeviceLedger {
    events_sent: usize,
    unacked: BTreeMap<String, Vec<u8>>,
    acked: BTreeSet<String>,
    last_reading: u64,
    readings_sent: u64,
    commands_received: usize,
}

/// What the API answered.
#[derive(Default)]
struct ApiLedger {
    /// Booking id → its slot, answered 201.
    booked: HashMap<String, String>,
    /// Cancellations answered 200.
    cancelled: BTreeSet<String>,
    /// Cancellations sent without an answer (the hub was killed): either
    /// status holds.
    cancel_unanswered: BTreeSet<String>,
    refused_full: usize,
    unanswered: usize,
    /// Commands answered 202.
    commands_issued: BTreeSet<String>,
    /// Commands whose record was read as acked.
    commands_acked: BTreeSet<String>,
}

/// A device that keeps sending until `stop`, then until every event is
/// acknowledged; it answers every command it gets with an ack.
async fn run_device(
    mut device: TestDevice,
    kind: DeviceKind,
    event: impl Fn(u64) -> (String, Value),
    ledger: Arc<Mutex<DeviceLedger>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let event_topic = device.topic(Channel::Event);
    let telemetry_topic = device.topic(Channel::Telemetry);
    let ack_topic = device.topic(Channel::EventAck);
    let cmd_topic = device.topic(Channel::Cmd);
    let mut seq = 0u64;
    let mut last_resend = Instant::now();
    // An event and a reading every 10 ms at most.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let mut drain_deadline = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let deadline = *drain_deadline.get_or_insert(Instant::now() + Duration::from_secs(60));
            let left = locked(&ledger).unacked.len();
            if left == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {left} events never acknowledged",
                device.id
            );
        } else if locked(&ledger).unacked.len() < WINDOW && pace_due(&mut pace) {
            seq += 1;
            let (event_type, body) = event(seq);
            let id = format!("e{seq}");
            let mut payload = body;
            payload["id"] = json!(id);
            payload["ts"] = json!(now_ms());
            payload["seq"] = json!(seq);
            payload["type"] = json!(event_type);
            let payload = serde_json::to_vec(&payload)?;
            let sent =
                device
                    .client
                    .try_publish(&event_topic, QoS::AtLeastOnce, false, payload.clone());
            if sent.is_ok() {
                let mut ledger = locked(&ledger);
                ledger.events_sent += 1;
                ledger.unacked.insert(id, payload);
            }
            seq += 1;
            let reading = telemetry(seq, &[("reading", json!(seq))]);
            if device
                .client
                .try_publish(&telemetry_topic, QoS::AtLeastOnce, false, reading)
                .is_ok()
            {
                let mut ledger = locked(&ledger);
                ledger.last_reading = seq;
                ledger.readings_sent += 1;
            }
        }
        match tokio::time::timeout(Duration::from_millis(10), device.events.recv()).await {
            Ok(Some(DeviceEvent::Message { topic, payload })) if topic == ack_topic => {
                let ack: protocol::EventAck = serde_json::from_slice(&payload)?;
                let mut ledger = locked(&ledger);
                if ledger.unacked.remove(&ack.id).is_some() {
                    ledger.acked.insert(ack.id);
                }
            }
            Ok(Some(DeviceEvent::Message { topic, payload })) if topic == cmd_topic => {
                let command: protocol::Command = serde_json::from_slice(&payload)?;
                locked(&ledger).commands_received += 1;
                // Lost with the connection: the hub sends it again.
                let _ = device.ack(&command.id, true, None).await;
            }
            Ok(Some(DeviceEvent::Connected)) => {
                device.hello(kind, 30).await?;
                resend(&device, &event_topic, &ledger);
                last_resend = Instant::now();
            }
            Ok(None) => anyhow::bail!("{}: the event loop ended", device.id),
            _ => {}
        }
        if last_resend.elapsed() > Duration::from_secs(2) {
            resend(&device, &event_topic, &ledger);
            last_resend = Instant::now();
        }
    }
}

/// Whether the pace allows the next message now.
fn pace_due(pace: &mut tokio::time::Interval) -> bool {
    use futures_util::FutureExt;
    pace.tick().now_or_never().is_some()
}

fn resend(device: &TestDevice, topic: &str, ledger: &Mutex<DeviceLedger>) {
    for payload in locked(ledger).unacked.values() {
        let _ = device
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.clone());
    }
}

/// Books the spin class for new residents at random slots, cancels one
/// booking in five, until `stop`.
async fn run_bookings(api: HubApi, ledger: Arc<Mutex<ApiLedger>>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let slot = SLOTS[rand::thread_rng().gen_range(0..SLOTS.len())];
        let body = json!({"resource": "spin", "slot_start": monday(slot), "resident": format!("r{n}"), "group": "adult"});
        let answer = api.post_json("/api/v1/bookings", &body).await;
        let cancel = {
            let mut answered = locked(&ledger);
            match answer {
                Ok((201, booking)) => {
                    let id = booking["id"].as_str().unwrap_or_default().to_owned();
                    answered.booked.insert(id, slot.to_owned());
                }
                Ok((409, _)) => answered.refused_full += 1,
                _ => answered.unanswered += 1,
            }
            n.is_multiple_of(5)
                .then(|| {
                    let open = |id: &&String| {
                        !answered.cancelled.contains(*id)
                            && !answered.cancel_unanswered.contains(*id)
                    };
                    answered.booked.keys().find(open).cloned()
                })
                .flatten()
        };
        if let Some(id) = cancel {
            let answer = api.delete(&format!("/api/v1/bookings/{id}")).send().await;
            let mut answered = locked(&ledger);
            match answer {
                Ok(answer) if answer.status() == 200 => answered.cancelled.insert(id),
                Ok(_) => false,
                Err(_) => answered.cancel_unanswered.insert(id),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the piano commands and reads their records until `stop`.
async fn run_commands(api: HubApi, ledger: Arc<Mutex<ApiLedger>>, stop: Arc<AtomicBool>) {
    let body = json!({"op": "unlock", "args": {}, "expires_in_ms": 600_000});
    while !stop.load(Ordering::Relaxed) {
        if let Ok((202, record)) = api
            .post_json("/api/v1/devices/piano1/commands", &body)
            .await
        {
            let id = record["id"].as_str().unwrap_or_default().to_owned();
            locked(&ledger).commands_issued.insert(id);
        }
        let open: Vec<String> = {
            let ledger = locked(&ledger);
            (ledger.commands_issued.difference(&ledger.commands_acked))
                .cloned()
                .collect()
        };
        for id in open {
            let record = api
                .get_json(&format!("/api/v1/devices/piano1/commands/{id}"))
                .await;
            if record.is_ok_and(|r| r["status"] == "acked") {
                locked(&ledger).commands_acked.insert(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9s_under_mixed_load_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let _heavy = heavy();
    let mut hub = HubProcess::start(HubOptions {
        extra_config: format!("{CONFIG}\n[broker.limits]\nmessages_per_second = 0\n"),
        ..HubOptions::default()
    })
    .await?;
    for resident in GATE_RESIDENTS {
        let body = json!({"id": resident, "credential": format!("qr-{resident}")});
        let (status, answer) = hub.post_json("/api/v1/residents", &body).await?;
        anyhow::ensure!(status == 201, "{answer}");
    }
    let piano_creds = hub
        .provision_in("piano1", DeviceKind::Piano, "c1", "music")
        .await?;
    let gate_creds = hub
        .provision_in("gate1", DeviceKind::Gate, "c1", "spin")
        .await?;
    let piano = TestDevice::online(&piano_creds, hub.mqtt_port, DeviceKind::Piano).await?;
    let gate = TestDevice::online(&gate_creds, hub.mqtt_port, DeviceKind::Gate).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let piano_ledger = Arc::new(Mutex::new(DeviceLedger::default()));
    let gate_ledger = Arc::new(Mutex::new(DeviceLedger::default()));
    let api_ledger = Arc::new(Mutex::new(ApiLedger::default()));
    let piano_task = tokio::spawn(run_device(
        piano,
        DeviceKind::Piano,
        |n| ("key_activity".into(), json!({"keys": n % 88})),
        piano_ledger.clone(),
        stop.clone(),
    ));
    let gate_task = tokio::spawn(run_device(
        gate,
        DeviceKind::Gate,
        |n| {
            let who = GATE_RESIDENTS[n as usize % GATE_RESIDENTS.len()];
            (
                "access_request".into(),
                json!({"credential": format!("qr-{who}")}),
            )
        },
        gate_ledger.clone(),
        stop.clone(),
    ));
    let booking_task = tokio::spawn(run_bookings(
        hub.api_client(),
        api_ledger.clone(),
        stop.clone(),
    ));
    let command_task = tokio::spawn(run_commands(
        hub.api_client(),
        api_ledger.clone(),
        stop.clone(),
    ));

    let mut restarts = Vec::new();
    for kill in 1..=KILLS {
        let moment = Duration::from_millis(rand::thread_rng().gen_range(200..1500));
        tokio::time::sleep(moment).await;
        let started = Instant::now();
        hub.restart()
            .await
            .map_err(|error| error.context(format!("start after kill {kill}")))?;
        restarts.push(started.elapsed());
        check_twin_is_one_reading(&hub).await?;
        bookings(&hub).await?;
    }
    // Some load after the last start, then every task ends (the devices
    // once their events are acknowledged).
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    piano_task.await??;
    gate_task.await??;
    booking_task.await?;
    command_task.await?;

    let piano = check_device(&hub, "piano1", &piano_ledger).await?;
    let gate = check_device(&hub, "gate1", &gate_ledger).await?;
    let twin = eventually(
        Duration::from_secs(10),
        "the piano's last reading",
        || async {
            let twin = hub.twin("piano1").await.ok()?;
            (twin["last_telemetry_seq"] == json!(locked(&piano_ledger).last_reading))
                .then_some(twin)
        },
    )
    .await?;
    check_twin_is_one_reading(&hub).await?;
    let api = check_api(&hub, &api_ledger).await?;
    let slowest = restarts.iter().max().copied().unwrap_or_default();
    println!(
        "crash loop: {KILLS} kill -9s, every start ready (slowest {slowest:?}); piano: {piano}; \
         gate: {gate}; {api}; piano twin at reading {}",
        twin["last_telemetry_seq"]
    );
    Ok(())
}

/// The piano's twin holds one reading: its `reading` field is the value
/// sent with the seq it names (never fields of one message and the seq of
/// another).
async fn check_twin_is_one_reading(hub: &HubProcess) -> anyhow::Result<()> {
    let twin = hub.twin("piano1").await?;
    if let Some(seq) = twin["last_telemetry_seq"].as_u64() {
        let reading = &twin["fields"]["reading"]["value"];
        anyhow::ensure!(
            reading.as_f64() == Some(seq as f64),
            "the twin names reading {seq} but holds {reading}: {twin}"
        );
    }
    Ok(())
}

/// Every acknowledged event of `device` is stored, none twice.
async fn check_device(
    hub: &HubProcess,
    device: &str,
    ledger: &Mutex<DeviceLedger>,
) -> anyhow::Result<String> {
    let events = hub
        .list_all(&format!("/api/v1/devices/{device}/events"), "events")
        .await?;
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event"]["id"].as_str())
        .collect();
    let stored: BTreeSet<&str> = ids.iter().copied().collect();
    anyhow::ensure!(stored.len() == ids.len(), "{device}: an event stored twice");
    let ledger = locked(ledger);
    let missing: Vec<&String> = ledger
        .acked
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{device}: {} acknowledged, not stored (of {} stored), the first: {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(10)]
    );
    Ok(format!(
        "{} events sent, {} acknowledged, {} stored, {} readings, {} commands received",
        ledger.events_sent,
        ledger.acked.len(),
        stored.len(),
        ledger.readings_sent,
        ledger.commands_received
    ))
}

/// Every answered booking and cancellation holds, no slot is over its
/// capacity, every command outcome read stays.
async fn check_api(hub: &HubProcess, ledger: &Mutex<ApiLedger>) -> anyhow::Result<String> {
    let (status_of, fullest) = bookings(hub).await?;
    let (summary, issued, read_acked) = {
        let ledger = locked(ledger);
        for (id, slot) in &ledger.booked {
            let want = if ledger.cancelled.contains(id) {
                "cancelled"
            } else {
                "booked"
            };
            let status = status_of.get(id).map(String::as_str);
            let unknown = ledger.cancel_unanswered.contains(id) && status == Some("cancelled");
            anyhow::ensure!(
                status == Some(want) || unknown,
                "booking {id} at {slot} answered, now {status:?}, want {want}"
            );
        }
        let (issued, read_acked) = (
            ledger.commands_issued.clone(),
            ledger.commands_acked.clone(),
        );
        let summary = format!(
            "bookings: {} answered 201 ({} cancelled, {} cancels unanswered), {} refused full, {} unanswered, fullest slot {fullest}/{CAPACITY}; \
             commands: {} issued, {} read acked",
            ledger.booked.len(),
            ledger.cancelled.len(),
            ledger.cancel_unanswered.len(),
            ledger.refused_full,
            ledger.unanswered,
            issued.len(),
            read_acked.len()
        );
        (summary, issued, read_acked)
    };
    for id in &issued {
        let record = hub
            .get_json(&format!("/api/v1/devices/piano1/commands/{id}"))
            .await?;
        if read_acked.contains(id) {
            anyhow::ensure!(record["status"] == "acked", "command {id}: {record}");
        }
    }
    Ok(summary)
}

/// The spin class's bookings by id (their status), checking that no slot
/// holds more than its capacity; the fullest slot's count.
async fn bookings(hub: &HubProcess) -> anyhow::Result<(HashMap<String, String>, usize)> {
    let listed = hub
        .list_all(
            "/api/v1/bookings?resource=spin&from=2027-01-04&to=2027-01-05",
            "bookings",
        )
        .await?;
    let mut per_slot: HashMap<String, usize> = HashMap::new();
    let mut status_of: HashMap<String, String> = HashMap::new();
    for booking in &listed {
        let id = booking["id"].as_str().unwrap_or_default().to_owned();
        let status = booking["status"].as_str().unwrap_or_default().to_owned();
        if status == "booked" || status == "checked_in" {
            let slot = booking["slot_start"].to_string();
            *per_slot.entry(slot).or_default() += 1;
        }
        status_of.insert(id, status);
    }
    let fullest = per_slot.values().max().copied().unwrap_or(0);
    anyhow::ensure!(
        fullest <= CAPACITY,
        "a slot holds {fullest} bookings: {per_slot:?}"
    );
    Ok((status_of, fullest))
}
