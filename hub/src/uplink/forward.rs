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
//! Publishes are paced to `max_messages_per_second` (a token bucket of
//! 10 ms worth), so a drain after an outage leaves the CPU to ingest.
//!
//! On a failure (refused, unreachable, keepalive missed, TLS) the next URL
//! is tried after a jittered wait that doubles with every failure in a row,
//! from `backoff_initial` up to `backoff_max`.
//!
//! With a downlink the session also subscribes (QoS 1) to the hub's
//! centers' command topics after every CONNACK, and acknowledges each
//! command only once `downlink::Downlink` has made its decision durable
//! (manual acks): a hub killed before that gets the message again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use protocol::mqtt::{poll_in_background, Events};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, NetworkOptions, Outgoing,
    Packet, Publish, QoS, SubAck, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
    Transport,
};

use super::{Parts, UplinkError};
use crate::clock::unix_ms;
use crate::records::{UplinkClass, UplinkEntry};
use crate::settings::Upstream;
use crate::supervise;

/// Entries read from the outbox at once.
const READ_BATCH: usize = 512;
/// Largest packet sent or taken: events are at most `ingest.max_payload_bytes`
/// plus their envelope.
const MAX_PACKET: usize = 1024 * 1024;
/// How often the oldest entry's age is shown while nothing else happens.
const AGE_TICK: Duration = Duration::from_secs(1);
/// Publishes outstanding and no PUBACK for this long: the session is given
/// up and the next broker tried (a broker may keep a connection alive yet
/// never acknowledge — NATS while its stream has no quorum —, and MQTT 3.1.1
/// resends only on a new connection).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the forwarder runs with: its parts and the client TLS built from
/// their settings.
pub struct Forwarder {
    pub parts: Parts,
    pub tls: Option<TlsConfiguration>,
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

/// What `fill` left.
enum Fill {
    /// Nothing to send now: the window is full or the outbox empty.
    Waiting,
    /// Entries wait for the pace.
    Paced,
    /// The client is gone.
    Lost(String),
}

/// At most `rate` publishes per second, in bursts of 10 ms worth.
struct Pace {
    rate: Option<f64>,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Pace {
    fn new(rate: Option<u32>) -> Pace {
        let burst = rate.map_or(0.0, |rate| (f64::from(rate) / 100.0).max(1.0));
        Pace {
            rate: rate.map(f64::from),
            tokens: burst,
            burst,
            last: Instant::now(),
        }
    }

    /// Whether one more publish may go now (and counts it).
    fn take(&mut self) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// How long until `take` may succeed.
    fn next(&self) -> Duration {
        let rate = self.rate.unwrap_or(f64::MAX);
        Duration::from_secs_f64(((1.0 - self.tokens) / rate).max(0.001))
    }
}

impl Forwarder {
    /// Runs sessions on the URLs in turn until `stop`.
    pub async fn run(self) -> Result<(), UplinkError> {
        let sent = self.sent_counters();
        let mut failures = 0u32;
        let mut next = 0;
        loop {
            let url = &self.parts.settings.urls[next % self.parts.settings.urls.len()];
            next += 1;
            match self.session(url, &sent).await? {
                End::Stopped => return Ok(()),
                End::Lost { connected, reason } => {
                    self.parts.metrics.uplink_connected.set(0);
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
                    .parts
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
        let settings = &self.parts.settings;
        let doubled = settings
            .backoff_initial
            .saturating_mul(2u32.saturating_pow(failures.min(20)));
        let wait = doubled.min(settings.backoff_max);
        wait.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }

    /// Waits `wait`, showing the backlog's age; true when stopped.
    async fn pause(&self, wait: Duration) -> Result<bool, UplinkError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            supervise::checkpoint()?;
            self.show_age()?;
            let tick = (tokio::time::Instant::now() + AGE_TICK).min(until);
            tokio::select! {
                _ = self.parts.stop.cancelled() => return Ok(true),
                _ = tokio::time::sleep_until(tick) => {}
            }
            if tokio::time::Instant::now() >= until {
                return Ok(false);
            }
        }
    }

    fn show_age(&self) -> Result<(), UplinkError> {
        let age_ms = match self.parts.store.uplink_oldest_at()? {
            Some(at) => unix_ms().saturating_sub(at),
            None => 0,
        };
        self.parts
            .metrics
            .uplink_oldest_age
            .set(age_ms as f64 / 1000.0);
        Ok(())
    }

    fn options(&self, url: &Upstream) -> MqttOptions {
        let settings = &self.parts.settings;
        let mut options =
            MqttOptions::new(self.parts.client_id.clone(), url.host.clone(), url.port);
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
        options.set_manual_acks(self.parts.downlink.is_some());
        options
    }

    /// Subscribes to the centers' command topics (with a downlink).
    async fn subscribe(&self, client: &AsyncClient) -> Result<(), String> {
        let Some(downlink) = &self.parts.downlink else {
            return Ok(());
        };
        let filters = downlink
            .filters()
            .into_iter()
            .map(|filter| SubscribeFilter::new(filter, QoS::AtLeastOnce));
        client
            .subscribe_many(filters)
            .await
            .map_err(|error| format!("subscribing to the command topics: {error}"))
    }

    /// A SUBACK: subscribed when the broker granted every filter.
    fn subscribed(&self, ack: &SubAck) {
        let granted = ack
            .return_codes
            .iter()
            .all(|code| !matches!(code, SubscribeReasonCode::Failure));
        self.parts
            .metrics
            .downlink_subscribed
            .set(i64::from(granted));
        match granted {
            true => tracing::info!("subscribed to the district's commands"),
            false => tracing::error!("the upstream refused the command topics' subscription"),
        }
    }

    /// A command from the district: decided, then acknowledged.
    async fn command(
        &self,
        client: &AsyncClient,
        publish: &Publish,
    ) -> Result<Option<String>, UplinkError> {
        if let Some(downlink) = &self.parts.downlink {
            downlink.receive(&publish.topic, &publish.payload, unix_ms())?;
        }
        match client.ack(publish).await {
            Ok(()) => Ok(None),
            Err(error) => Ok(Some(format!("acknowledging a command: {error}"))),
        }
    }

    /// One connection to `url`: connect, then forward until it fails or
    /// the hub stops. Store errors end the forwarder (and so the hub).
    async fn session(
        &self,
        url: &Upstream,
        sent: &HashMap<UplinkClass, IntCounter>,
    ) -> Result<End, UplinkError> {
        // Room for the publishes in flight, the subscription and the acks.
        let capacity = usize::from(self.parts.settings.max_in_flight) + 64;
        let (client, mut eventloop) = AsyncClient::new(self.options(url), capacity);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(self.parts.settings.connect_timeout.as_secs());
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (mut events, _poller) = poll_in_background(eventloop);
        let connected = tokio::select! {
            _ = self.parts.stop.cancelled() => return Ok(End::Stopped),
            first = events.recv() => connack(first),
        };
        if let Err(reason) = connected {
            self.parts
                .metrics
                .uplink_connect_attempts
                .with_label_values(&["failed"])
                .inc();
            return Ok(End::Lost {
                connected: false,
                reason,
            });
        }
        self.parts
            .metrics
            .uplink_connect_attempts
            .with_label_values(&["connected"])
            .inc();
        self.parts.metrics.uplink_connected.set(1);
        tracing::info!(upstream = %url, client_id = %self.parts.client_id, "uplink connected");
        if let Err(reason) = self.subscribe(&client).await {
            return Ok(End::Lost {
                connected: true,
                reason,
            });
        }
        let reason = self.forward(&client, &mut events, sent).await;
        self.parts.store.uplink_release();
        self.parts.metrics.downlink_subscribed.set(0);
        Ok(match reason? {
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
        events: &mut Events,
        sent: &HashMap<UplinkClass, IntCounter>,
    ) -> Result<Option<String>, UplinkError> {
        let mut flight = InFlight::default();
        let mut pace = Pace::new(self.parts.settings.max_rate);
        let mut age = tokio::time::interval(AGE_TICK);
        // Since when publishes have been outstanding without a PUBACK.
        let mut stalled_since: Option<Instant> = None;
        loop {
            let paced = match self.fill(client, &mut flight, &mut pace)? {
                Fill::Lost(reason) => return Ok(Some(reason)),
                Fill::Paced => true,
                Fill::Waiting => false,
            };
            tokio::select! {
                biased;
                _ = self.parts.stop.cancelled() => return Ok(None),
                event = events.recv() => {
                    let mut next = event;
                    while let Some(event) = next {
                        let lost = match event {
                            Ok(Event::Incoming(Packet::Publish(publish))) => {
                                self.command(client, &publish).await?
                            }
                            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                                self.subscribed(&ack);
                                None
                            }
                            event => on_event(event, &mut flight).err(),
                        };
                        if lost.is_some() {
                            return Ok(lost);
                        }
                        next = events.try_recv().ok();
                    }
                }
                _ = self.parts.wake.notified() => {}
                _ = tokio::time::sleep(pace.next()), if paced => {}
                _ = age.tick() => {
                    supervise::checkpoint()?;
                    self.show_age()?;
                    if stalled_since.is_some_and(|since| since.elapsed() > ACK_TIMEOUT) {
                        let reason = format!("no PUBACK for {} s", ACK_TIMEOUT.as_secs());
                        return Ok(Some(reason));
                    }
                }
            }
            stalled_since = match (flight.outstanding(), flight.acked.is_empty()) {
                (0, _) => None,
                (_, false) => Some(Instant::now()),
                (_, true) => stalled_since.or_else(|| Some(Instant::now())),
            };
            self.remove_acked(&mut flight, sent)?;
        }
    }

    /// Hands entries to the client while fewer than `max_in_flight` are
    /// outstanding and the pace allows; reads the outbox in batches.
    fn fill(
        &self,
        client: &AsyncClient,
        flight: &mut InFlight,
        pace: &mut Pace,
    ) -> Result<Fill, UplinkError> {
        let most = usize::from(self.parts.settings.max_in_flight);
        while flight.outstanding() < most {
            if flight.ahead.is_empty() {
                let batch = self.parts.store.uplink_read(flight.cursor, READ_BATCH)?;
                let Some((last, _)) = batch.last() else {
                    return Ok(Fill::Waiting);
                };
                flight.cursor = *last;
                flight.ahead.extend(batch);
            }
            if !pace.take() {
                return Ok(Fill::Paced);
            }
            let Some((key, entry)) = flight.ahead.pop_front() else {
                return Ok(Fill::Waiting);
            };
            // The client's queue holds `max_in_flight`: never full here.
            if let Err(error) =
                client.try_publish(entry.topic, QoS::AtLeastOnce, false, entry.payload)
            {
                let reason = format!("handing a publish to the client: {error}");
                return Ok(Fill::Lost(reason));
            }
            flight.handed.push_back((key, entry.class));
        }
        Ok(Fill::Waiting)
    }

    fn remove_acked(
        &self,
        flight: &mut InFlight,
        sent: &HashMap<UplinkClass, IntCounter>,
    ) -> Result<(), UplinkError> {
        if flight.acked.is_empty() {
            return Ok(());
        }
        self.parts.store.uplink_remove(&flight.acked)?;
        for (_, class) in flight.acked.drain(..) {
            if let Some(counter) = sent.get(&class) {
                counter.inc();
            }
        }
        if self.parts.store.uplink_backlog().0 == 0 {
            self.parts.metrics.uplink_oldest_age.set(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Store;
    use std::sync::Arc;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn the_pace_lets_a_burst_through_then_one_per_interval() {
        let mut unpaced = Pace::new(None);
        assert!((0..10_000).all(|_| unpaced.take()));
        let mut pace = Pace::new(Some(100));
        assert!(pace.take(), "a burst of 10 ms worth: one");
        assert!(!pace.take(), "then the pace");
        let wait = pace.next();
        assert!(
            wait > Duration::from_millis(5) && wait <= Duration::from_millis(10),
            "{wait:?}"
        );
        pace.last -= Duration::from_millis(10);
        assert!(pace.take(), "10 ms later");
        let mut fast = Pace::new(Some(10_000));
        let burst = (0..1_000).take_while(|_| fast.take()).count();
        assert_eq!(burst, 100, "10 ms worth at once");
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_maximum_with_jitter() {
        let settings = crate::settings::uplink::parse(&crate::settings::UplinkConfig {
            enabled: true,
            urls: vec!["mqtt://district".into()],
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..crate::settings::UplinkConfig::default()
        })
        .unwrap()
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let forwarder = Forwarder {
            parts: Parts {
                store: Arc::new(Store::open(dir.path()).unwrap()),
                metrics: Metrics::new(),
                settings,
                client_id: "hub1".into(),
                wake: Arc::new(Notify::new()),
                stop: CancellationToken::new(),
                downlink: None,
            },
            tls: None,
        };
        for (failures, most) in [(0, 100), (1, 200), (3, 800), (4, 1_000), (40, 1_000)] {
            let wait = forwarder.backoff(failures);
            let most = Duration::from_millis(most);
            assert!(wait >= most / 2 && wait <= most, "{failures}: {wait:?}");
        }
    }
}
