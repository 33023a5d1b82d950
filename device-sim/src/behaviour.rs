//! What a simulated device does: its physical state per kind, the telemetry
//! fields it reports, the events it raises and how it obeys commands.
//!
//! Devices advance window by window of simulated time (`[from, to)`, never
//! across a local midnight). Counters and gates read their doors from the
//! center's [`Crowd`]; pianos and therapy robots run sessions in opening
//! hours. Pure: time, the crowd and randomness come in as arguments, so
//! every rule here is unit-tested without a broker.

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::{Command, CommandAck, DeviceKind, FieldValue};
use rand::Rng;
use serde_json::{Map, Value};

use chrono::NaiveDate;

use crate::crowd::{member_credential, CenterCrowd, Crowd, GymVisit};
use crate::plan::DeviceSpec;
use crate::stats::Counters;

const MINUTE_MS: u64 = 60_000;
/// Chance per minute of opening hours that an idle piano gets a walk-in.
const P_PIANO_WALK_IN: f64 = 1.0 / 40.0;
/// Chance per minute of opening hours that an idle robot starts a session.
const P_ROBOT_SESSION: f64 = 1.0 / 60.0;
/// Key presses per minute of play.
const KEYS_PER_MINUTE: std::ops::Range<u64> = 30..150;
/// Room temperature a robot cools down to, °C.
const AMBIENT_C: f64 = 24.0;
/// Temperature a working robot holds during a session, °C.
const SETPOINT_C: f64 = 42.0;
/// How fast a robot heats and cools, °C per minute.
const HEAT_RATE: f64 = 1.5;
const COOL_RATE: f64 = 1.0;
/// How fast a faulty robot keeps heating past its setpoint, °C per minute,
/// and where its thermal fuse finally stops it.
const RUNAWAY_RATE: f64 = 0.8;
const FUSE_C: f64 = 80.0;
/// A booked session the hub unlocked without `until` lasts this long.
const DEFAULT_BOOKED_MS: u64 = 60 * MINUTE_MS;

/// An event the device wants to raise at simulated time `at_ms`; the outbox
/// gives it its id and seq.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_type: &'static str,
    pub body: Map<String, Value>,
    pub at_ms: u64,
}

impl EventDraft {
    fn new(event_type: &'static str, at_ms: u64) -> Self {
        EventDraft {
            event_type,
            body: Map::new(),
            at_ms,
        }
    }

    fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.body.insert(name.to_owned(), value.into());
        self
    }

    /// `Some(direction)` for a gate passage.
    pub fn passage_direction(&self) -> Option<&str> {
        (self.event_type == "passage")
            .then(|| self.body.get("direction").and_then(Value::as_str))
            .flatten()
    }
}

/// The answer to a command and the events obeying it raised.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    pub ack: CommandAck,
    pub events: Vec<EventDraft>,
}

/// Whether a kind knows an op, and the event obeying it raised.
#[derive(Debug, Clone, PartialEq)]
enum Obeyed {
    UnknownOp,
    Done(Option<EventDraft>),
}

/// People a counter reported in one telemetry message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub entered: u64,
    pub left: u64,
}

/// What a device of a center shares with the others and the run.
#[derive(Debug, Clone)]
pub struct World {
    pub crowd: Arc<CenterCrowd>,
    /// Gates per center (they share the gym's visitors).
    pub gates: usize,
    /// Seed of the run (credentials derive from it).
    pub seed: u64,
    /// Chance that a therapy session runs into an overheat fault.
    pub overheat_chance: f64,
    /// Simulated time a gate waits for the hub's `open`/`deny`.
    pub answer_timeout_ms: u64,
}

impl World {
    fn is_open(&self, ms: u64) -> bool {
        self.crowd.is_open(ms)
    }

    /// The crowd of the local day `ms` falls on.
    fn crowd_on(&self, ms: u64) -> (NaiveDate, Arc<Crowd>) {
        let day = self.crowd.calendar.day(ms);
        (day, self.crowd.day(day))
    }
}

/// A session (piano playing, robot treatment) until `ends_ms`.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    ends_ms: u64,
    /// The command that started it (a booking's `unlock`), if any.
    cmd: Option<String>,
}

/// Marks what caused an event: a command (with its id) or a walk-in.
fn source(draft: EventDraft, cmd: Option<&str>) -> EventDraft {
    match cmd {
        Some(id) => draft.with("source", "cmd").with("cmd", id),
        None => draft.with("source", "walk_in"),
    }
}

/// Splits `[from, to)` into steps of at most a minute: `(start, minutes)`.
fn minutes(from: u64, to: u64) -> impl Iterator<Item = (u64, f64)> {
    (from..to)
        .step_by(MINUTE_MS as usize)
        .map(move |t| (t, (to.min(t + MINUTE_MS) - t) as f64 / MINUTE_MS as f64))
}

/// An AI piano: walk-in and booked sessions with key presses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Piano {
    session: Option<Session>,
    keys_since_report: u64,
    keys_in_session: u64,
}

impl Piano {
    fn start(&mut self, at: u64, ends_ms: u64, cmd: Option<&str>) -> Option<EventDraft> {
        if self.session.is_some() {
            return None;
        }
        self.session = Some(Session {
            ends_ms,
            cmd: cmd.map(str::to_owned),
        });
        self.keys_in_session = 0;
        Some(source(EventDraft::new("session_start", at), cmd))
    }

    fn end(&mut self, at: u64, cmd: Option<&str>) -> Option<EventDraft> {
        self.session.take().map(|_| {
            source(EventDraft::new("session_end", at), cmd)
                .with("key_presses", self.keys_in_session)
        })
    }

    fn step(
        &mut self,
        world: &World,
        from: u64,
        to: u64,
        rng: &mut impl Rng,
        c: &mut Counters,
    ) -> Vec<EventDraft> {
        let mut events = Vec::new();
        for (t, span) in minutes(from, to) {
            match &self.session {
                Some(s) if s.ends_ms <= t => events.extend(self.end(t, None)),
                Some(_) => {
                    let keys = (rng.gen_range(KEYS_PER_MINUTE) as f64 * span) as u64;
                    self.keys_since_report += keys;
                    self.keys_in_session += keys;
                }
                None if world.is_open(t) && rng.gen_bool(P_PIANO_WALK_IN * span) => {
                    let ends = t + rng.gen_range(20..60) * MINUTE_MS;
                    events.extend(self.start(t, ends, None));
                    c.sessions += 1;
                }
                None => {}
            }
        }
        events
    }

    fn obey(&mut self, cmd: &Command, now: u64, c: &mut Counters) -> Obeyed {
        match cmd.op.as_str() {
            "unlock" => {
                let until = cmd.args.get("until").and_then(Value::as_u64);
                let started =
                    self.start(now, until.unwrap_or(now + DEFAULT_BOOKED_MS), Some(&cmd.id));
                c.sessions += u64::from(started.is_some());
                Obeyed::Done(started)
            }
            "lock" => Obeyed::Done(self.end(now, Some(&cmd.id))),
            "deny" => Obeyed::Done(
                self.end(now, Some(&cmd.id))
                    .map(|e| e.with("reason", "denied")),
            ),
            _ => Obeyed::UnknownOp,
        }
    }
}

/// A moxibustion robot: heats to its setpoint during a session, cools down
/// after; a faulty session keeps heating until something stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct TherapyRobot {
    session: Option<Session>,
    heating: bool,
    faulty: bool,
    temp_c: f64,
}

impl Default for TherapyRobot {
    fn default() -> Self {
        TherapyRobot {
            session: None,
            heating: false,
            faulty: false,
            temp_c: AMBIENT_C,
        }
    }
}

impl TherapyRobot {
    fn start(&mut self, at: u64, ends_ms: u64, faulty: bool) -> Option<EventDraft> {
        if self.session.is_some() {
            return None;
        }
        self.session = Some(Session { ends_ms, cmd: None });
        self.heating = true;
        self.faulty = faulty;
        Some(source(EventDraft::new("session_start", at), None))
    }

    fn end(&mut self, at: u64, cmd: Option<&str>) -> Option<EventDraft> {
        self.heating = false;
        self.faulty = false;
        self.session
            .take()
            .map(|_| source(EventDraft::new("session_end", at), cmd))
    }

    /// Heats towards the setpoint (past it when faulty, up to the fuse),
    /// cools towards ambient otherwise.
    fn drift_temperature(&mut self, minutes: f64) {
        self.temp_c = match (self.heating, self.faulty) {
            (true, false) if self.temp_c < SETPOINT_C => {
                (self.temp_c + HEAT_RATE * minutes).min(SETPOINT_C)
            }
            (true, false) => self.temp_c,
            (true, true) if self.temp_c < SETPOINT_C => self.temp_c + HEAT_RATE * minutes,
            (true, true) => (self.temp_c + RUNAWAY_RATE * minutes).min(FUSE_C),
            (false, _) => (self.temp_c - COOL_RATE * minutes).max(AMBIENT_C),
        };
    }

    fn step(
        &mut self,
        world: &World,
        from: u64,
        to: u64,
        rng: &mut impl Rng,
        c: &mut Counters,
    ) -> Vec<EventDraft> {
        let mut events = Vec::new();
        for (t, span) in minutes(from, to) {
            match &self.session {
                Some(s) if s.ends_ms <= t && !self.faulty => events.extend(self.end(t, None)),
                Some(_) if self.temp_c >= FUSE_C => {
                    events.extend(self.end(t, None).map(|e| e.with("reason", "fuse")));
                }
                None if world.is_open(t) && rng.gen_bool(P_ROBOT_SESSION * span) => {
                    let faulty = rng.gen_bool(world.overheat_chance);
                    let ends = t + rng.gen_range(20..=30) * MINUTE_MS;
                    events.extend(self.start(t, ends, faulty));
                    c.sessions += 1;
                    c.faults_injected += u64::from(faulty);
                }
                _ => {}
            }
            self.drift_temperature(span);
        }
        events
    }

    fn obey(&mut self, cmd: &Command, now: u64, c: &mut Counters) -> Obeyed {
        match cmd.op.as_str() {
            "stop" => {
                c.stops_received += 1;
                Obeyed::Done(
                    self.end(now, Some(&cmd.id))
                        .map(|e| e.with("reason", "stop")),
                )
            }
            // A booked slot starts: the resident starts the session.
            "unlock" => Obeyed::Done(None),
            // The booked slot ended.
            "lock" => Obeyed::Done(
                self.end(now, Some(&cmd.id))
                    .map(|e| e.with("reason", "lock")),
            ),
            _ => Obeyed::UnknownOp,
        }
    }
}

/// Someone at the gate waiting for the hub's answer.
#[derive(Debug, Clone, PartialEq)]
struct Waiting {
    visit: GymVisit,
    asked_ms: u64,
}

/// A gym access gate: members present their QR credential, the hub answers
/// `open` or `deny`; those let in leave through it later (exit is free).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gate {
    /// Index of this gate among its center's gates: it serves every
    /// `gates`-th gym visit.
    index: usize,
    /// The day of `next_visit`.
    visits_day: Option<NaiveDate>,
    /// Next gym visit (index into that day's `crowd.gym`) not yet at a gate.
    next_visit: usize,
    /// In arrival order: the hub answers requests in the order they came.
    waiting: VecDeque<Waiting>,
    /// Members inside, with when they leave.
    inside: Vec<GymVisit>,
    door_open: bool,
}

impl Gate {
    fn step(
        &mut self,
        world: &World,
        center: &str,
        from: u64,
        to: u64,
        c: &mut Counters,
    ) -> Vec<EventDraft> {
        self.door_open = false;
        let mut events = Vec::new();
        let (day, crowd) = world.crowd_on(from);
        if self.visits_day != Some(day) {
            self.visits_day = Some(day);
            self.next_visit = 0;
        }
        let gym = &crowd.gym;
        while let Some(visit) = gym.get(self.next_visit).filter(|v| v.arrive_ms < to) {
            let mine = self.next_visit % world.gates.max(1) == self.index;
            self.next_visit += 1;
            if !mine || visit.arrive_ms < from {
                continue;
            }
            let credential = member_credential(world.seed, center, visit.member);
            events.push(
                EventDraft::new("access_request", visit.arrive_ms).with("credential", credential),
            );
            self.waiting.push_back(Waiting {
                visit: *visit,
                // The request goes out now, at the end of the window.
                asked_ms: to,
            });
            c.access_requests += 1;
        }
        let gave_up = self
            .waiting
            .iter()
            .take_while(|w| w.asked_ms + world.answer_timeout_ms < to)
            .count();
        self.waiting.drain(..gave_up);
        c.access_unanswered += gave_up as u64;
        let (leaving, staying): (Vec<_>, Vec<_>) =
            self.inside.drain(..).partition(|v| v.leave_ms < to);
        self.inside = staying;
        for visit in leaving {
            let at = visit.leave_ms.max(from);
            events.push(EventDraft::new("passage", at).with("direction", "out"));
        }
        events
    }

    fn obey(&mut self, cmd: &Command, now: u64, c: &mut Counters) -> Obeyed {
        let op = cmd.op.as_str();
        if op != "open" && op != "deny" {
            return Obeyed::UnknownOp;
        }
        let Some(waiting) = self.waiting.pop_front() else {
            // Whoever asked already walked away.
            return Obeyed::Done(None);
        };
        if op == "deny" {
            c.access_denied += 1;
            self.door_open = false;
            return Obeyed::Done(None);
        }
        c.access_opened += 1;
        self.door_open = true;
        self.inside.push(waiting.visit);
        let passage =
            source(EventDraft::new("passage", now), Some(&cmd.id)).with("direction", "in");
        Obeyed::Done(Some(passage))
    }
}

/// A people counter over one door: the entrance or a room's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counter {
    /// `None` for the entrance.
    room: Option<String>,
    entered: u64,
    left: u64,
}

impl Counter {
    fn step(&mut self, world: &World, from: u64, to: u64) {
        let (_, crowd) = world.crowd_on(from);
        let log = match &self.room {
            None => Some(&crowd.entrance),
            Some(room) => crowd.rooms.get(room),
        };
        if let Some(log) = log {
            let (entered, left) = log.flow(from, to);
            self.entered += entered;
            self.left += left;
        }
    }
}

/// The simulated state of one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Piano(Piano),
    TherapyRobot(TherapyRobot),
    Gate(Gate),
    Counter(Counter),
}

impl Behaviour {
    /// The device `spec` in its resting state.
    pub fn new(spec: &DeviceSpec) -> Self {
        match spec.kind {
            DeviceKind::Piano => Behaviour::Piano(Piano::default()),
            DeviceKind::TherapyRobot => Behaviour::TherapyRobot(TherapyRobot::default()),
            DeviceKind::Gate => Behaviour::Gate(Gate {
                index: spec.number.saturating_sub(1),
                ..Gate::default()
            }),
            DeviceKind::Counter => Behaviour::Counter(Counter {
                room: (spec.room != protocol::ENTRANCE_ROOM).then(|| spec.room.clone()),
                ..Counter::default()
            }),
        }
    }

    pub fn kind(&self) -> DeviceKind {
        match self {
            Behaviour::Piano(_) => DeviceKind::Piano,
            Behaviour::TherapyRobot(_) => DeviceKind::TherapyRobot,
            Behaviour::Gate(_) => DeviceKind::Gate,
            Behaviour::Counter(_) => DeviceKind::Counter,
        }
    }

    /// Advances the device through `[from, to)` (within one local day);
    /// returns the events that happened, and tallies them in `c`.
    pub fn step(
        &mut self,
        world: &World,
        center: &str,
        (from, to): (u64, u64),
        rng: &mut impl Rng,
        c: &mut Counters,
    ) -> Vec<EventDraft> {
        match self {
            Behaviour::Piano(p) => p.step(world, from, to, rng, c),
            Behaviour::TherapyRobot(r) => r.step(world, from, to, rng, c),
            Behaviour::Gate(g) => g.step(world, center, from, to, c),
            Behaviour::Counter(counter) => {
                counter.step(world, from, to);
                Vec::new()
            }
        }
    }

    /// The fields of the next telemetry message (without `ts`/`seq`).
    /// Deltas (key presses, people) cover everything since the last
    /// [`Behaviour::commit_report`].
    pub fn telemetry_fields(&self) -> Vec<(String, FieldValue)> {
        fn field(name: &str, value: FieldValue) -> (String, FieldValue) {
            (name.to_owned(), value)
        }
        match self {
            Behaviour::Piano(p) => vec![
                field(
                    "key_presses",
                    FieldValue::Number(p.keys_since_report as f64),
                ),
                field("session_active", FieldValue::Bool(p.session.is_some())),
            ],
            Behaviour::TherapyRobot(r) => vec![
                field(
                    "temp_c",
                    FieldValue::Number((r.temp_c * 10.0).round() / 10.0),
                ),
                field("heating", FieldValue::Bool(r.heating)),
                field("session_active", FieldValue::Bool(r.session.is_some())),
            ],
            Behaviour::Gate(g) => {
                let door = if g.door_open { "open" } else { "closed" };
                vec![field("door", FieldValue::Text(door.to_owned()))]
            }
            Behaviour::Counter(c) => vec![
                field("in", FieldValue::Number(c.entered as f64)),
                field("out", FieldValue::Number(c.left as f64)),
            ],
        }
    }

    /// Called once the telemetry from [`Behaviour::telemetry_fields`] was
    /// handed to the client: resets the deltas and returns the people it
    /// reported (zero for kinds other than counters).
    pub fn commit_report(&mut self) -> Flow {
        match self {
            Behaviour::Piano(p) => {
                p.keys_since_report = 0;
                Flow::default()
            }
            Behaviour::Counter(c) => Flow {
                entered: std::mem::take(&mut c.entered),
                left: std::mem::take(&mut c.left),
            },
            Behaviour::TherapyRobot(_) | Behaviour::Gate(_) => Flow::default(),
        }
    }

    /// Obeys `cmd` at simulated time `sim_now` unless it expired (real
    /// `real_now_ms` past `expires_at`, the hub's clock) or its op is
    /// unknown to this kind.
    pub fn apply_command(
        &mut self,
        cmd: &Command,
        real_now_ms: u64,
        sim_now: u64,
        c: &mut Counters,
    ) -> CommandOutcome {
        if real_now_ms > cmd.expires_at {
            return CommandOutcome::refused(cmd, "expired");
        }
        let obeyed = match self {
            Behaviour::Piano(p) => p.obey(cmd, sim_now, c),
            Behaviour::TherapyRobot(r) => r.obey(cmd, sim_now, c),
            Behaviour::Gate(g) => g.obey(cmd, sim_now, c),
            Behaviour::Counter(_) => Obeyed::UnknownOp,
        };
        match obeyed {
            Obeyed::Done(event) => CommandOutcome {
                ack: CommandAck {
                    id: cmd.id.clone(),
                    ok: true,
                    error: None,
                },
                events: event.into_iter().collect(),
            },
            Obeyed::UnknownOp => CommandOutcome::refused(cmd, "unknown op"),
        }
    }
}

impl CommandOutcome {
    fn refused(cmd: &Command, error: &str) -> Self {
        CommandOutcome {
            ack: CommandAck {
                id: cmd.id.clone(),
                ok: false,
                error: Some(error.to_owned()),
            },
            events: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crowd::Profile;
    use crate::simtime::Calendar;
    use chrono::NaiveTime;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    const HOUR_MS: u64 = 60 * MINUTE_MS;
    const DAY_MS: u64 = 24 * HOUR_MS;

    fn world(overheat_chance: f64) -> World {
        World {
            crowd: Arc::new(CenterCrowd::new(
                5,
                0,
                Calendar::default(),
                Profile::default(),
            )),
            gates: 2,
            seed: 1,
            overheat_chance,
            answer_timeout_ms: 10 * MINUTE_MS,
        }
    }

    /// Saturday 2026-11-28 at `h`:`m`, Shanghai time.
    fn saturday(h: u32, m: u32) -> u64 {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        Calendar::default().at(day, NaiveTime::from_hms_opt(h, m, 0).unwrap())
    }

    fn device(kind: DeviceKind, room: &str, number: usize) -> Behaviour {
        Behaviour::new(&DeviceSpec {
            id: "d".into(),
            center: "center01".into(),
            room: room.into(),
            kind,
            number,
            seed: 0,
        })
    }

    fn cmd(op: &str, expires_at: u64) -> Command {
        Command {
            id: format!("cmd-{op}"),
            op: op.to_owned(),
            args: json!({}),
            expires_at,
        }
    }

    /// Runs `b` from `from` to `to` in `step` windows; returns its events.
    fn run(
        b: &mut Behaviour,
        w: &World,
        (from, to): (u64, u64),
        step: u64,
        c: &mut Counters,
    ) -> Vec<EventDraft> {
        let mut rng = StdRng::seed_from_u64(3);
        (from..to)
            .step_by(step as usize)
            .flat_map(|t| b.step(w, "center01", (t, (t + step).min(to)), &mut rng, c))
            .collect()
    }

    /// The telemetry field `name` (panics when the kind does not report it).
    fn field(b: &Behaviour, name: &str) -> FieldValue {
        b.telemetry_fields()
            .into_iter()
            .find_map(|(n, v)| (n == name).then_some(v))
            .unwrap_or_else(|| panic!("{} reports no `{name}`", b.kind()))
    }

    fn number(b: &Behaviour, name: &str) -> f64 {
        match field(b, name) {
            FieldValue::Number(n) => n,
            other => panic!("{name} is {other:?}"),
        }
    }

    #[test]
    fn expired_commands_are_refused_and_change_nothing() {
        let mut piano = device(DeviceKind::Piano, "music", 1);
        let mut c = Counters::default();
        let out = piano.apply_command(&cmd("unlock", 1_000), 1_001, 0, &mut c);
        assert_eq!(out.ack.error.as_deref(), Some("expired"));
        assert!(!out.ack.ok && out.events.is_empty());
        assert_eq!(field(&piano, "session_active"), FieldValue::Bool(false));
        let at_expiry = piano.apply_command(&cmd("unlock", 1_000), 1_000, 0, &mut c);
        assert!(
            at_expiry.ack.ok,
            "a command at its expiry instant is obeyed"
        );
    }

    #[test]
    fn piano_unlock_starts_a_session_and_lock_or_deny_ends_it() {
        let mut piano = device(DeviceKind::Piano, "music", 1);
        let mut c = Counters::default();
        let out = piano.apply_command(&cmd("unlock", 10), 5, 77, &mut c);
        assert_eq!(out.events[0].event_type, "session_start");
        assert_eq!(out.events[0].body["cmd"], json!("cmd-unlock"));
        assert_eq!(out.events[0].at_ms, 77, "stamped with simulated time");
        assert_eq!(c.sessions, 1);
        let again = piano.apply_command(&cmd("unlock", 10), 5, 78, &mut c);
        assert!(again.ack.ok && again.events.is_empty(), "no second session");
        let out = piano.apply_command(&cmd("lock", 10), 5, 79, &mut c);
        assert_eq!(out.events[0].event_type, "session_end");
        assert_eq!(field(&piano, "session_active"), FieldValue::Bool(false));

        piano.apply_command(&cmd("unlock", 10), 5, 80, &mut c);
        let denied = piano.apply_command(&cmd("deny", 10), 5, 81, &mut c);
        assert_eq!(denied.events[0].body["reason"], json!("denied"));
    }

    #[test]
    fn unknown_ops_are_refused_per_kind() {
        for (kind, op) in [
            (DeviceKind::Piano, "open"),
            (DeviceKind::TherapyRobot, "open"),
            (DeviceKind::Gate, "stop"),
            (DeviceKind::Counter, "lock"),
        ] {
            let mut b = device(kind, "x", 1);
            let out = b.apply_command(&cmd(op, 10), 5, 5, &mut Counters::default());
            assert_eq!(out.ack.error.as_deref(), Some("unknown op"), "{kind} {op}");
            assert!(out.events.is_empty());
        }
    }

    #[test]
    fn walk_in_pianos_play_in_opening_hours_only() {
        let w = world(0.0);
        let mut piano = device(DeviceKind::Piano, "music", 1);
        let mut c = Counters::default();
        let night = run(
            &mut piano,
            &w,
            (saturday(0, 0), saturday(8, 0)),
            5 * MINUTE_MS,
            &mut c,
        );
        assert!(night.is_empty(), "closed at night: {night:?}");
        let day = run(
            &mut piano,
            &w,
            (saturday(8, 30), saturday(21, 30)),
            5 * MINUTE_MS,
            &mut c,
        );
        let types: Vec<_> = day.iter().map(|e| e.event_type).collect();
        assert!(types.len() >= 6, "a day sees several sessions: {types:?}");
        for pair in types.windows(2) {
            assert_ne!(pair[0], pair[1], "starts and ends alternate: {types:?}");
        }
        assert!(day.windows(2).all(|p| p[0].at_ms <= p[1].at_ms));
        assert!(number(&piano, "key_presses") > 0.0);
        assert_eq!(
            c.sessions as usize,
            types.iter().filter(|t| **t == "session_start").count()
        );
    }

    #[test]
    fn a_robot_holds_its_setpoint_and_a_faulty_one_overheats_until_stopped() {
        let mut c = Counters::default();
        let mut robot = TherapyRobot::default();
        robot.start(0, 30 * MINUTE_MS, false);
        robot.drift_temperature(30.0);
        assert_eq!(robot.temp_c, SETPOINT_C);

        let w = world(1.0);
        let mut faulty = device(DeviceKind::TherapyRobot, "therapy", 1);
        let mut rng = StdRng::seed_from_u64(3);
        let mut t = saturday(8, 30);
        while c.sessions == 0 && t < saturday(21, 30) {
            faulty.step(&w, "center01", (t, t + MINUTE_MS), &mut rng, &mut c);
            t += MINUTE_MS;
        }
        assert_eq!(c.faults_injected, 1);
        let later = t + 40 * MINUTE_MS;
        let events = run(&mut faulty, &w, (t, later), MINUTE_MS, &mut c);
        assert!(events.is_empty(), "a faulty session runs on: {events:?}");
        assert!(number(&faulty, "temp_c") > 45.0, "and past the limit");
        let stopped = faulty.apply_command(&cmd("stop", 10), 5, later, &mut c);
        assert_eq!(stopped.events[0].body["reason"], json!("stop"));
        assert_eq!(field(&faulty, "heating"), FieldValue::Bool(false));
        assert_eq!(c.stops_received, 1);
        run(
            &mut faulty,
            &w,
            (later, later + 30 * MINUTE_MS),
            MINUTE_MS,
            &mut c,
        );
        assert!(number(&faulty, "temp_c") < 45.0, "it cools once stopped");
    }

    #[test]
    fn gates_ask_the_hub_and_follow_its_answers_in_order() {
        let w = world(0.0);
        let (from, to) = (saturday(0, 0), saturday(0, 0) + DAY_MS);
        let mine: Vec<GymVisit> = w
            .crowd
            .day(w.crowd.calendar.day(from))
            .gym
            .iter()
            .step_by(2)
            .copied()
            .collect();
        let mut gate = device(DeviceKind::Gate, "gym", 1);
        let mut c = Counters::default();
        let asked = gate.step(
            &w,
            "center01",
            (from, mine[2].arrive_ms + 1),
            &mut StdRng::seed_from_u64(1),
            &mut c,
        );
        assert_eq!(asked.len(), 3);
        assert!(asked.iter().all(|e| e.event_type == "access_request"));
        assert_eq!(
            asked[0].body["credential"],
            json!(member_credential(1, "center01", mine[0].member))
        );
        assert_eq!(c.access_requests, 3);

        let opened = gate.apply_command(&cmd("open", 10), 5, mine[0].arrive_ms + 1, &mut c);
        assert_eq!(opened.events[0].passage_direction(), Some("in"));
        assert_eq!(field(&gate, "door"), FieldValue::Text("open".into()));
        let denied = gate.apply_command(&cmd("deny", 10), 5, mine[1].arrive_ms + 1, &mut c);
        assert!(denied.events.is_empty());
        assert_eq!((c.access_opened, c.access_denied), (1, 1));

        // The third is never answered; the first member leaves later.
        let rest = gate.step(
            &w,
            "center01",
            (mine[2].arrive_ms + 1, to),
            &mut StdRng::seed_from_u64(1),
            &mut c,
        );
        let outs: Vec<_> = rest
            .iter()
            .filter(|e| e.passage_direction() == Some("out"))
            .collect();
        assert_eq!(outs.len(), 1);
        let let_out_from = mine[2].arrive_ms + 1;
        assert_eq!(outs[0].at_ms, mine[0].leave_ms.max(let_out_from));
        assert!(c.access_unanswered >= 1);
        assert_eq!(
            c.access_requests,
            mine.len() as u64,
            "every visit of this gate asked"
        );
    }

    #[test]
    fn counters_report_their_door_exactly_across_windows() {
        let w = world(0.0);
        let from = saturday(0, 0);
        let crowd = w.crowd.day(w.crowd.calendar.day(from));
        for (room, log) in [
            ("entrance", &crowd.entrance),
            ("yoga", &crowd.rooms["yoga"]),
        ] {
            let mut counter = device(DeviceKind::Counter, room, 1);
            let mut entered = 0;
            let mut left = 0;
            for t in (from..from + DAY_MS).step_by(7 * MINUTE_MS as usize) {
                counter.step(
                    &w,
                    "center01",
                    (t, (t + 7 * MINUTE_MS).min(from + DAY_MS)),
                    &mut StdRng::seed_from_u64(1),
                    &mut Counters::default(),
                );
                let flow = counter.commit_report();
                entered += flow.entered;
                left += flow.left;
            }
            assert_eq!(entered, log.ins.len() as u64, "{room}");
            assert_eq!(left, log.outs.len() as u64, "{room}");
            assert!(entered > 0);
            assert_eq!(
                counter.commit_report(),
                Flow::default(),
                "commit resets the deltas"
            );
        }
    }
}
