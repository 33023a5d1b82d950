//! The forwarder: reads the uplink outbox in key order, publishes at QoS 1
//! with up to `max_in_flight` unacknowledged, and removes an entry only
//! after the upstream's PUBACK for it.
//!
//! Each attempt is a fresh rumqttc event loop on one URL with the hub's
//! client id and a persistent session (`clean_session = false`). A PUBACK
//! names a packet id; the event loop reports `Outgoing::Publish(pkid)` for
//! the publishes in the order they were handed to it, so the forwarder
//! pairs each packet id with the outbox key it sent under it. When a
//! session ends, whatever was not acknowledged is still in the outbox and
//! the next session sends it again from the oldest entry (the broker may
//! then see a message twice; consumers drop duplicates by message id).
//! Nothing is lost in flight: rumqttc's own resend queue is never used.
//!
//! On a failure (refused, unreachable, keepalive missed, TLS) the next URL
//! is tried after a jittered wait that doubles with every failure in a row,
//! from `backoff_initial` up to `backoff_max`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::UplinkError;
use crate::clock::unix_ms;
use crate::metrics::Metrics;
use crate::records::{UplinkClass, UplinkEntry};
use crate::settings::{UplinkSettings, Upstream};
use crate::store::Store;
use crate::supervise;

/// Entries read from the outbox at once.
const READ_BATCH: usize = 512;
/// Largest packet sent or taken: events are at most `ingest.max_payload_bytes`
/// plus their envelope.
const MAX_PACKET: usize = 1024 * 1024;
/// How often the oldest entry's age is shown while nothing else happens.
const AGE_TICK: Duration = Duration::from_secs(1);

/// What the forwarder runs with.
pub struct Forwarder {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub settings: UplinkSettings,
    pub client_id: String,
    pub tls: Option<TlsConfiguration>,
    /// Woken by every outbox write.
    pub wake: Arc<Notify>,
    pub stop: CancellationToken,
}

/// How a session ended.
enum End {
    Stopped,
    Lost { connected: bool, reason: String },
}

/// A session's publishes not yet acknowledged.
#[derive(Default)]
struct InFlight {
    /// Read from the outbox, not yet handed to the client.
    ahead: VecDeque<(u64, UplinkEntry)>,
    /// Handed to the client, no packet id seen yet (in order).
    handed: VecDeque<(u64, UplinkClass)>,
    /// Sent under a packet id, waiting for its PUBACK.
    sent: HashMap<u16, (u64, UplinkClass)>,
    /// Acknowledged, to remove from the outbox.
    acked: Vec<(u64, UplinkClass)>,
    /// The last key read.
    cursor: u64,
}

impl InFlight {
    fn outstanding(&self) -> usize {
        self.handed.len() + self.sent.len()
    }
}

impl Forwarder {
    /// Runs sessions on the URLs in turn until `stop`.
    pub async fn run(self) -> Result<(), UplinkError> {
        let sent = self.sent_counters();
        let mut failures = 0u32;
        let mut next = 0;
        loop {
            let url = &self.settings.urls[next % self.settings.urls.len()];
            next += 1;
            match self.session(url, &sent).await? {
                End::Stopped => return Ok(()),
                End::Lost { connected, reason } => {
                    self.metrics.uplink_connected.set(0);
                    failures = if connected {
                        0
                    } else {
                        failures.saturating_add(1)
                    };
                    tracing::warn!(upstream = %url, %reason, "uplink session ended; trying the next broker");
                }
            }
            if self.pause(self.backoff(failures)).await? {
                return Ok(());
            }
        }
    }

    fn sent_counters(&self) -> HashMap<UplinkClass, IntCounter> {
        UplinkClass::ALL
            .into_iter()
            .map(|class| {
                let counter = self
                    .metrics
                    .uplink_sent
                    .with_label_values(&[class.as_str()]);
                (class, counter)
            })
            .collect()
    }

    /// The wait after `failures` failures in a row: doubling from the
    /// initial wait up to the maximum, then a random part of its upper half.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .settings
            .backoff_initial
            .saturating_mul(2u32.saturating_pow(failures.min(20)));
        let wait = doubled.min(self.settings.backoff_max);
        wait.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }

    /// Waits `wait`, showing the backlog's age; true when stopped.
    async fn pause(&self, wait: Duration) -> Result<bool, UplinkError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            self.show_age()?;
            let tick = (tokio::time::Instant::now() + AGE_TICK).min(until);
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(true),
                _ = tokio::time::sleep_until(tick) => {}
            }
            if tokio::time::Instant::now() >= until {
                return Ok(false);
            }
        }
    }

    fn show_age(&self) -> Result<(), UplinkError> {
        let age_ms = match self.store.uplink_oldest_at()? {
            Some(at) => unix_ms().saturating_sub(at),
            None => 0,
        };
        self.metrics.uplink_oldest_age.set(age_ms as f64 / 1000.0);
        Ok(())
    }

    fn options(&self, url: &Upstream) -> MqttOptions {
        let settings = &self.settings;
        let mut options = MqttOptions::new(self.client_id.clone(), url.host.clone(), url.port);
        options
            .set_clean_session(false)
            .set_keep_alive(settings.keepalive)
            .set_inflight(settings.max_in_flight)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((username, password)) = &settings.credentials {
            options.set_credentials(username.clone(), password.clone());
        }
        if let (true, Some(tls)) = (url.tls, &self.tls) {
            options.set_transport(Transport::tls_with_config(tls.clone()));
        }
        options
    }

    /// One connection to `url`: connect, then forward until it fails or
    /// the hub stops. Store errors end the forwarder (and so the hub).
    async fn session(
        &self,
        url: &Upstream,
        sent: &HashMap<UplinkClass, IntCounter>,
    ) -> Result<End, UplinkError> {
        let capacity = usize::from(self.settings.max_in_flight);
        let (client, mut eventloop) = AsyncClient::new(self.options(url), capacity);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(self.settings.connect_timeout.as_secs());
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (mut events, task) = poll_in_background(eventloop);
        let _poller = PollerGuard(task);
        let connected = tokio::select! {
            _ = self.stop.cancelled() => return Ok(End::Stopped),
            first = events.recv() => connack(first),
        };
        if let Err(reason) = connected {
            self.metrics
                .uplink_connect_attempts
                .with_label_values(&["failed"])
                .inc();
            return Ok(End::Lost {
                connected: false,
                reason,
            });
        }
        self.metrics
            .uplink_connect_attempts
            .with_label_values(&["connected"])
            .inc();
        self.metrics.uplink_connected.set(1);
        tracing::info!(upstream = %url, client_id = %self.client_id, "uplink connected");
        let reason = self.forward(&client, &mut events, sent).await?;
        Ok(match reason {
            None => End::Stopped,
            Some(reason) => End::Lost {
                connected: true,
                reason,
            },
        })
    }

    /// Publishes from the outbox and removes what is acknowledged, until
    /// the session fails (`Some(why)`) or the hub stops (`None`).
    async fn forward(
        &self,
        client: &AsyncClient,
        events: &mut mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
        sent: &HashMap<UplinkClass, IntCounter>,
    ) -> Result<Option<String>, UplinkError> {
        let mut flight = InFlight::default();
        let mut age = tokio::time::interval(AGE_TICK);
        loop {
            if let Some(reason) = self.fill(client, &mut flight)? {
                return Ok(Some(reason));
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(None),
                event = events.recv() => {
                    let mut next = event;
                    while let Some(event) = next {
                        if let Err(reason) = on_event(event, &mut flight) {
                            return Ok(Some(reason));
                        }
                        next = events.try_recv().ok();
                    }
                }
                _ = self.wake.notified() => {}
                _ = age.tick() => {
                    supervise::checkpoint()?;
                    self.show_age()?;
                }
            }
            self.remove_acked(&mut flight, sent)?;
        }
    }

    /// Hands entries to the client while fewer than `max_in_flight` are
    /// outstanding; reads the outbox in batches. `Some(why)` when the
    /// client is gone.
    fn fill(
        &self,
        client: &AsyncClient,
        flight: &mut InFlight,
    ) -> Result<Option<String>, UplinkError> {
        let most = usize::from(self.settings.max_in_flight);
        while flight.outstanding() < most {
            if flight.ahead.is_empty() {
                let batch = self.store.uplink_read(flight.cursor, READ_BATCH)?;
                let Some((last, _)) = batch.last() else {
                    return Ok(None);
                };
                flight.cursor = *last;
                flight.ahead.extend(batch);
            }
            let Some((key, entry)) = flight.ahead.pop_front() else {
                return Ok(None);
            };
            // The client's queue holds `max_in_flight`: never full here.
            if let Err(error) =
                client.try_publish(entry.topic, QoS::AtLeastOnce, false, entry.payload)
            {
                return Ok(Some(format!("handing a publish to the client: {error}")));
            }
            flight.handed.push_back((key, entry.class));
        }
        Ok(None)
    }

    fn remove_acked(
        &self,
        flight: &mut InFlight,
        sent: &HashMap<UplinkClass, IntCounter>,
    ) -> Result<(), UplinkError> {
        if flight.acked.is_empty() {
            return Ok(());
        }
        self.store.uplink_remove(&flight.acked)?;
        for (_, class) in flight.acked.drain(..) {
            if let Some(counter) = sent.get(&class) {
                counter.inc();
            }
        }
        if self.store.uplink_backlog().0 == 0 {
            self.metrics.uplink_oldest_age.set(0.0);
        }
        Ok(())
    }
}

/// The outcome of a connection attempt, from the event loop's first event.
fn connack(first: Option<Result<Event, ConnectionError>>) -> Result<(), String> {
    match first {
        Some(Ok(Event::Incoming(Packet::ConnAck(ack))))
            if ack.code == ConnectReturnCode::Success =>
        {
            Ok(())
        }
        Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => Err(format!("refused: {:?}", ack.code)),
        Some(Ok(other)) => Err(format!("unexpected first event {other:?}")),
        Some(Err(error)) => Err(error.to_string()),
        None => Err("the event loop ended".into()),
    }
}

/// Pairs packet ids with outbox keys and collects PUBACKs; `Err` ends the
/// session.
fn on_event(event: Result<Event, ConnectionError>, flight: &mut InFlight) -> Result<(), String> {
    match event.map_err(|error| error.to_string())? {
        Event::Outgoing(Outgoing::Publish(pkid)) => {
            if let Some(sent) = flight.handed.pop_front() {
                flight.sent.insert(pkid, sent);
            }
        }
        Event::Incoming(Packet::PubAck(ack)) => {
            if let Some(sent) = flight.sent.remove(&ack.pkid) {
                flight.acked.push(sent);
            }
        }
        Event::Incoming(Packet::Disconnect) => return Err("the broker disconnected".into()),
        _ => {}
    }
    Ok(())
}

/// Aborts the event loop's task when the session is over.
struct PollerGuard(tokio::task::JoinHandle<()>);

impl Drop for PollerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `eventloop` in a task of its own (its `poll` is not to be
/// dropped half-way), passing every event on until the first error.
fn poll_in_background(
    mut eventloop: EventLoop,
) -> (
    mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    (rx, task)
}
