//! `device-sim bench`, the load mode: N MQTT connections publish contract
//! v1 telemetry at full speed or a fixed rate, QoS 0 or 1, for a duration
//! or a count, against the hub or any MQTT broker; the run reports what
//! was sent, acknowledged and received, with round-trip percentiles.
//!
//! With the hub (`HubAccess`), the telemetry devices are provisioned
//! through its API, "received" is what its metrics say was ingested into
//! twins, and one extra connection times event → event-ack round trips.
//! With any other broker, one subscriber on the telemetry filter counts.
//!
//! Parts: `connection` (one client's driver), `connect` (opening many,
//! paced), `load` (what is published), `latency`, `received`, `report`,
//! `progress`; `peer` runs the same loads at the hub and mosquitto.

pub mod connect;
pub mod connection;
pub mod latency;
pub mod load;
pub mod peer;
pub mod processes;
pub mod progress;
pub mod received;
pub mod report;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::api::Provisioned;
use protocol::topic::for_device;
use protocol::{is_valid_device_id, Channel, DeviceKind};
use rumqttc::QoS;
use tokio_util::sync::CancellationToken;

use connect::{connect_all, ConnectReport, Pacing};
use connection::{Broker, Counters, LoadConnection, Login, PendingEvents, Role};
use latency::Latency;
use load::{Load, Publisher, Stop};
use received::{HubMetrics, MetricsError, Receiver};
pub use report::BenchReport;

use crate::plan::DeviceSpec;
use crate::provision::{ProvisionError, Provisioner};
use crate::store::CredentialStore;

/// Provisioning requests in flight at once.
const PROVISION_CONCURRENCY: usize = 16;
/// How long the end of a run waits for outstanding acknowledgements.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long a connection may take to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the load connections log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Plain TCP, one username and password for all (any broker; the
    /// hub's loopback tools listener).
    Password { username: String, password: String },
    /// Each connection is a provisioned device over mTLS (hub only).
    Devices,
}

/// The hub's API, for provisioning and metrics.
#[derive(Debug, Clone)]
pub struct HubAccess {
    pub api_url: String,
    pub admin_token: String,
    /// Where the devices' credentials are kept (reused across runs).
    pub cert_dir: PathBuf,
}

/// One bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub broker: Broker,
    pub auth: Auth,
    /// Set when the broker is the hub.
    pub hub: Option<HubAccess>,
    pub connections: usize,
    pub pacing: Pacing,
    pub load: Load,
    /// Connect, stay idle for the load's duration, publish nothing.
    pub idle: bool,
    /// Events per second for the event → ack round trip (hub only; 0: none).
    pub event_rate: f64,
    /// Device ids are `<prefix><n>` (ASCII letters and digits).
    pub id_prefix: String,
    /// Draw a progress bar when stderr is a terminal.
    pub progress: bool,
}

/// Why a bench run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid bench configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("no load connection came up ({attempted} attempted, {errors} connect errors)")]
    NotConnected { attempted: usize, errors: u64 },
    #[error("the {0} connection did not come up")]
    Helper(&'static str),
}

/// Connects, publishes (or idles) and reports.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let session = Session::open(config).await?;
    if config.idle {
        if let Stop::After(hold) = config.load.stop {
            tokio::time::sleep(hold).await;
        }
        return Ok(session.close_idle().await);
    }
    session.run_load().await
}

/// Connections that are up, before any load.
pub struct Session {
    config: BenchConfig,
    counters: Arc<Counters>,
    receiver: Receiver,
    /// The load connections that came up, with their telemetry topics.
    telemetry: Vec<(String, LoadConnection)>,
    /// Every load connection's options and telemetry topic, by index
    /// (for reconnecting them).
    clients: Vec<(rumqttc::MqttOptions, String)>,
    /// The counting subscriber or the event publisher.
    helper: Option<LoadConnection>,
    events: Option<EventSource>,
    connect: ConnectReport,
}

/// The connection that publishes events, and what it has in flight.
struct EventSource {
    topic: String,
    pending: PendingEvents,
}

impl Session {
    /// Validates, provisions (hub), opens the helper connection and then
    /// the load connections, timing the latter.
    pub async fn open(config: &BenchConfig) -> Result<Session, BenchError> {
        validate(config)?;
        crate::mqtt::ensure_crypto_provider();
        let counters = Arc::new(Counters::default());
        let identities = Identities {
            config,
            ids: telemetry_ids(config),
            creds: provision(config).await?,
        };
        let (receiver, helper, events) = open_receiver(&identities, &counters).await?;
        let clients: Vec<(rumqttc::MqttOptions, String)> = (0..identities.ids.len())
            .map(|index| {
                let topic = identities.topic(index, Channel::Telemetry);
                (identities.options(index), topic)
            })
            .collect();
        let mut session = Session {
            config: config.clone(),
            counters,
            receiver,
            telemetry: Vec::new(),
            clients,
            helper,
            events,
            connect: ConnectReport::default(),
        };
        session.connect = session.connect_telemetry(config.pacing).await;
        if session.telemetry.is_empty() {
            return Err(BenchError::NotConnected {
                attempted: session.connect.attempted,
                errors: session.connect.errors,
            });
        }
        Ok(session)
    }

    /// Opens every load connection (paced); keeps those that came up.
    async fn connect_telemetry(&mut self, pacing: Pacing) -> ConnectReport {
        let clients = self
            .clients
            .iter()
            .map(|(options, _)| (options.clone(), Role::Telemetry))
            .collect();
        let (up, report) = connect_all(clients, pacing, &self.counters).await;
        self.telemetry = up
            .into_iter()
            .map(|(index, connection)| (self.clients[index].1.clone(), connection))
            .collect();
        report
    }

    /// Drops every load connection at once, without DISCONNECT (as a
    /// network failure would), and opens them all again at once; `rounds`
    /// times. The connect report of each round.
    pub async fn reconnect_storm(&mut self, rounds: usize) -> Vec<ConnectReport> {
        let mut reports = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let dropped: Vec<_> = std::mem::take(&mut self.telemetry)
                .into_iter()
                .map(|(_, connection)| {
                    connection.stop.cancel();
                    connection.task
                })
                .collect();
            futures_join(dropped).await;
            let all_at_once = Pacing {
                concurrency: self.clients.len(),
                timeout: self.config.pacing.timeout,
            };
            reports.push(self.connect_telemetry(all_at_once).await);
        }
        reports
    }

    pub fn connect_report(&self) -> ConnectReport {
        self.connect
    }

    /// Closes the idle connections; the report holds the connect phase.
    pub async fn close_idle(mut self) -> BenchReport {
        self.close_telemetry().await;
        self.finish(Figures::default()).await
    }

    /// Publishes the load, waits for acknowledgements and for the
    /// received count to settle, closes and reports.
    pub async fn run_load(mut self) -> Result<BenchReport, BenchError> {
        let load = self.config.load;
        let publishers: Vec<Publisher> = self
            .telemetry
            .iter()
            .map(|(topic, connection)| Publisher {
                client: connection.client.clone(),
                topic: topic.clone(),
            })
            .collect();
        let before = self.receiver.count().await?;
        let progress =
            progress::Progress::start(self.config.progress, load.stop, Arc::clone(&self.counters));
        let events_stop = CancellationToken::new();
        let events_task = self.spawn_events(events_stop.clone());
        let started = Instant::now();
        load::publish_telemetry(&publishers, load).await;
        let publish_seconds = started.elapsed().as_secs_f64();
        progress.finish();
        if load.qos != QoS::AtMostOnce {
            wait_for_acks(&self.counters, |c| (&c.sent, &c.acknowledged)).await;
        }
        events_stop.cancel();
        if let Some(task) = events_task {
            let _ = task.await;
            wait_for_acks(&self.counters, |c| (&c.events_sent, &c.events_acknowledged)).await;
        }
        let puback = self.close_telemetry().await;
        let (after, last_growth) = self.receiver.settle().await?;
        let figures = Figures {
            publish_seconds,
            received: after.ingested - before.ingested,
            received_seconds: last_growth.saturating_duration_since(started).as_secs_f64(),
            seq_gaps: after.seq_gaps - before.seq_gaps,
            puback,
            event_ack: Latency::default(),
        };
        Ok(self.finish(figures).await)
    }

    fn spawn_events(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let (source, helper) = (self.events.as_ref()?, self.helper.as_ref()?);
        Some(tokio::spawn(load::publish_events(
            helper.client.clone(),
            source.topic.clone(),
            self.config.event_rate,
            Arc::clone(&source.pending),
            Arc::clone(&self.counters),
            stop,
        )))
    }

    async fn finish(mut self, mut figures: Figures) -> BenchReport {
        if let Some(helper) = self.helper.take() {
            let latency = helper.close(CLOSE_TIMEOUT).await;
            if self.events.is_some() {
                figures.event_ack = latency;
            }
        }
        self.report(figures)
    }

    /// Closes the load connections together; returns their PUBACK times.
    async fn close_telemetry(&mut self) -> Latency {
        let closing = std::mem::take(&mut self.telemetry)
            .into_iter()
            .map(|(_, connection)| tokio::spawn(connection.close(CLOSE_TIMEOUT)));
        let mut puback = Latency::default();
        for closed in futures_join(closing.collect()).await {
            puback.merge(&closed);
        }
        puback
    }

    fn report(&self, figures: Figures) -> BenchReport {
        let c = &self.counters;
        let (sent, acknowledged) = (Counters::get(&c.sent), Counters::get(&c.acknowledged));
        let per_second = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        BenchReport {
            broker: if self.config.hub.is_some() {
                "hub"
            } else {
                "mqtt"
            }
            .into(),
            transport: match self.config.auth {
                Auth::Password { .. } => "tcp",
                Auth::Devices => "mtls",
            }
            .into(),
            connections: self.config.connections,
            qos: self.config.load.qos as u8,
            payload_bytes: self.config.load.payload_bytes,
            target_rate: self.config.load.rate,
            connect: self.connect,
            connection_errors: Counters::get(&c.connection_errors),
            publish_seconds: figures.publish_seconds,
            sent,
            acknowledged,
            received: figures.received,
            received_seconds: figures.received_seconds,
            sent_per_second: per_second(sent, figures.publish_seconds),
            received_per_second: per_second(figures.received, figures.received_seconds),
            seq_gaps: self.config.hub.as_ref().map(|_| figures.seq_gaps),
            puback: figures.puback.percentiles(),
            events_sent: Counters::get(&c.events_sent),
            events_acknowledged: Counters::get(&c.events_acknowledged),
            event_ack: figures.event_ack.percentiles(),
        }
    }
}

/// What the load phase measured.
#[derive(Default)]
struct Figures {
    publish_seconds: f64,
    received: u64,
    received_seconds: f64,
    seq_gaps: u64,
    puback: Latency,
    event_ack: Latency,
}

/// Who connection `index` is: the telemetry devices in order, then the
/// event publisher (index = number of telemetry devices).
struct Identities<'a> {
    config: &'a BenchConfig,
    ids: Vec<String>,
    /// In the same order, when provisioned.
    creds: Vec<Provisioned>,
}

impl Identities<'_> {
    fn device_id(&self, index: usize) -> String {
        self.ids
            .get(index)
            .cloned()
            .unwrap_or_else(|| events_id(self.config))
    }

    fn topic(&self, index: usize, channel: Channel) -> String {
        for_device(&self.device_id(index), channel)
    }

    fn options(&self, index: usize) -> rumqttc::MqttOptions {
        let (client_id, login) = match &self.config.auth {
            // A tool's client id must not be a device's on the hub.
            Auth::Password { username, password } => (
                format!("{}-{index}", self.config.id_prefix),
                Login::Password {
                    username: username.clone(),
                    password: password.clone(),
                },
            ),
            // invariant: with device auth every connection's device was provisioned.
            Auth::Devices => (
                self.device_id(index),
                Login::Device(Box::new(self.creds[index].clone())),
            ),
        };
        connection::options(&client_id, &self.config.broker, &login)
    }
}

/// Where "received" comes from, and the helper connection: the hub's
/// metrics and (with events) the event publisher, or a counting subscriber.
async fn open_receiver(
    identities: &Identities<'_>,
    counters: &Arc<Counters>,
) -> Result<(Receiver, Option<LoadConnection>, Option<EventSource>), BenchError> {
    let config = identities.config;
    let Some(hub) = &config.hub else {
        let receiver = Receiver::Subscriber(Arc::clone(counters));
        if config.idle {
            return Ok((receiver, None, None));
        }
        let role = Role::Subscriber {
            filter: format!("/tenants/+/{}", Channel::Telemetry.suffix()),
            qos: config.load.qos,
        };
        let options = identities.options(identities.ids.len());
        let helper = open_helper(options, role, config, counters, "subscriber").await?;
        return Ok((receiver, Some(helper), None));
    };
    let receiver = Receiver::Hub(HubMetrics::new(&hub.api_url, &hub.admin_token));
    if !with_events(config) {
        return Ok((receiver, None, None));
    }
    let index = identities.ids.len();
    let source = EventSource {
        topic: identities.topic(index, Channel::Event),
        pending: Arc::new(Mutex::new(Default::default())),
    };
    let role = Role::Events {
        ack_topic: identities.topic(index, Channel::EventAck),
        pending: Arc::clone(&source.pending),
    };
    let helper = open_helper(identities.options(index), role, config, counters, "event").await?;
    Ok((receiver, Some(helper), Some(source)))
}

fn validate(config: &BenchConfig) -> Result<(), BenchError> {
    let invalid = |msg: String| Err(BenchError::InvalidConfig(msg));
    if config.connections == 0 {
        return invalid("at least one connection is needed".into());
    }
    let last_id = format!("{}{}", config.id_prefix, config.connections);
    if !is_valid_device_id(&last_id) {
        return invalid(format!(
            "id prefix `{}` must be ASCII letters or digits, short enough for `{last_id}` (48 at most)",
            config.id_prefix
        ));
    }
    if config
        .hub
        .as_ref()
        .is_some_and(|h| h.admin_token.is_empty())
    {
        return invalid(
            "the hub's admin token is needed with its API (--token or YIZHAN_ADMIN_TOKEN)".into(),
        );
    }
    if config.auth == Auth::Devices {
        if config.hub.is_none() {
            return invalid(
                "device (mTLS) connections need the hub's API to provision them".into(),
            );
        }
        if config.broker.host.parse::<IpAddr>().is_ok() {
            return invalid(
                "over mTLS the host must be a DNS name (e.g. localhost): the hub refuses an IP address as TLS server name".into(),
            );
        }
    }
    if config.broker.keepalive < Duration::from_secs(1) {
        return invalid("the keepalive must be at least 1 s".into());
    }
    if config.load.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return invalid("the rate must be above zero (leave it out for full speed)".into());
    }
    if config.load.qos == QoS::ExactlyOnce {
        return invalid("QoS 0 or 1".into());
    }
    Ok(())
}

fn telemetry_ids(config: &BenchConfig) -> Vec<String> {
    (0..config.connections)
        .map(|n| format!("{}{n}", config.id_prefix))
        .collect()
}

fn events_id(config: &BenchConfig) -> String {
    format!("{}events", config.id_prefix)
}

fn with_events(config: &BenchConfig) -> bool {
    config.hub.is_some() && config.event_rate > 0.0 && !config.idle
}

/// Provisions the run's devices on the hub as people counters of center
/// `bench` (only when they will publish or log in as devices): the
/// telemetry ids in order, then the event publisher's. Provisioning
/// again is cheap (the hub answers 409, the stored credentials are used),
/// so a caller may provision first to keep it out of what it measures.
pub async fn provision(config: &BenchConfig) -> Result<Vec<Provisioned>, BenchError> {
    let Some(hub) = &config.hub else {
        return Ok(Vec::new());
    };
    if config.idle && config.auth != Auth::Devices {
        return Ok(Vec::new());
    }
    let mut ids = telemetry_ids(config);
    if with_events(config) {
        ids.push(events_id(config));
    }
    let specs: Vec<DeviceSpec> = ids
        .into_iter()
        .map(|id| DeviceSpec {
            id,
            center: "bench".into(),
            room: "bench".into(),
            kind: DeviceKind::Counter,
            number: 1,
            seed: 0,
        })
        .collect();
    let provisioner = Provisioner::new(
        &hub.api_url,
        &hub.admin_token,
        CredentialStore::new(&hub.cert_dir),
    );
    Ok(provisioner
        .ensure_all(&specs, PROVISION_CONCURRENCY)
        .await?)
}

/// Opens the subscriber or the event publisher and waits for its SUBACK.
async fn open_helper(
    options: rumqttc::MqttOptions,
    role: Role,
    config: &BenchConfig,
    counters: &Arc<Counters>,
    what: &'static str,
) -> Result<LoadConnection, BenchError> {
    let (connection, ready) = connection::open(options, role, Arc::clone(counters));
    match tokio::time::timeout(config.pacing.timeout, ready).await {
        Ok(Ok(())) => Ok(connection),
        _ => {
            connection.stop.cancel();
            Err(BenchError::Helper(what))
        }
    }
}

/// Awaits every task; a task that panicked contributes nothing.
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Latency>>) -> Vec<Latency> {
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.unwrap_or_default());
    }
    done
}

/// Waits until the second counter caught up with the first, or made no
/// progress for [`ACK_WAIT`].
async fn wait_for_acks(
    counters: &Counters,
    pick: impl Fn(&Counters) -> (&std::sync::atomic::AtomicU64, &std::sync::atomic::AtomicU64),
) {
    let mut progress = Instant::now();
    let mut last = 0;
    loop {
        let (sent, acked) = pick(counters);
        let (sent, acked) = (Counters::get(sent), Counters::get(acked));
        if acked >= sent || progress.elapsed() > ACK_WAIT {
            return;
        }
        if acked != last {
            last = acked;
            progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
