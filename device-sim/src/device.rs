//! One simulated device end to end: connect, announce itself after every
//! CONNACK, report telemetry, raise events until the hub acknowledges them,
//! obey commands, and say goodbye on shutdown.
//!
//! The rules live in `behaviour` (what the device does) and `outbox` (event
//! bookkeeping); this module wires them to the MQTT connection and keeps the
//! device's counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use protocol::api::Provisioned;
use protocol::topic::{for_device, Channel};
use protocol::{
    Birth, Command, CommandAck, DeviceKind, ErrorReport, EventAck, Telemetry, STATUS_OFFLINE,
    STATUS_ONLINE,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::behaviour::{Behaviour, EventDraft, World};
use crate::mqtt::{self, Endpoint, Notice};
use crate::outbox::{Outbox, Sent};
use crate::plan::DeviceSpec;
use crate::simtime::SimClock;
use crate::stats::{Counters, DayCounts};
use crate::unix_ms;

/// Firmware version every simulated device reports in its birth.
const FW: &str = concat!("sim-", env!("CARGO_PKG_VERSION"));
/// A therapy robot in a session reports at least this often: the hub's
/// safety watchdog stops a session that goes quiet for a few seconds.
const ROBOT_TELEMETRY_PERIOD: Duration = Duration::from_secs(1);
/// Commands a device remembers having answered.
const ANSWERED_KEPT: usize = 64;
/// Mixed into a device's seed for its reconnect jitter, so the backoff
/// draws do not shift the behaviour's random sequence.
const BACKOFF_SALT: u64 = 0x6261_636b_6f66_6621;

/// How every device of a run behaves on the wire.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub endpoint: Endpoint,
    /// Time between telemetry messages (capped at the keepalive).
    pub telemetry_interval: Duration,
    /// An unacknowledged event is resent once it was sent this long ago.
    pub resend_interval: Duration,
    /// On shutdown, how long to wait for outstanding event acks.
    pub drain_timeout: Duration,
    /// On shutdown, how long the `offline` + DISCONNECT goodbye may take.
    pub goodbye_timeout: Duration,
    /// Tells this run's event ids from earlier runs' (see [`Outbox::new`]).
    pub run_id: String,
    /// The simulated clock every `ts` comes from.
    pub clock: SimClock,
}

impl DeviceSettings {
    /// Telemetry period: the configured interval, but at least one message
    /// per keepalive so the hub never times the device out (and never zero,
    /// which a tokio interval refuses).
    pub fn telemetry_period(&self, kind: DeviceKind) -> Duration {
        let period = match kind {
            DeviceKind::TherapyRobot => self.telemetry_interval.min(ROBOT_TELEMETRY_PERIOD),
            _ => self.telemetry_interval,
        };
        period
            .min(self.endpoint.keepalive)
            .max(Duration::from_millis(1))
    }

    /// How often the outbox is checked for events due to be resent.
    fn resend_check_period(&self) -> Duration {
        (self.resend_interval / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// What a device did, once it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    pub counters: Counters,
    /// What it reported per local day.
    pub daily: BTreeMap<NaiveDate, DayCounts>,
    /// It published `offline` and its DISCONNECT went out.
    pub clean_goodbye: bool,
}

/// The topics of one device, formatted once.
#[derive(Debug, Clone)]
struct Topics {
    status: String,
    birth: String,
    telemetry: String,
    event: String,
    cmd: String,
    cmd_ack: String,
    event_ack: String,
    error: String,
}

impl Topics {
    fn new(id: &str) -> Self {
        let t = |channel| for_device(id, channel);
        Topics {
            status: t(Channel::Status),
            birth: t(Channel::Birth),
            telemetry: t(Channel::Telemetry),
            event: t(Channel::Event),
            cmd: t(Channel::Cmd),
            cmd_ack: t(Channel::CmdAck),
            event_ack: t(Channel::EventAck),
            error: t(Channel::Error),
        }
    }
}

/// Where the device is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Live,
    /// Shutting down: no new telemetry or events, waiting for acks until
    /// the deadline.
    Draining {
        until: Instant,
    },
}

/// The state of one running device.
struct Device {
    id: String,
    center: String,
    world: Arc<World>,
    /// Simulated time up to which the device has lived.
    lived_until_ms: u64,
    daily: BTreeMap<NaiveDate, DayCounts>,
    topics: Topics,
    behaviour: Behaviour,
    outbox: Outbox,
    rng: StdRng,
    telemetry_seq: u64,
    counters: Counters,
    connected: bool,
    client: AsyncClient,
    settings: Arc<DeviceSettings>,
    /// The latest commands answered, newest last: the hub resends a command
    /// until it hears back, and a device acts once per command id.
    answered: VecDeque<CommandAck>,
}

/// Runs the device `spec` of a center (`world`) with `creds` until
/// `shutdown` fires, then says goodbye and reports what it did.
pub async fn run_device(
    spec: DeviceSpec,
    creds: Provisioned,
    settings: Arc<DeviceSettings>,
    world: Arc<World>,
    shutdown: CancellationToken,
) -> DeviceReport {
    let options = mqtt::options(&creds, &settings.endpoint);
    let conn = mqtt::connect(options, StdRng::seed_from_u64(spec.seed ^ BACKOFF_SALT));
    let mut device = Device {
        id: spec.id.clone(),
        center: spec.center.clone(),
        world,
        lived_until_ms: settings.clock.now_ms(),
        daily: BTreeMap::new(),
        topics: Topics::new(&spec.id),
        behaviour: Behaviour::new(&spec),
        outbox: Outbox::new(&spec.id, &settings.run_id),
        rng: StdRng::seed_from_u64(spec.seed),
        telemetry_seq: 0,
        counters: Counters::default(),
        connected: false,
        client: conn.client,
        settings,
        answered: VecDeque::new(),
    };
    let mut notices = conn.notices;
    device.live_then_drain(&mut notices, &shutdown).await;
    let clean_goodbye = device.goodbye(conn.task, conn.abort).await;
    device.counters.events_unacked = device.outbox.len() as u64;
    DeviceReport {
        counters: device.counters,
        daily: device.daily,
        clean_goodbye,
    }
}

impl Device {
    /// The device's main loop: live until `shutdown`, then draining
    /// outstanding event acks for at most the drain timeout.
    async fn live_then_drain(
        &mut self,
        notices: &mut mpsc::UnboundedReceiver<Notice>,
        shutdown: &CancellationToken,
    ) {
        let period = self.settings.telemetry_period(self.behaviour.kind());
        // Spread the fleet's telemetry over the period instead of bursts.
        let first = Instant::now() + period.mul_f64(self.rng.gen_range(0.0..1.0));
        let mut telemetry = tokio::time::interval_at(first, period);
        telemetry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut resend = tokio::time::interval(self.settings.resend_check_period());
        resend.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut phase = Phase::Live;
        loop {
            let until = match phase {
                Phase::Live => None,
                Phase::Draining { .. } if !self.connected || self.outbox.is_empty() => return,
                Phase::Draining { until } => Some(until),
            };
            tokio::select! {
                _ = shutdown.cancelled(), if until.is_none() => {
                    phase = Phase::Draining { until: Instant::now() + self.settings.drain_timeout };
                }
                _ = sleep_until_some(until), if until.is_some() => return,
                Some(notice) = notices.recv() => self.on_notice(notice),
                _ = telemetry.tick(), if until.is_none() => self.on_tick(),
                _ = resend.tick() => self.flush_outbox(),
            }
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Connected => self.on_connected(),
            Notice::Disconnected => self.connected = false,
            Notice::Message { topic, payload } => self.on_message(&topic, &payload),
        }
    }

    /// After every CONNACK (a clean session): subscribe, announce, and
    /// resend every unacknowledged event.
    fn on_connected(&mut self) {
        self.connected = true;
        self.counters.connects += 1;
        tracing::debug!(device = %self.id, "connected");
        let filters = [
            SubscribeFilter::new(self.topics.cmd.clone(), QoS::AtLeastOnce),
            SubscribeFilter::new(self.topics.event_ack.clone(), QoS::AtLeastOnce),
            SubscribeFilter::new(self.topics.error.clone(), QoS::AtMostOnce),
        ];
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::warn!(device = %self.id, error = %e, "cannot subscribe");
        }
        self.publish(&self.topics.status, true, STATUS_ONLINE.into());
        let birth = Birth {
            kind: self.behaviour.kind(),
            fw: FW.to_owned(),
            model: model(self.behaviour.kind()).to_owned(),
            keepalive: u16::try_from(self.settings.endpoint.keepalive.as_secs()).ok(),
        };
        // invariant: a struct of strings and numbers always serializes.
        self.publish(
            &self.topics.birth,
            false,
            serde_json::to_vec(&birth).expect("birth"),
        );
        self.outbox.make_all_due();
        self.flush_outbox();
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        if topic == self.topics.cmd {
            self.on_command(payload);
        } else if topic == self.topics.event_ack {
            self.on_event_ack(payload);
        } else if topic == self.topics.error {
            self.on_error_report(payload);
        } else {
            tracing::debug!(device = %self.id, topic, "message on an unexpected topic");
        }
    }

    fn on_command(&mut self, payload: &[u8]) {
        let cmd: Command = match serde_json::from_slice(payload) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.counters.commands_malformed += 1;
                tracing::warn!(device = %self.id, error = %e, "malformed command");
                return;
            }
        };
        if let Some(ack) = self.answered.iter().find(|a| a.id == cmd.id).cloned() {
            tracing::debug!(device = %self.id, cmd = %cmd.id, "command again: answered again, not obeyed");
            self.publish_ack(&ack);
            return;
        }
        self.counters.commands_received += 1;
        let sim_now = self.settings.clock.now_ms();
        let outcome = self.behaviour.apply_command(
            &cmd,
            (unix_ms(), sim_now),
            &self.world,
            &mut self.counters,
        );
        if !outcome.ack.ok {
            self.counters.commands_refused += 1;
        }
        tracing::debug!(device = %self.id, cmd = %cmd.id, op = %cmd.op, ok = outcome.ack.ok, "command");
        self.publish_ack(&outcome.ack);
        if self.answered.len() == ANSWERED_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back(outcome.ack);
        self.raise(outcome.events);
    }

    fn publish_ack(&self, ack: &CommandAck) {
        // invariant: a struct of strings and a bool always serializes.
        let payload = serde_json::to_vec(ack).expect("cmd ack");
        self.publish(&self.topics.cmd_ack, false, payload);
    }

    fn on_event_ack(&mut self, payload: &[u8]) {
        match serde_json::from_slice::<EventAck>(payload) {
            Ok(ack) if self.outbox.ack(&ack.id) => self.counters.events_acked += 1,
            Ok(_) => self.counters.duplicate_acks += 1,
            Err(e) => tracing::warn!(device = %self.id, error = %e, "malformed event ack"),
        }
    }

    fn on_error_report(&mut self, payload: &[u8]) {
        self.counters.errors_reported += 1;
        match serde_json::from_slice::<ErrorReport>(payload) {
            Ok(r) => {
                tracing::warn!(device = %self.id, topic = %r.topic, reason = %r.reason, "hub rejected a message")
            }
            Err(e) => tracing::warn!(device = %self.id, error = %e, "malformed error report"),
        }
    }

    /// One telemetry period: the world moves on to the simulated now, a
    /// local day at a time (events happen even while offline and wait in
    /// the outbox); each day's telemetry goes out if connected, stamped
    /// inside that day so the hub counts it on the right day.
    fn on_tick(&mut self) {
        let now = self.settings.clock.now_ms();
        let calendar = self.world.crowd.calendar;
        for (from, to) in calendar.split_days(self.lived_until_ms, now) {
            let events = self.behaviour.step(
                &self.world,
                &self.center,
                (from, to),
                &mut self.rng,
                &mut self.counters,
            );
            self.raise(events);
            if self.connected {
                self.publish_telemetry(to - 1);
            }
        }
        self.lived_until_ms = self.lived_until_ms.max(now);
    }

    /// Telemetry stamped `ts` with the next seq. The seq (and the deltas)
    /// are used up only if the client took the message.
    fn publish_telemetry(&mut self, ts: u64) {
        let telemetry = Telemetry {
            ts,
            seq: self.telemetry_seq + 1,
            fields: self.behaviour.telemetry_fields(),
        };
        if !self.publish(&self.topics.telemetry, false, telemetry.encode()) {
            return;
        }
        self.telemetry_seq = telemetry.seq;
        self.counters.telemetry_sent += 1;
        let flow = self.behaviour.commit_report();
        self.counters.people_in += flow.entered;
        self.counters.people_out += flow.left;
        let day = self.day_of(ts);
        day.people_in += flow.entered;
        day.people_out += flow.left;
    }

    /// The counts of the local day `ms` falls on.
    fn day_of(&mut self, ms: u64) -> &mut DayCounts {
        let date = self.world.crowd.calendar.day(ms);
        self.daily.entry(date).or_default()
    }

    /// Files new events in the outbox and sends them.
    fn raise(&mut self, events: Vec<EventDraft>) {
        if events.is_empty() {
            return;
        }
        for draft in events {
            let at = draft.at_ms;
            match draft.passage_direction() {
                Some("in") => self.day_of(at).passages_in += 1,
                Some("out") => self.day_of(at).passages_out += 1,
                _ => {}
            }
            self.outbox.create(draft, at);
        }
        self.flush_outbox();
    }

    /// Publishes every due event (new ones, and those unacknowledged for a
    /// resend interval) until the client's queue is full.
    fn flush_outbox(&mut self) {
        if !self.connected {
            return;
        }
        let now = Instant::now().into_std();
        for seq in self.outbox.due(now, self.settings.resend_interval) {
            // invariant: `due` returned seqs of waiting events.
            let event = self.outbox.event(seq).expect("due event waits");
            // invariant: an Event (strings, numbers, a JSON map) always serializes.
            let payload = serde_json::to_vec(event).expect("event");
            if !self.publish(&self.topics.event, false, payload) {
                break;
            }
            match self.outbox.mark_sent(seq, now) {
                Some(Sent::First) => self.counters.events_sent += 1,
                Some(Sent::Resend) => self.counters.resends += 1,
                None => {}
            }
        }
    }

    /// Hands a QoS 1 publish to the client without waiting; `false` if its
    /// queue is full or the connection task ended.
    fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(device = %self.id, topic, error = %e, "publish not queued");
                false
            }
        }
    }

    /// Publishes `offline` (retained) and disconnects cleanly, then waits
    /// for the connection task to finish; gives up after the goodbye
    /// timeout. Returns whether the goodbye went out.
    async fn goodbye(
        &self,
        mut task: tokio::task::JoinHandle<()>,
        abort: CancellationToken,
    ) -> bool {
        let said = self.connected
            && self.publish(&self.topics.status, true, STATUS_OFFLINE.into())
            && self.client.try_disconnect().is_ok();
        let finished = said
            && tokio::time::timeout(self.settings.goodbye_timeout, &mut task)
                .await
                .is_ok();
        if !finished {
            abort.cancel();
            if let Err(e) = task.await {
                tracing::warn!(device = %self.id, error = %e, "connection task failed");
            }
            tracing::debug!(device = %self.id, connected = self.connected, "no clean goodbye");
        }
        finished
    }
}

/// Sleeps until `until`, or forever for `None`.
async fn sleep_until_some(until: Option<Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The model name in a kind's birth.
fn model(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Piano => "sim-ai-piano",
        DeviceKind::TherapyRobot => "sim-moxa-robot",
        DeviceKind::Gate => "sim-gym-gate",
        DeviceKind::Counter => "sim-people-counter",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(telemetry: u64, keepalive: u64, resend_ms: u64) -> DeviceSettings {
        DeviceSettings {
            endpoint: Endpoint {
                host: "localhost".into(),
                port: 8883,
                keepalive: Duration::from_secs(keepalive),
            },
            telemetry_interval: Duration::from_secs(telemetry),
            resend_interval: Duration::from_millis(resend_ms),
            drain_timeout: Duration::from_secs(1),
            goodbye_timeout: Duration::from_secs(1),
            run_id: "r".into(),
            clock: SimClock::new(0, 1.0),
        }
    }

    #[test]
    fn telemetry_goes_out_at_least_once_per_keepalive() {
        let piano = DeviceKind::Piano;
        assert_eq!(
            settings(5, 30, 5000).telemetry_period(piano),
            Duration::from_secs(5)
        );
        assert_eq!(
            settings(60, 30, 5000).telemetry_period(piano),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn therapy_robots_report_every_second_for_the_watchdog() {
        let robot = DeviceKind::TherapyRobot;
        assert_eq!(
            settings(5, 30, 5000).telemetry_period(robot),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn resend_checks_run_often_enough_but_not_too_often() {
        assert_eq!(
            settings(5, 30, 5000).resend_check_period(),
            Duration::from_secs(1)
        );
        assert_eq!(
            settings(5, 30, 1000).resend_check_period(),
            Duration::from_millis(200)
        );
        assert_eq!(
            settings(5, 30, 10).resend_check_period(),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn topics_are_under_the_device_tenant() {
        let t = Topics::new("c01piano01");
        assert_eq!(t.cmd, "/tenants/c01piano01/cmd");
        assert_eq!(t.cmd_ack, "/tenants/c01piano01/cmd/ack");
        assert_eq!(t.event_ack, "/tenants/c01piano01/event/ack");
        assert_eq!(t.status, "/tenants/c01piano01/status");
    }
}
