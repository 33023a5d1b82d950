//! Reaction latency of a real hub process with real mTLS rumqttc devices:
//!
//! 1. **gate**: G gates send `access_request` events at a fixed total rate
//!    (default 1,000/s) for S seconds; latency = from handing the request to
//!    the gate's MQTT client to the gate receiving its `open`/`deny`
//!    (device-observed), plus the hub's own `yizhan_access_decision_seconds`
//!    (arrival at ingest → command published).
//! 2. **interlock**: one robot reports an over-limit `temp_c`; latency = until
//!    it receives `stop` (device-observed) and the hub's
//!    `yizhan_interlock_reaction_seconds`; staff acknowledge between trips.
//!    Measured alone and while the gates run at the same rate.
//! 3. **command**: a command issued through the API; API call → device
//!    (device-observed) and the hub's publish → ack round trip.
//!
//! As a peer, the same gate load is sent to mosquitto with a trivial echo
//! responder (one subscriber answering every request): the cost of an MQTT
//! request/answer without any hub logic.
//!
//! Clients leave Nagle on (as most device stacks do) unless the last
//! argument `nodelay` is 1: then every client, of the hub and of mosquitto,
//! sets TCP_NODELAY.
//!
//! `cargo bench -p hub --bench actions -- [gates] [rate] [seconds] [runs] [trips] [nodelay]`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use protocol::{Channel, DeviceKind};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Value};
use tests::{
    eventually, now_ms, sum_metric, telemetry, DeviceEvent, DeviceOptions, HubOptions, HubProcess,
    TestDevice,
};
use tokio::sync::mpsc;

use tests::Mosquitto as MosquittoProcess;

#[derive(Clone, Copy)]
struct Settings {
    gates: usize,
    rate: u64,
    window: Duration,
    runs: usize,
    trips: usize,
    nodelay: bool,
}

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let settings = Settings {
        gates: *args.first().unwrap_or(&10) as usize,
        rate: *args.get(1).unwrap_or(&1_000),
        window: Duration::from_secs(*args.get(2).unwrap_or(&10)),
        runs: *args.get(3).unwrap_or(&3) as usize,
        trips: *args.get(4).unwrap_or(&200) as usize,
        nodelay: args.get(5).is_some_and(|n| *n == 1),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(settings))
}

/// Latencies of one run.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn quantile(&mut self, q: f64) -> Duration {
        self.0.sort();
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[index]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Per-run p50/p99 (ms) of one measurement, printed and kept for medians.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<f64>)>,
}

impl Table {
    fn add(&mut self, name: &str, value: f64) {
        match self.rows.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value),
            None => self.rows.push((name.to_string(), vec![value])),
        }
    }

    fn print_medians(&self) {
        println!("\nmedians over runs:");
        for (name, values) in &self.rows {
            let runs: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
            println!(
                "  {name:<48} {:>8.2}   (runs: {})",
                median(values.clone()),
                runs.join(", ")
            );
        }
    }
}

async fn bench(settings: Settings) -> Result<()> {
    let hub = HubProcess::start(HubOptions {
        // 100 requests/s per gate is a load test, above a real gate's
        // rate limit: the limit is lifted, as the peer benchmark does.
        extra_config: "[[rooms]]\ncenter = \"bench\"\nid = \"gym\"\ncapacity = 100000\n\
                       hours = \"24h\"\n[broker.limits]\nmessages_per_second = 0\n"
            .into(),
        ..HubOptions::default()
    })
    .await?;
    let (status, body) = hub
        .post_json(
            "/api/v1/residents",
            &json!({"id":"r1","credential":"bench-credential"}),
        )
        .await?;
    anyhow::ensure!(status == 201, "resident: {status} {body}");
    let options = DeviceOptions {
        tcp_nodelay: settings.nodelay,
        ..DeviceOptions::default()
    };
    let port = hub.mqtt_port;
    let mut gates = Vec::new();
    for n in 0..settings.gates {
        let creds = hub
            .provision_in(&format!("gate{n}"), DeviceKind::Gate, "bench", "gym")
            .await?;
        gates.push(Gate::start(
            TestDevice::online_with(&creds, port, DeviceKind::Gate, options.clone()).await?,
        ));
    }
    let robot_creds = hub
        .provision_in("robot0", DeviceKind::TherapyRobot, "bench", "therapy")
        .await?;
    let mut robot = TestDevice::online_with(
        &robot_creds,
        port,
        DeviceKind::TherapyRobot,
        options.clone(),
    )
    .await?;
    let piano_creds = hub
        .provision_in("piano0", DeviceKind::Piano, "bench", "music")
        .await?;
    let mut piano = TestDevice::online_with(&piano_creds, port, DeviceKind::Piano, options).await?;
    let mosquitto = Mosquitto::start(settings.nodelay)?;
    let mut peers = Vec::new();
    for n in 0..settings.gates {
        peers.push(Gate::start_peer(mosquitto.port, n, settings.nodelay).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut table = Table::default();
    let mut robot_seq = 0;
    for run in 1..=settings.runs {
        println!("run {run}");
        let before = hub.metrics().await?;
        let mut gate = load(&gates, settings).await?;
        let after = hub.metrics().await?;
        let hub_p99 = bucket_quantile(&before, &after, "yizhan_access_decision_seconds", 0.99);
        let denied = sum_metric(&after, "yizhan_access_decisions_total", "outcome=\"deny\"")
            - sum_metric(&before, "yizhan_access_decisions_total", "outcome=\"deny\"");
        println!(
            "  gate: {} answered (lost {}, denied {denied}), p50 {:.2} ms, p99 {:.2} ms; hub p99 <= {:.1} ms",
            gate.answered, gate.lost, ms(gate.samples.quantile(0.5)), ms(gate.samples.quantile(0.99)), hub_p99 * 1e3
        );
        table.add(
            "gate device-observed p50 ms",
            ms(gate.samples.quantile(0.5)),
        );
        table.add(
            "gate device-observed p99 ms",
            ms(gate.samples.quantile(0.99)),
        );
        table.add("gate hub p99 (bucket upper edge) ms", hub_p99 * 1e3);

        let mut peer = load(&peers, settings).await?;
        println!(
            "  mosquitto echo: {} answered (lost {}), p50 {:.2} ms, p99 {:.2} ms",
            peer.answered,
            peer.lost,
            ms(peer.samples.quantile(0.5)),
            ms(peer.samples.quantile(0.99))
        );
        table.add("mosquitto echo p50 ms", ms(peer.samples.quantile(0.5)));
        table.add("mosquitto echo p99 ms", ms(peer.samples.quantile(0.99)));

        for (label, busy) in [("idle", false), ("gates busy", true)] {
            let before = hub.metrics().await?;
            let background = busy.then(|| {
                let gates: Vec<Gate> = gates.iter().map(Gate::handle).collect();
                tokio::spawn(async move { load(&gates, settings).await })
            });
            let mut trips = interlock(&hub, &mut robot, &mut robot_seq, settings.trips).await?;
            if let Some(task) = background {
                task.await??;
            }
            let after = hub.metrics().await?;
            let hub_p99 =
                bucket_quantile(&before, &after, "yizhan_interlock_reaction_seconds", 0.99);
            println!(
                "  interlock ({label}): {} trips, stop at device p50 {:.2} ms, p99 {:.2} ms; hub p99 <= {:.1} ms",
                trips.0.len(), ms(trips.quantile(0.5)), ms(trips.quantile(0.99)), hub_p99 * 1e3
            );
            table.add(
                &format!("interlock {label} device-observed p50 ms"),
                ms(trips.quantile(0.5)),
            );
            table.add(
                &format!("interlock {label} device-observed p99 ms"),
                ms(trips.quantile(0.99)),
            );
            table.add(
                &format!("interlock {label} hub p99 (bucket edge) ms"),
                hub_p99 * 1e3,
            );
        }

        let before = hub.metrics().await?;
        let mut delivered = commands(&hub, &mut piano, settings.trips).await?;
        let after = hub.metrics().await?;
        let rtt_p99 = bucket_quantile(&before, &after, "yizhan_command_round_trip_seconds", 0.99);
        let rtt_mean = mean(&before, &after, "yizhan_command_round_trip_seconds");
        println!(
            "  command: API call -> device p50 {:.2} ms, p99 {:.2} ms; hub publish -> ack mean {:.2} ms, p99 <= {:.1} ms",
            ms(delivered.quantile(0.5)), ms(delivered.quantile(0.99)), rtt_mean * 1e3, rtt_p99 * 1e3
        );
        table.add("command API->device p50 ms", ms(delivered.quantile(0.5)));
        table.add("command API->device p99 ms", ms(delivered.quantile(0.99)));
        table.add("command hub publish->ack mean ms", rtt_mean * 1e3);
    }
    table.print_medians();
    drop(mosquitto);
    Ok(())
}

/// One gate (of the hub, or a peer client of mosquitto): publishes
/// requests, and a task matches answers to them.
struct Gate {
    client: AsyncClient,
    topic: String,
    /// Request id → when it was handed to the client.
    waiting: Arc<Mutex<HashMap<String, Instant>>>,
    /// Latencies of answered requests.
    answered: Arc<Mutex<Vec<Duration>>>,
    seq: Arc<std::sync::atomic::AtomicU64>,
    name: String,
}

impl Gate {
    fn start(mut device: TestDevice) -> Gate {
        let (_, empty) = mpsc::unbounded_channel();
        let events = std::mem::replace(&mut device.events, empty);
        let gate = Gate {
            client: device.client.clone(),
            topic: device.topic(Channel::Event),
            waiting: Arc::default(),
            answered: Arc::default(),
            seq: Arc::default(),
            name: device.id.clone(),
        };
        let cmd_topic = device.topic(Channel::Cmd);
        tokio::spawn(answers(events, cmd_topic, gate.handle(), Some(device)));
        gate
    }

    /// A gate client of mosquitto; a responder answers on its `cmd` topic.
    async fn start_peer(port: u16, n: usize, nodelay: bool) -> Result<Gate> {
        let name = format!("peer{n}");
        let mut options = MqttOptions::new(name.clone(), "127.0.0.1", port);
        options.set_credentials(PEER_USER, PEER_PASSWORD);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        eventloop.set_network_options(network(nodelay));
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(pump(eventloop, tx));
        let cmd_topic = format!("/tenants/{name}/cmd");
        client.subscribe(&cmd_topic, QoS::AtLeastOnce).await?;
        let gate = Gate {
            client,
            topic: format!("/tenants/{name}/event"),
            waiting: Arc::default(),
            answered: Arc::default(),
            seq: Arc::default(),
            name,
        };
        tokio::spawn(answers(events, cmd_topic, gate.handle(), None));
        Ok(gate)
    }

    fn handle(&self) -> Gate {
        Gate {
            client: self.client.clone(),
            topic: self.topic.clone(),
            waiting: self.waiting.clone(),
            answered: self.answered.clone(),
            seq: self.seq.clone(),
            name: self.name.clone(),
        }
    }

    async fn request(&self) -> Result<()> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let id = format!("{}-{seq}", self.name);
        let payload = json!({"id": id, "ts": now_ms(), "seq": seq, "type": "access_request", "credential": "bench-credential"});
        self.waiting
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, Instant::now());
        self.client
            .publish(
                &self.topic,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&payload)?,
            )
            .await?;
        Ok(())
    }
}

fn network(nodelay: bool) -> rumqttc::NetworkOptions {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(nodelay);
    network
}

async fn pump(mut eventloop: rumqttc::EventLoop, tx: mpsc::UnboundedSender<DeviceEvent>) {
    while let Ok(event) = eventloop.poll().await {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
            let message = DeviceEvent::Message {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
            };
            if tx.send(message).is_err() {
                return;
            }
        }
    }
}

/// Matches answers (commands carrying `args.request`) to requests; a hub
/// gate acknowledges each command as a real gate does.
async fn answers(
    mut events: mpsc::UnboundedReceiver<DeviceEvent>,
    cmd_topic: String,
    gate: Gate,
    device: Option<TestDevice>,
) {
    while let Some(event) = events.recv().await {
        let DeviceEvent::Message { topic, payload } = event else {
            continue;
        };
        if topic != cmd_topic {
            continue;
        }
        let now = Instant::now();
        let Ok(command) = serde_json::from_slice::<protocol::Command>(&payload) else {
            continue;
        };
        let request = command.args["request"].as_str().unwrap_or_default();
        let sent = gate.waiting.lock().ok().and_then(|mut w| w.remove(request));
        if let (Some(sent), Ok(mut answered)) = (sent, gate.answered.lock()) {
            answered.push(now - sent);
        }
        if let Some(device) = &device {
            let _ = device.ack(&command.id, true, None).await;
        }
    }
}

struct Load {
    answered: usize,
    lost: usize,
    samples: Samples,
}

/// Runs every gate at `rate / gates` requests per second for the window,
/// then waits up to 2 s for the last answers.
async fn load(gates: &[Gate], settings: Settings) -> Result<Load> {
    for gate in gates {
        gate.answered
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clear();
        gate.waiting
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clear();
    }
    let period = Duration::from_secs_f64(gates.len() as f64 / settings.rate as f64);
    let mut tasks = Vec::new();
    for gate in gates {
        let gate = gate.handle();
        let window = settings.window;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = Instant::now() + window;
            while Instant::now() < end {
                tick.tick().await;
                gate.request().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && gates
            .iter()
            .any(|g| g.waiting.lock().is_ok_and(|w| !w.is_empty()))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Samples::default();
    let mut lost = 0;
    for gate in gates {
        samples.0.extend(
            gate.answered
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .iter(),
        );
        lost += gate
            .waiting
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .len();
    }
    Ok(Load {
        answered: samples.0.len(),
        lost,
        samples,
    })
}

/// `trips` over-limit readings, one at a time: each waits for the stop,
/// acknowledges it and the alarm, and waits for the twin to clear.
async fn interlock(
    hub: &HubProcess,
    robot: &mut TestDevice,
    seq: &mut u64,
    trips: usize,
) -> Result<Samples> {
    let mut samples = Samples::default();
    let cmd_topic = robot.topic(Channel::Cmd);
    for _ in 0..trips {
        *seq += 1;
        let payload = telemetry(*seq, &[("temp_c", json!(48.0)), ("heating", json!(true))]);
        let sent = Instant::now();
        robot.publish(Channel::Telemetry, payload).await?;
        let stop: protocol::Command =
            serde_json::from_slice(&robot.message_on(&cmd_topic, Duration::from_secs(5)).await?)?;
        samples.0.push(sent.elapsed());
        robot.ack(&stop.id, true, None).await?;
        acknowledge_alarm(hub, &robot.id).await?;
    }
    Ok(samples)
}

async fn acknowledge_alarm(hub: &HubProcess, device: &str) -> Result<()> {
    let path = format!("/api/v1/devices/{device}/alarm/ack");
    eventually(Duration::from_secs(5), "alarm on the twin", || async {
        let twin = hub.twin(device).await.ok()?;
        (!twin["alarm"].is_null()).then_some(())
    })
    .await?;
    let (status, body) = hub.post_json(&path, &Value::Null).await?;
    anyhow::ensure!(status == 202, "alarm ack: {status} {body}");
    eventually(Duration::from_secs(5), "alarm cleared", || async {
        let twin = hub.twin(device).await.ok()?;
        twin["alarm"].is_null().then_some(())
    })
    .await
}

/// `count` commands through the API, one at a time; each is acknowledged.
async fn commands(hub: &HubProcess, piano: &mut TestDevice, count: usize) -> Result<Samples> {
    // The piano was silent through the other phases: longer than 1.5x its
    // keepalive, so the hub holds it offline until it speaks (contract v1).
    piano.publish(Channel::Status, "online").await?;
    eventually(Duration::from_secs(5), "piano online", || async {
        let twin = hub.twin(&piano.id).await.ok()?;
        (twin["online"] == json!(true)).then_some(())
    })
    .await?;
    let mut samples = Samples::default();
    let cmd_topic = piano.topic(Channel::Cmd);
    let path = format!("/api/v1/devices/{}/commands", piano.id);
    for _ in 0..count {
        let sent = Instant::now();
        let (status, body) = hub
            .post_json(&path, &json!({"op":"unlock","expires_in_ms":10_000}))
            .await?;
        anyhow::ensure!(status == 202, "command: {status} {body}");
        let command: protocol::Command =
            serde_json::from_slice(&piano.message_on(&cmd_topic, Duration::from_secs(5)).await?)?;
        samples.0.push(sent.elapsed());
        piano.ack(&command.id, true, None).await?;
    }
    Ok(samples)
}

/// Cumulative bucket counts of a histogram: `(le, count)`.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Upper edge of the bucket holding quantile `q` of what was observed
/// between two scrapes (labels summed).
fn bucket_quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let mut edges: Vec<(f64, f64)> = Vec::new();
    for (le, count) in buckets(after, name) {
        match edges.iter_mut().find(|(e, _)| *e == le) {
            Some((_, c)) => *c += count,
            None => edges.push((le, count)),
        }
    }
    for (le, count) in buckets(before, name) {
        if let Some((_, c)) = edges.iter_mut().find(|(e, _)| *e == le) {
            *c -= count;
        }
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = edges.last().map_or(0.0, |e| e.1);
    edges
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::NAN, |e| e.0)
}

fn mean(before: &str, after: &str, name: &str) -> f64 {
    let delta = |suffix: &str| {
        let family = format!("{name}_{suffix}");
        sum_metric(after, &family, "") - sum_metric(before, &family, "")
    };
    delta("sum") / delta("count")
}

/// mosquitto from the Debian package on a free loopback port, with an echo
/// responder: every `/tenants/X/event` is answered on `/tenants/X/cmd` with
/// the request id in `args.request`.
/// The peer mosquitto's one user.
const PEER_USER: &str = "bench";
const PEER_PASSWORD: &str = "bench-password";

struct Mosquitto {
    port: u16,
    _process: MosquittoProcess,
}

impl Mosquitto {
    fn start(nodelay: bool) -> Result<Mosquitto> {
        let process = MosquittoProcess::start_with(
            PEER_USER,
            PEER_PASSWORD,
            &format!("set_tcp_nodelay {nodelay}"),
        )?;
        let port = process.port;
        let mut options = MqttOptions::new("echo", "127.0.0.1", port);
        options.set_credentials(PEER_USER, PEER_PASSWORD);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        eventloop.set_network_options(network(nodelay));
        tokio::spawn(async move {
            let _ = client.subscribe("/tenants/+/event", QoS::AtLeastOnce).await;
            while let Ok(event) = eventloop.poll().await {
                let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event else {
                    continue;
                };
                let Ok(request) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let reply = json!({"id": "x", "op": "open", "args": {"request": request["id"]}, "expires_at": 0});
                let topic = p.topic.replace("/event", "/cmd");
                let payload = serde_json::to_vec(&reply).unwrap_or_default();
                // try_publish: the event loop is this task; awaiting would deadlock.
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
            }
        });
        Ok(Mosquitto {
            port,
            _process: process,
        })
    }
}
