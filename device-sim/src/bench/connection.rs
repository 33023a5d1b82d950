//! One load connection: its rumqttc options (a password login, or a
//! provisioned device's own mTLS identity), and the task that drives its
//! event loop, counts what went out and came back, and times round trips.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::api::Provisioned;
use protocol::EventAck;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::latency::Latency;
use crate::mqtt::{self, Endpoint};

/// Requests a client queues before `publish` waits.
const REQUEST_CAPACITY: usize = 1_000;
/// QoS 1 messages in flight per connection.
const INFLIGHT: u16 = 100;
/// Pause after a connection error before rumqttc dials again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How a connection authenticates.
#[derive(Debug, Clone)]
pub enum Login {
    /// Plain TCP with a username and password (any broker; the hub's
    /// loopback tools listener).
    Password { username: String, password: String },
    /// A provisioned device over mTLS, as real devices connect.
    Device(Box<Provisioned>),
}

/// Where connections go.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub keepalive: Duration,
}

/// Run-wide counters, shared by every driver.
#[derive(Debug, Default)]
pub struct Counters {
    /// Telemetry messages written to sockets.
    pub sent: AtomicU64,
    /// PUBACKs of telemetry.
    pub acknowledged: AtomicU64,
    pub events_sent: AtomicU64,
    pub events_acknowledged: AtomicU64,
    /// Messages a counting subscriber received.
    pub subscriber_received: AtomicU64,
    /// Connection attempts that failed before their first CONNACK.
    pub connect_errors: AtomicU64,
    /// Connections that broke after they were up.
    pub connection_errors: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Event ids in flight and when they were published.
pub type PendingEvents = Arc<Mutex<HashMap<String, Instant>>>;

/// What a connection does besides connecting.
#[derive(Debug, Clone)]
pub enum Role {
    /// Publishes telemetry; PUBACKs are timed.
    Telemetry,
    /// Publishes events; the hub's acks on `ack_topic` are timed.
    Events {
        ack_topic: String,
        pending: PendingEvents,
    },
    /// Counts what arrives on `filter` (a plain broker's "received").
    Subscriber { filter: String, qos: QoS },
}

/// rumqttc options for one connection.
pub fn options(client_id: &str, broker: &Broker, login: &Login) -> MqttOptions {
    let mut options = match login {
        Login::Password { username, password } => {
            let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
            options
                .set_credentials(username, password)
                .set_clean_session(true);
            options
        }
        Login::Device(creds) => mqtt::options(
            creds,
            &Endpoint {
                host: broker.host.clone(),
                port: broker.port,
                keepalive: broker.keepalive,
            },
        ),
    };
    options
        .set_keep_alive(broker.keepalive)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// A connection whose event loop runs in its own task.
pub struct LoadConnection {
    pub client: AsyncClient,
    pub task: tokio::task::JoinHandle<Latency>,
    pub stop: CancellationToken,
}

impl LoadConnection {
    /// Disconnects and returns the round-trip times measured; a driver
    /// that does not finish within `timeout` is stopped.
    /// The DISCONNECT queues behind what the client still has to send.
    pub async fn close(self, timeout: Duration) -> Latency {
        let mut task = self.task;
        let goodbye = async {
            // A client whose driver already ended cannot queue it: fine.
            let _ = self.client.disconnect().await;
            (&mut task).await
        };
        match tokio::time::timeout(timeout, goodbye).await {
            Ok(joined) => joined.unwrap_or_default(),
            Err(_) => {
                self.stop.cancel();
                task.await.unwrap_or_default()
            }
        }
    }
}

/// Starts driving a connection; the receiver fires on the first CONNACK
/// (Telemetry) or SUBACK (Events, Subscriber). The task returns the
/// round-trip times it measured once the client disconnected or `stop`
/// fired.
pub fn open(
    options: MqttOptions,
    role: Role,
    counters: Arc<Counters>,
) -> (LoadConnection, oneshot::Receiver<()>) {
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    // Without TCP_NODELAY a publish can wait for the ack of the one before
    // (Nagle): that would time the client's socket, not the broker.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (ready_tx, ready) = oneshot::channel();
    let stop = CancellationToken::new();
    let driver = Driver {
        client: client.clone(),
        role,
        counters,
        ready: Some(ready_tx),
        connected_once: false,
        inflight: HashMap::new(),
        latency: Latency::default(),
    };
    let task = tokio::spawn(driver.run(eventloop, stop.clone()));
    (LoadConnection { client, task, stop }, ready)
}

struct Driver {
    client: AsyncClient,
    role: Role,
    counters: Arc<Counters>,
    ready: Option<oneshot::Sender<()>>,
    connected_once: bool,
    /// Telemetry QoS 1 packet ids in flight and when they went out.
    inflight: HashMap<u16, Instant>,
    latency: Latency,
}

impl Driver {
    async fn run(mut self, mut eventloop: EventLoop, stop: CancellationToken) -> Latency {
        loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => break,
                polled = eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(event) => self.handle(event),
                Err(ConnectionError::RequestsDone) => break,
                Err(error) => {
                    self.failed(&error);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
        self.latency
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.connected(),
            Event::Incoming(Packet::SubAck(_)) => self.signal_ready(),
            Event::Outgoing(Outgoing::Publish(pkid)) => self.published(pkid),
            Event::Incoming(Packet::PubAck(ack)) => self.acknowledged(ack.pkid),
            Event::Incoming(Packet::Publish(publish)) => self.received(&publish.payload),
            _ => {}
        }
    }

    /// Subscriptions do not survive a reconnect with a clean session: they
    /// are made again after every CONNACK. `try_subscribe`, not
    /// `subscribe`: this task is the one that empties the request queue.
    fn connected(&mut self) {
        self.connected_once = true;
        let subscription = match &self.role {
            Role::Telemetry => None,
            Role::Events { ack_topic, .. } => Some((ack_topic.clone(), QoS::AtLeastOnce)),
            Role::Subscriber { filter, qos } => Some((filter.clone(), *qos)),
        };
        match subscription {
            None => self.signal_ready(),
            Some((filter, qos)) => {
                if let Err(error) = self.client.try_subscribe(filter, qos) {
                    tracing::warn!(%error, "bench client cannot subscribe");
                }
            }
        }
    }

    fn signal_ready(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }

    fn published(&mut self, pkid: u16) {
        if let Role::Telemetry = self.role {
            Counters::bump(&self.counters.sent);
            if pkid != 0 {
                self.inflight.insert(pkid, Instant::now());
            }
        }
    }

    fn acknowledged(&mut self, pkid: u16) {
        if let Role::Telemetry = self.role {
            Counters::bump(&self.counters.acknowledged);
            if let Some(sent) = self.inflight.remove(&pkid) {
                self.latency.record(sent.elapsed());
            }
        }
    }

    fn received(&mut self, payload: &[u8]) {
        match &self.role {
            Role::Subscriber { .. } => Counters::bump(&self.counters.subscriber_received),
            Role::Events { pending, .. } => {
                let Ok(ack) = serde_json::from_slice::<EventAck>(payload) else {
                    return;
                };
                // invariant: no holder of this lock panics while holding it.
                let sent = pending.lock().expect("pending events lock").remove(&ack.id);
                if let Some(sent) = sent {
                    Counters::bump(&self.counters.events_acknowledged);
                    self.latency.record(sent.elapsed());
                }
            }
            Role::Telemetry => {}
        }
    }

    fn failed(&mut self, error: &ConnectionError) {
        // rumqttc resends a broken connection's in-flight messages after
        // the reconnect: their round trip would time the outage, not the
        // broker, so they are not timed.
        self.inflight.clear();
        if self.connected_once {
            Counters::bump(&self.counters.connection_errors);
            tracing::warn!(%error, "bench connection broke; reconnecting");
        } else {
            Counters::bump(&self.counters.connect_errors);
            tracing::debug!(%error, "bench connect failed; retrying");
        }
    }
}
