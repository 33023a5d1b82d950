//! Ingest: broker link → decode and validate → twins, in batches.
//!
//! One thread owns the link's receiving half and every twin in use (a cache
//! in front of `store`). Per batch it applies all messages and writes the
//! dirty twins; a batch that stored events goes to the group-commit thread
//! (`commit`), which fsyncs and only then publishes its event acks and
//! rejection reports, while ingest goes on with the next batch. A rejected message is counted, reported
//! on the device's error topic and logged (rate limited); it never holds up
//! another device's messages.
//!
//! What the hub does in answer (commands, the interlock, gate decisions,
//! occupancy) lives in `actions`; ingest feeds it and publishes its
//! reactions right after the message that caused them, before the batch's
//! fsync, so a `stop` or an `open` never waits for the disk.

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::IntCounter;
use protocol::{
    topic, Birth, Channel, CommandAck, DeviceKind, ErrorReport, Event, EventAck, Telemetry,
    TelemetryError, Topic,
};
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::Notification;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::activity::Activity;
use crate::broker::window::{message_bytes, IngestWindow};
use crate::broker::{Waker, WAKE_TOPIC};
use crate::clock::unix_ms;
use crate::commit::GroupCommit;
use crate::input::{Input, InputError, Problem, TsWindow};
use crate::metrics::Metrics;
use crate::records::uplink::TwinChange;
use crate::records::{Presence, StoredEvent, Twin};
use crate::settings::{IngestConfig, RoomRules};
use crate::store::{Store, StoreError};
use crate::uplink::Feed;

/// How often silent devices are looked for: the bound on how late past
/// 1.5× keepalive a device is marked offline.
const LIVENESS_SWEEP: Duration = Duration::from_millis(250);

/// Twins changed only by telemetry (nothing acknowledged, nothing to
/// fsync) are written at most this often rather than after every batch:
/// under load a batch is a few hundred messages of the same few devices,
/// and rewriting their twins each time cost more than decoding them. A
/// crash loses at most this much of their last values, which no device was
/// promised.
const TWIN_WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// How long the link must be quiet before admissions that never arrived
/// are written off (`IngestWindow::settle`).
const WINDOW_SETTLE: Duration = Duration::from_secs(1);

/// How often command resends, expiries and the interlock watchdog are
/// checked.
const ACTIONS_TICK: Duration = Duration::from_millis(50);

/// Changes made outside ingest that its cache must learn, and work handed
/// to it: typed messages, never recognised by their strings.
#[derive(Debug, Clone)]
pub enum Control {
    /// The device is cut off: drop everything it sends from now on.
    Revoked(String),
    /// The device was (re)provisioned: reload its twin.
    Provisioned(String),
    /// A command already recorded `pending` and fsynced (issued through the
    /// API, or by the booking desk): ingest publishes it.
    Command(protocol::api::CommandRecord),
    /// Staff acknowledged the device's interlock alarm.
    AcknowledgeAlarm(String),
    /// A booked place on the device is over (from the booking desk, just
    /// before its `lock`): a therapy robot still in session is stopped.
    PlaceEnded(String),
    /// A room's entry was set through the API (already stored): gate
    /// decisions and occupancy use its seats and hours from now on.
    Room {
        center: String,
        id: String,
        rules: RoomRules,
    },
}

/// The way into the ingest thread from elsewhere (the API, the booking
/// desk): a `Control` message, then a wake-up so ingest reads it at once.
pub struct Inbox {
    control: Sender<Control>,
    waker: Arc<Waker>,
}

impl Inbox {
    pub fn new(control: Sender<Control>, waker: Arc<Waker>) -> Inbox {
        Inbox { control, waker }
    }

    /// Sends `control` and wakes ingest.
    pub fn send(&self, control: Control) {
        if self.control.send(control).is_err() {
            tracing::error!("ingest has stopped; control message lost");
        }
        self.waker.wake();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("broker link closed: {0}")]
    Link(Box<LinkError>),
    #[error(transparent)]
    Fault(#[from] crate::supervise::InjectedFault),
}

impl From<LinkError> for IngestError {
    fn from(error: LinkError) -> Self {
        IngestError::Link(Box::new(error))
    }
}

/// Why a message was rejected; the `reason` label of
/// `yizhan_ingest_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MalformedJson,
    InvalidPayload,
    WrongType,
    UnknownKind,
    KindMismatch,
    Unprovisioned,
    Revoked,
    Oversize,
    UnknownTopic,
    /// A `ts` outside the calendar or the hub's window around its clock.
    InvalidTs,
    /// A negative or absurd length of time (a session, walk-in minutes).
    InvalidDuration,
    /// A number outside its range (seq, people, temperature).
    OutOfRange,
    /// The hub could not store the message (its fault, not the device's).
    StoreFailed,
    /// Handling the message panicked (the hub's fault, not the device's).
    InternalError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidPayload => "invalid_payload",
            Reason::WrongType => "wrong_type",
            Reason::UnknownKind => "unknown_kind",
            Reason::KindMismatch => "kind_mismatch",
            Reason::Unprovisioned => "unprovisioned",
            Reason::Revoked => "revoked",
            Reason::Oversize => "oversize",
            Reason::UnknownTopic => "unknown_topic",
            Reason::InvalidTs => "invalid_ts",
            Reason::InvalidDuration => "invalid_duration",
            Reason::OutOfRange => "out_of_range",
            Reason::StoreFailed => "store_failed",
            Reason::InternalError => "internal_error",
        }
    }
}

/// A rejection with its human-readable detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }

    fn from_json(error: &serde_json::Error) -> Rejection {
        let reason = match error.classify() {
            serde_json::error::Category::Data => Reason::InvalidPayload,
            _ => Reason::MalformedJson,
        };
        Rejection::new(reason, error.to_string())
    }
}

impl From<TelemetryError> for Rejection {
    fn from(error: TelemetryError) -> Rejection {
        let reason = match error {
            TelemetryError::Malformed(_) => Reason::MalformedJson,
            TelemetryError::WrongType(_) => Reason::WrongType,
            TelemetryError::NotObject | TelemetryError::BadHeader(_) => Reason::InvalidPayload,
        };
        Rejection::new(reason, error.to_string())
    }
}

impl From<InputError> for Rejection {
    fn from(error: InputError) -> Rejection {
        let reason = match error.problem() {
            Problem::Ts => Reason::InvalidTs,
            Problem::Duration => Reason::InvalidDuration,
            Problem::Range => Reason::OutOfRange,
            Problem::Shape => Reason::InvalidPayload,
        };
        Rejection::new(reason, error.to_string())
    }
}

/// One message taken off the link.
struct Incoming {
    topic: Bytes,
    payload: Bytes,
    arrived: Instant,
}

/// What a batch must publish once it is durable.
#[derive(Default)]
struct Outbox {
    messages: Vec<(String, Vec<u8>)>,
    holds_events: bool,
}

pub struct Ingest {
    store: Arc<Store>,
    metrics: Metrics,
    config: IngestConfig,
    epoch: u64,
    link_tx: LinkTx,
    control: Receiver<Control>,
    twins: HashMap<String, Twin>,
    dirty: HashSet<String>,
    online: HashSet<String>,
    revoked: HashSet<String>,
    /// `messages_received` children per device, one per uplink channel.
    received: HashMap<String, [IntCounter; Channel::UPLINK.len()]>,
    log_limiter: LogLimiter,
    /// Decodes device numbers into checked values; hashes credentials.
    input: Input,
    actions: Actions,
    /// Arrival of the message being handled (reactions are timed from it).
    arrived: Instant,
    commit: GroupCommit,
    window: Arc<IngestWindow>,
    /// When dirty twins were last written.
    twins_written: Instant,
    /// Alarms, pianos in use, robots' temperatures (gauges).
    activity: Activity,
    /// Twin changes and telemetry windows for the upstream (`[uplink]`).
    uplink: Option<Feed>,
}

/// What ingest talks through: the broker link it publishes on, the control
/// channel from the API, the actions it feeds and the commit thread.
pub struct Wiring {
    /// The key credentials in events are hashed with.
    pub credential_key: [u8; 32],
    pub link_tx: LinkTx,
    pub control: Receiver<Control>,
    pub actions: Actions,
    pub commit: GroupCommit,
    /// The edge's flow control: told what ingest has read.
    pub window: Arc<IngestWindow>,
    /// What ingest adds to the uplink outbox, with an upstream.
    pub uplink: Option<Feed>,
}

impl Ingest {
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        config: IngestConfig,
        epoch: u64,
        wiring: Wiring,
    ) -> Result<Ingest, IngestError> {
        let Wiring {
            credential_key,
            link_tx,
            control,
            actions,
            commit,
            window,
            uplink,
        } = wiring;
        let revoked = store.revoked_ids()?.into_iter().collect();
        let activity = Activity::load(&store, metrics.clone(), &revoked)?;
        let log_limiter = LogLimiter::new(Duration::from_millis(config.rejection_log_interval_ms));
        let input = Input::new(TsWindow::from_config(&config), credential_key);
        Ok(Ingest {
            store,
            metrics,
            config,
            epoch,
            link_tx,
            control,
            twins: HashMap::new(),
            dirty: HashSet::new(),
            online: HashSet::new(),
            revoked,
            received: HashMap::new(),
            log_limiter,
            input,
            actions,
            arrived: Instant::now(),
            commit,
            window,
            twins_written: Instant::now(),
            activity,
            uplink,
        })
    }

    /// Subscribes the link to every device→hub channel.
    pub fn subscribe(&mut self) -> Result<(), IngestError> {
        // One filter per channel, none overlapping: overlapping filters
        // would deliver a message twice, and `/tenants/+/#` would echo the
        // hub's own commands and acks back.
        for channel in Channel::UPLINK {
            self.link_tx.subscribe(channel.filter_all_devices())?;
        }
        self.link_tx.subscribe(WAKE_TOPIC)?;
        Ok(())
    }

    /// Runs until `shutdown`, then writes every twin and fsyncs.
    pub fn run(
        mut self,
        mut link_rx: LinkRx,
        shutdown: CancellationToken,
    ) -> Result<(), IngestError> {
        let mut next_sweep = Instant::now();
        let mut next_tick = Instant::now();
        while !shutdown.is_cancelled() {
            crate::supervise::checkpoint()?;
            let batch = self.collect(&mut link_rx)?;
            self.apply_control();
            self.publish_reactions()?;
            if !batch.is_empty() {
                self.process(batch)?;
            }
            if Instant::now() >= next_tick {
                self.tick_actions();
                self.publish_reactions()?;
                next_tick = Instant::now() + ACTIONS_TICK;
            }
            if Instant::now() >= next_sweep {
                self.sweep_liveness()?;
                if let Some(feed) = &mut self.uplink {
                    feed.tick(unix_ms());
                }
                next_sweep = Instant::now() + LIVENESS_SWEEP;
            }
        }
        if let Some(feed) = &mut self.uplink {
            feed.finish(unix_ms());
        }
        self.commit.finish();
        self.write_twins()?;
        self.store.flush()?;
        tracing::info!("ingest stopped; twins written and store flushed");
        Ok(())
    }

    /// Waits up to 100 ms for the first message, then takes what is ready,
    /// up to `batch_max`. A wake-up (`broker::Waker`) ends the wait without
    /// adding to the batch.
    fn collect(&mut self, link_rx: &mut LinkRx) -> Result<Vec<Incoming>, IngestError> {
        let mut batch = Vec::new();
        let mut deadline = Instant::now() + Duration::from_millis(100);
        while batch.len() < self.config.batch_max {
            let notification = match link_rx.recv_deadline(deadline) {
                Ok(Some(notification)) => notification,
                Ok(None) | Err(LinkError::RecvTimeout(_)) => break,
                Err(error) => return Err(error.into()),
            };
            match notification {
                Notification::Forward(forward) if forward.publish.topic == WAKE_TOPIC => {}
                Notification::Forward(forward) => {
                    let publish = forward.publish;
                    self.window
                        .consumed(message_bytes(&publish.topic, &publish.payload));
                    batch.push(Incoming {
                        topic: publish.topic,
                        payload: publish.payload,
                        arrived: Instant::now(),
                    })
                }
                // Without `ready()` after `Unschedule` the router stops
                // delivering to the link.
                Notification::Unschedule => link_rx.ready()?,
                Notification::Disconnect(..) => {
                    tracing::error!("the router disconnected the hub's link");
                }
                _ => {}
            }
            deadline = Instant::now();
        }
        if batch.is_empty() {
            self.window.settle(WINDOW_SETTLE);
        }
        Ok(batch)
    }

    fn apply_control(&mut self) {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Revoked(id) => {
                    // The twin stays cached (and is written offline); the
                    // revoked set keeps anything the device sends out.
                    self.set_offline(&id);
                    self.activity.forget(&id);
                    self.revoked.insert(id);
                }
                Control::Provisioned(id) => {
                    self.revoked.remove(&id);
                    self.received.remove(&id);
                    self.twins.remove(&id);
                    self.dirty.remove(&id);
                    self.provisioned(&id);
                }
                Control::Command(record) => {
                    let online = self.online.contains(&record.device);
                    self.actions.adopt_command(record, online, unix_ms());
                }
                Control::AcknowledgeAlarm(id) => self.acknowledge_alarm(&id),
                Control::PlaceEnded(device) => self.place_ended(&device),
                Control::Room { center, id, rules } => self.actions.set_room(&center, &id, rules),
            }
        }
    }

    /// The fresh twin of a device just provisioned, for the gauges.
    fn provisioned(&mut self, device: &str) {
        match self.load_twin(device) {
            Ok(true) => {
                if let Some(twin) = self.twins.get(device) {
                    self.activity.provisioned(twin);
                }
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%error, device, "loading a new twin failed"),
        }
    }

    /// The activity gauges look at `device`'s twin and presence again.
    fn observe(&mut self, device: &str) {
        if let Some(twin) = self.twins.get(device) {
            let online = self.online.contains(device);
            self.activity.observe(twin, online);
        }
    }

    fn acknowledge_alarm(&mut self, device: &str) {
        self.with_twin(device, |actions, twin| {
            actions.acknowledge_alarm(twin, unix_ms())
        });
    }

    fn place_ended(&mut self, device: &str) {
        let online = self.online.contains(device);
        self.with_twin(device, |actions, twin| {
            actions.place_ended(twin, online, unix_ms())
        });
    }

    /// Runs `change` on `device`'s twin (loaded if needed) and marks it
    /// dirty when `change` says it changed it.
    fn with_twin(&mut self, device: &str, change: impl FnOnce(&mut Actions, &mut Twin) -> bool) {
        match self.load_twin(device) {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::error!(%error, device, "loading a twin failed");
                return;
            }
        }
        let Some(twin) = self.twins.get_mut(device) else {
            return;
        };
        if change(&mut self.actions, twin) {
            self.mark_dirty(device);
            self.observe(device);
        }
    }

    /// Command resends and expiries; robots whose session went silent.
    fn tick_actions(&mut self) {
        let now = unix_ms();
        for device in self.actions.tick(&self.online, now) {
            if !matches!(self.load_twin(&device), Ok(true)) {
                continue;
            }
            let online = self.online.contains(&device);
            if let Some(twin) = self.twins.get_mut(&device) {
                self.actions.trip_watchdog(twin, online, now);
                self.mark_dirty(&device);
                self.observe(&device);
            }
        }
    }

    /// Publishes the reactions queued so far, then times them.
    fn publish_reactions(&mut self) -> Result<(), IngestError> {
        for (topic, payload) in self.actions.take_outgoing() {
            self.link_tx.publish(topic, payload)?;
        }
        self.actions.observe_reactions();
        Ok(())
    }

    fn process(&mut self, batch: Vec<Incoming>) -> Result<(), IngestError> {
        self.metrics.ingest_batch_size.observe(batch.len() as f64);
        let mut outbox = Outbox::default();
        for message in &batch {
            self.arrived = message.arrived;
            self.handle_contained(message, &mut outbox)?;
            self.publish_reactions()?;
        }
        for message in &batch {
            self.metrics
                .ingest_latency
                .observe(message.arrived.elapsed().as_secs_f64());
        }
        if outbox.holds_events | self.actions.take_needs_flush() {
            // Twins first, so one fsync makes them durable with the events.
            self.write_twins()?;
            self.commit.commit(outbox.messages);
            return Ok(());
        }
        if self.twins_written.elapsed() >= TWIN_WRITE_INTERVAL {
            self.write_twins()?;
        }
        for (topic, payload) in outbox.messages {
            self.link_tx.publish(topic, payload)?;
        }
        Ok(())
    }

    /// `handle`, with a panic kept to the message that caused it (a last
    /// resort: device input is checked so that nothing panics). The message
    /// is rejected as `internal_error` and its device's twin is put back as
    /// it was before the message, so no half-applied twin outlives it.
    /// What else the message changed before it panicked (commands,
    /// interlock, occupancy, usage, presence) stays: each of those changes
    /// is whole on its own.
    fn handle_contained(
        &mut self,
        message: &Incoming,
        outbox: &mut Outbox,
    ) -> Result<(), IngestError> {
        let device = std::str::from_utf8(&message.topic)
            .ok()
            .and_then(Topic::parse)
            .map(|topic| topic.device);
        let before = device.map(|d| Snapshot::take(&self.twins, &self.dirty, d));
        if let Ok(result) = panic::catch_unwind(AssertUnwindSafe(|| self.handle(message, outbox))) {
            return result;
        }
        if let (Some(device), Some(before)) = (device, before) {
            before.restore(&mut self.twins, &mut self.dirty, device);
            self.observe(device);
        }
        // Reloaded (if it was dropped) so the rejection counts on the twin.
        let known = device.filter(|d| matches!(self.load_twin(d), Ok(true)));
        let rejection = Rejection::new(Reason::InternalError, "the hub failed handling it");
        let topic_name = String::from_utf8_lossy(&message.topic);
        self.reject(known, &topic_name, rejection, outbox);
        Ok(())
    }

    fn handle(&mut self, message: &Incoming, outbox: &mut Outbox) -> Result<(), IngestError> {
        let topic_name = String::from_utf8_lossy(&message.topic);
        let Some(topic) = Topic::parse(&topic_name) else {
            let rejection = Rejection::new(Reason::UnknownTopic, "not a contract v1 topic");
            self.reject(None, &topic_name, rejection, outbox);
            return Ok(());
        };
        let device = topic.device;
        if self.revoked.contains(device) {
            let rejection = Rejection::new(Reason::Revoked, "device revoked");
            self.reject(None, &topic_name, rejection, outbox);
            return Ok(());
        }
        if !self.load_twin(device)? {
            let rejection = Rejection::new(Reason::Unprovisioned, "device not provisioned");
            self.reject(Some(device), &topic_name, rejection, outbox);
            return Ok(());
        }
        let result = if message.payload.len() > self.config.max_payload_bytes {
            Err(Rejection::new(
                Reason::Oversize,
                format!(
                    "{} bytes, limit {}",
                    message.payload.len(),
                    self.config.max_payload_bytes
                ),
            ))
        } else {
            self.apply(device, topic.channel, &message.payload, outbox)
        };
        match result {
            Ok(()) => self.accepted(device, topic.channel),
            Err(rejection) => self.reject(Some(device), &topic_name, rejection, outbox),
        }
        self.observe(device);
        Ok(())
    }

    /// Applies a well-addressed message of a provisioned device.
    fn apply(
        &mut self,
        device: &str,
        channel: Channel,
        payload: &[u8],
        outbox: &mut Outbox,
    ) -> Result<(), Rejection> {
        match channel {
            Channel::Birth => {
                let birth = decode_birth(payload, self.twin(device).kind)?;
                self.twin(device).apply_birth(&birth);
                self.feed_twin(device, TwinChange::Birth);
                // A birth follows the device's subscriptions: open commands
                // can go out now.
                self.actions.device_online(device, unix_ms());
            }
            Channel::Status => match payload {
                b"online" => {}
                b"offline" => {
                    self.set_offline(device);
                    return Ok(());
                }
                _ => {
                    return Err(Rejection::new(
                        Reason::InvalidPayload,
                        "status must be online or offline",
                    ))
                }
            },
            Channel::Telemetry => {
                let telemetry = Telemetry::decode(payload)?;
                let kind = self.twin(device).kind;
                let checked = self.input.telemetry(telemetry, kind, unix_ms())?;
                let gap = self.twin(device).apply_telemetry(&checked.telemetry);
                self.count_gap(device, Channel::Telemetry, gap);
                if let (Some(feed), Some(twin)) = (&mut self.uplink, self.twins.get(device)) {
                    feed.telemetry(twin, &checked.telemetry, unix_ms());
                }
                if let Some(twin) = self.twins.get_mut(device) {
                    self.actions
                        .on_telemetry(twin, &checked, self.arrived, unix_ms());
                }
            }
            Channel::Event => self.apply_event(device, payload, outbox)?,
            Channel::CmdAck => {
                let ack = serde_json::from_slice::<CommandAck>(payload)
                    .map_err(|e| Rejection::from_json(&e))?;
                self.actions.on_ack(device, &ack, unix_ms());
            }
            Channel::EventAck | Channel::Cmd | Channel::Error => {
                return Err(Rejection::new(Reason::UnknownTopic, "a hub→device channel"));
            }
        }
        self.mark_seen(device);
        Ok(())
    }

    fn apply_event(
        &mut self,
        device: &str,
        payload: &[u8],
        outbox: &mut Outbox,
    ) -> Result<(), Rejection> {
        let event: Event = serde_json::from_slice(payload).map_err(|e| Rejection::from_json(&e))?;
        // invariant: `handle` loaded the twin before calling `apply`.
        let twin = self.twins.get(device).expect("twin loaded");
        let checked = self.input.event(event, twin, unix_ms())?;
        let (event, detail) = (checked.event, checked.detail);
        let twin = self.twin(device);
        let (center, kind) = (twin.center.clone(), twin.kind);
        let gap = twin.observe_event_seq(event.seq);
        self.count_gap(device, Channel::Event, gap);
        let ack = EventAck {
            id: event.id.clone(),
        };
        let stored = StoredEvent {
            device: device.to_string(),
            center: center.clone(),
            kind,
            received_at: unix_ms(),
            event,
        };
        let is_new = self.store.insert_event_once(&stored).map_err(|error| {
            // The device resends unacknowledged events: not acking is safe.
            tracing::error!(%error, "storing an event failed");
            Rejection::new(Reason::StoreFailed, "event could not be stored; resend")
        })?;
        if is_new {
            self.twin(device).events_stored += 1;
            self.metrics
                .events_stored
                .with_label_values(&[&center, kind.as_str()])
                .inc();
            if let Some(twin) = self.twins.get_mut(device) {
                let (event, at) = (&stored.event, stored.received_at);
                self.actions
                    .on_event(twin, event, &detail, self.arrived, at);
            }
        }
        // invariant: EventAck serializes.
        let ack = serde_json::to_vec(&ack).expect("ack serializes");
        outbox
            .messages
            .push((topic::for_device(device, Channel::EventAck), ack));
        outbox.holds_events = true;
        Ok(())
    }

    fn accepted(&mut self, device: &str, channel: Channel) {
        let Some(channel_index) = Channel::UPLINK.iter().position(|c| *c == channel) else {
            return;
        };
        if !self.received.contains_key(device) {
            let Some(twin) = self.twins.get(device) else {
                return;
            };
            // Label lookups hash three strings; do them once per device.
            let counters = Channel::UPLINK.map(|c| {
                let labels = [twin.center.as_str(), twin.kind.as_str(), c.label()];
                self.metrics.messages_received.with_label_values(&labels)
            });
            self.received.insert(device.to_string(), counters);
        }
        if let Some(counters) = self.received.get(device) {
            counters[channel_index].inc();
        }
        self.mark_dirty(device);
    }

    fn mark_dirty(&mut self, device: &str) {
        if !self.dirty.contains(device) {
            self.dirty.insert(device.to_string());
        }
    }

    fn reject(
        &mut self,
        device: Option<&str>,
        topic_name: &str,
        rejection: Rejection,
        outbox: &mut Outbox,
    ) {
        let reason = rejection.reason.as_str();
        self.metrics.rejected.with_label_values(&[reason]).inc();
        if self.log_limiter.allow(rejection.reason) {
            tracing::warn!(topic = topic_name, reason, detail = %rejection.detail, "message rejected");
        }
        let Some(device) = device else { return };
        if let Some(twin) = self.twins.get_mut(device) {
            twin.rejections += 1;
            self.mark_dirty(device);
        }
        let report = ErrorReport {
            topic: topic_name.to_string(),
            reason: format!("{reason}: {}", rejection.detail),
        };
        // invariant: ErrorReport serializes.
        let payload = serde_json::to_vec(&report).expect("report serializes");
        outbox
            .messages
            .push((topic::for_device(device, Channel::Error), payload));
    }

    fn mark_seen(&mut self, device: &str) {
        let epoch = self.epoch;
        let Some(twin) = self.twins.get_mut(device) else {
            return;
        };
        let now = unix_ms();
        if twin.seen(now, epoch) == Presence::CameOnline {
            self.metrics
                .devices_online
                .with_label_values(&[&twin.center, twin.kind.as_str()])
                .inc();
            self.online.insert(device.to_string());
            self.actions.device_online(device, now);
            self.feed_twin(device, TwinChange::Online);
        }
    }

    /// Tells the upstream of a twin change (with an uplink).
    fn feed_twin(&self, device: &str, change: TwinChange) {
        if let (Some(feed), Some(twin)) = (&self.uplink, self.twins.get(device)) {
            feed.twin(twin, change, unix_ms());
        }
    }

    fn set_offline(&mut self, device: &str) {
        let epoch = self.epoch;
        let Some(twin) = self.twins.get_mut(device) else {
            return;
        };
        if twin.went_offline(epoch) == Presence::WentOffline {
            self.metrics
                .devices_online
                .with_label_values(&[&twin.center, twin.kind.as_str()])
                .dec();
            self.online.remove(device);
            self.dirty.insert(device.to_string());
            self.actions.device_offline(device);
            self.observe(device);
            self.feed_twin(device, TwinChange::Offline);
        }
    }

    fn count_gap(&self, device: &str, channel: Channel, gap: u64) {
        if gap == 0 {
            return;
        }
        if let Some(twin) = self.twins.get(device) {
            self.metrics
                .seq_gaps
                .with_label_values(&[&twin.center, twin.kind.as_str(), channel.label()])
                .inc_by(gap);
        }
    }

    /// Marks offline every device silent for 1.5× its keepalive.
    fn sweep_liveness(&mut self) -> Result<(), IngestError> {
        let now = unix_ms();
        let default_keepalive = self.config.default_keepalive_secs;
        let silent: Vec<String> = self
            .online
            .iter()
            .filter(|id| {
                self.twins
                    .get(*id)
                    .and_then(|t| t.liveness_deadline(default_keepalive))
                    .is_some_and(|deadline| deadline < now)
            })
            .cloned()
            .collect();
        for id in silent {
            tracing::info!(device = %id, "no message for 1.5x keepalive: offline");
            self.set_offline(&id);
        }
        self.write_twins()
    }

    /// Loads a twin into the cache; false when the device is unknown.
    fn load_twin(&mut self, device: &str) -> Result<bool, IngestError> {
        if self.twins.contains_key(device) {
            return Ok(true);
        }
        match self.store.twin(device)? {
            Some(twin) => {
                self.twins.insert(device.to_string(), twin);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn twin(&mut self, device: &str) -> &mut Twin {
        // invariant: callers run after `load_twin` returned true for this
        // device within the same message.
        self.twins.get_mut(device).expect("twin loaded")
    }

    /// Writes the twins, room counts and visits changed since last time.
    fn write_twins(&mut self) -> Result<(), IngestError> {
        self.twins_written = Instant::now();
        self.actions.flush_counts()?;
        if self.dirty.is_empty() {
            return Ok(());
        }
        let twins = self.dirty.iter().filter_map(|id| self.twins.get(id));
        self.store.put_twins(twins)?;
        self.dirty.clear();
        Ok(())
    }
}

/// A device's cached twin as it was before a message, to put back if
/// handling the message panics.
#[derive(Debug, Clone, PartialEq)]
enum Snapshot {
    /// The twin held changes not written yet: a copy of it.
    Dirty(Box<Twin>),
    /// The cache held the stored twin or none: drop it, the store has it.
    Stored,
}

impl Snapshot {
    /// Copies only a dirty twin (a clean one equals the store's), so most
    /// messages cost no copy.
    fn take(twins: &HashMap<String, Twin>, dirty: &HashSet<String>, device: &str) -> Snapshot {
        match twins.get(device) {
            Some(twin) if dirty.contains(device) => Snapshot::Dirty(Box::new(twin.clone())),
            _ => Snapshot::Stored,
        }
    }

    fn restore(self, twins: &mut HashMap<String, Twin>, dirty: &mut HashSet<String>, device: &str) {
        match self {
            Snapshot::Dirty(twin) => {
                twins.insert(device.to_string(), *twin);
                dirty.insert(device.to_string());
            }
            Snapshot::Stored => {
                twins.remove(device);
                dirty.remove(device);
            }
        }
    }
}

pub(crate) fn decode_birth(payload: &[u8], provisioned: DeviceKind) -> Result<Birth, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| Rejection::from_json(&e))?;
    if let Some(kind) = value.get("kind").and_then(|k| k.as_str()) {
        if DeviceKind::parse(kind).is_none() {
            return Err(Rejection::new(
                Reason::UnknownKind,
                format!("unknown kind {kind:?}"),
            ));
        }
    }
    let birth: Birth = serde_json::from_value(value).map_err(|e| Rejection::from_json(&e))?;
    if birth.kind != provisioned {
        return Err(Rejection::new(
            Reason::KindMismatch,
            format!("provisioned as {provisioned}, birth says {}", birth.kind),
        ));
    }
    Ok(birth)
}

/// At most one log line per reason per interval.
struct LogLimiter {
    interval: Duration,
    last: HashMap<Reason, Instant>,
}

impl LogLimiter {
    fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: HashMap::new(),
        }
    }

    fn allow(&mut self, reason: Reason) -> bool {
        let now = Instant::now();
        match self.last.get(&reason) {
            Some(last) if now.duration_since(*last) < self.interval => false,
            _ => {
                self.last.insert(reason, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_birth(payload: &str, expect: Result<(), Reason>) {
        let got = decode_birth(payload.as_bytes(), DeviceKind::Piano)
            .map(|_| ())
            .map_err(|r| r.reason);
        assert_eq!(got, expect, "{payload}");
    }

    #[test]
    fn birth_rejections_name_their_reason() {
        check_birth(r#"{"kind":"piano","fw":"1","model":"m"}"#, Ok(()));
        check_birth(
            r#"{"kind":"piano","fw":"1","model":"m","keepalive":30}"#,
            Ok(()),
        );
        check_birth(
            r#"{"kind":"toaster","fw":"1","model":"m"}"#,
            Err(Reason::UnknownKind),
        );
        check_birth(
            r#"{"kind":"gate","fw":"1","model":"m"}"#,
            Err(Reason::KindMismatch),
        );
        check_birth(r#"{"kind":"piano"}"#, Err(Reason::InvalidPayload));
        check_birth(
            r#"{"kind":"piano","fw":1,"model":"m"}"#,
            Err(Reason::InvalidPayload),
        );
        check_birth("{not json", Err(Reason::MalformedJson));
    }

    fn check_restore(cached: bool, dirty: bool, expect_cached: bool) {
        let before = crate::records::twin::provisioned(DeviceKind::Counter);
        let mut twins = HashMap::new();
        let mut dirty_set = HashSet::new();
        if cached {
            twins.insert("d".to_string(), before.clone());
        }
        if dirty {
            dirty_set.insert("d".to_string());
        }
        let snapshot = Snapshot::take(&twins, &dirty_set, "d");
        // Handling a message got halfway, then panicked.
        let half = twins.entry("d".into()).or_insert_with(|| before.clone());
        half.messages += 1;
        half.session_since = Some(1);
        dirty_set.insert("d".into());
        snapshot.restore(&mut twins, &mut dirty_set, "d");
        let what = format!("cached {cached}, dirty {dirty}");
        assert_eq!(twins.get("d"), expect_cached.then_some(&before), "{what}");
        assert_eq!(dirty_set.contains("d"), expect_cached, "{what}");
    }

    #[test]
    fn a_panicking_message_leaves_its_twin_as_before() {
        check_restore(true, true, true);
        check_restore(true, false, false);
        check_restore(false, false, false);
    }

    #[test]
    fn a_panic_is_contained_and_the_state_restored() {
        let mut twins = HashMap::from([(
            "d".to_string(),
            crate::records::twin::provisioned(DeviceKind::Gate),
        )]);
        let mut dirty = HashSet::from(["d".to_string()]);
        let snapshot = Snapshot::take(&twins, &dirty, "d");
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(twin) = twins.get_mut("d") {
                twin.rejections = 99;
            }
            panic!("a bug while handling a message");
        }));
        assert!(outcome.is_err());
        snapshot.restore(&mut twins, &mut dirty, "d");
        assert_eq!(twins.get("d").map(|t| t.rejections), Some(0));
    }

    #[test]
    fn input_problems_name_their_reasons() {
        use crate::input::InputError;
        for (error, reason) in [
            (InputError::TsPastCalendar(u64::MAX), Reason::InvalidTs),
            (InputError::Minutes, Reason::InvalidDuration),
            (InputError::Seq(0), Reason::OutOfRange),
            (InputError::People("in"), Reason::InvalidPayload),
        ] {
            assert_eq!(Rejection::from(error).reason, reason);
        }
    }

    #[test]
    fn log_limiter_allows_one_line_per_reason_per_interval() {
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        assert!(limiter.allow(Reason::Oversize));
        assert!(!limiter.allow(Reason::Oversize));
        assert!(limiter.allow(Reason::WrongType));
    }
}
