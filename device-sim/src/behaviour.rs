//! What a simulated device does: its physical state per kind, the telemetry
//! fields it reports, the events it raises and how it obeys commands.
//!
//! Pure: time and randomness come in as arguments, so every rule here is
//! unit-tested without a broker.

use protocol::{Command, CommandAck, DeviceKind, FieldValue};
use rand::Rng;
use serde_json::{Map, Value};

/// Chance per step that an idle piano or robot starts a walk-in session.
const P_SESSION_START: f64 = 0.08;
/// Chance per step that a running session ends.
const P_SESSION_END: f64 = 0.15;
/// Chance per step that a gate sees a resident ask for entry.
const P_ACCESS_REQUEST: f64 = 0.2;
/// Chance per step that someone walks through a gate.
const P_PASSAGE: f64 = 0.25;
/// Room temperature a robot cools down to, °C.
const AMBIENT_C: f64 = 24.0;
/// Highest temperature a heating robot reaches, °C.
const MAX_HEAT_C: f64 = 46.0;

/// An event the device wants to raise; the outbox gives it id, ts and seq.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_type: &'static str,
    pub body: Map<String, Value>,
}

impl EventDraft {
    fn new(event_type: &'static str) -> Self {
        EventDraft {
            event_type,
            body: Map::new(),
        }
    }

    fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.body.insert(name.to_owned(), value.into());
        self
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

/// A session (piano playing, robot treatment) that starts and ends.
#[derive(Debug, Clone, Default, PartialEq)]
struct Session {
    active: bool,
}

impl Session {
    /// Starts the session; `false` if it was already running.
    fn start(&mut self) -> bool {
        !std::mem::replace(&mut self.active, true)
    }

    /// Ends the session; `false` if none was running.
    fn end(&mut self) -> bool {
        std::mem::replace(&mut self.active, false)
    }
}

/// An AI piano: sessions (unlocked by a booking or a walk-in) with key presses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Piano {
    session: Session,
    keys_since_report: u64,
    keys_in_session: u64,
}

/// A moxibustion robot: heats during a session, cools down after.
#[derive(Debug, Clone, PartialEq)]
pub struct TherapyRobot {
    session: Session,
    heating: bool,
    temp_c: f64,
}

/// A gym access gate: access requests and passages through its door.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gate {
    door_open: bool,
}

/// A people counter: people in and out since its last report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counter {
    entered: u64,
    left: u64,
}

/// The simulated state of one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Piano(Piano),
    TherapyRobot(TherapyRobot),
    Gate(Gate),
    Counter(Counter),
}

/// `Some(())` with probability `p`.
fn chance(rng: &mut impl Rng, p: f64) -> Option<()> {
    rng.gen_bool(p).then_some(())
}

/// Marks what caused an event: a command (with its id) or a walk-in.
fn source(draft: EventDraft, cmd: Option<&Command>) -> EventDraft {
    match cmd {
        Some(cmd) => draft.with("source", "cmd").with("cmd", cmd.id.as_str()),
        None => draft.with("source", "walk_in"),
    }
}

impl Piano {
    fn start(&mut self, cmd: Option<&Command>) -> Option<EventDraft> {
        self.session.start().then(|| {
            self.keys_in_session = 0;
            source(EventDraft::new("session_start"), cmd)
        })
    }

    fn end(&mut self, cmd: Option<&Command>) -> Option<EventDraft> {
        self.session.end().then(|| {
            source(EventDraft::new("session_end"), cmd).with("key_presses", self.keys_in_session)
        })
    }

    fn step(&mut self, rng: &mut impl Rng) -> Option<EventDraft> {
        if !self.session.active {
            return chance(rng, P_SESSION_START).and_then(|()| self.start(None));
        }
        let keys = rng.gen_range(20..=200);
        self.keys_since_report += keys;
        self.keys_in_session += keys;
        chance(rng, P_SESSION_END).and_then(|()| self.end(None))
    }

    fn obey(&mut self, cmd: &Command) -> Obeyed {
        match cmd.op.as_str() {
            "unlock" => Obeyed::Done(self.start(Some(cmd))),
            "lock" => Obeyed::Done(self.end(Some(cmd))),
            _ => Obeyed::UnknownOp,
        }
    }
}

impl Default for TherapyRobot {
    fn default() -> Self {
        TherapyRobot {
            session: Session::default(),
            heating: false,
            temp_c: AMBIENT_C,
        }
    }
}

impl TherapyRobot {
    fn start(&mut self) -> Option<EventDraft> {
        self.session.start().then(|| {
            self.heating = true;
            source(EventDraft::new("session_start"), None)
        })
    }

    fn end(&mut self, cmd: Option<&Command>) -> Option<EventDraft> {
        self.heating = false;
        self.session
            .end()
            .then(|| source(EventDraft::new("session_end"), cmd))
    }

    /// Warms towards [`MAX_HEAT_C`] while heating, cools towards
    /// [`AMBIENT_C`] otherwise.
    fn drift_temperature(&mut self, rng: &mut impl Rng) {
        self.temp_c = if self.heating {
            (self.temp_c + rng.gen_range(0.5..1.5)).min(MAX_HEAT_C)
        } else {
            (self.temp_c - 1.0).max(AMBIENT_C)
        };
    }

    fn step(&mut self, rng: &mut impl Rng) -> Option<EventDraft> {
        self.drift_temperature(rng);
        if self.session.active {
            chance(rng, P_SESSION_END).and_then(|()| self.end(None))
        } else {
            chance(rng, P_SESSION_START).and_then(|()| self.start())
        }
    }

    fn obey(&mut self, cmd: &Command) -> Obeyed {
        match cmd.op.as_str() {
            "stop" => Obeyed::Done(self.end(Some(cmd)).map(|e| e.with("reason", "stop"))),
            _ => Obeyed::UnknownOp,
        }
    }
}

impl Gate {
    fn passage(&mut self, direction: &'static str, cmd: Option<&Command>) -> EventDraft {
        self.door_open = true;
        source(EventDraft::new("passage"), cmd).with("direction", direction)
    }

    fn step(&mut self, rng: &mut impl Rng) -> Vec<EventDraft> {
        self.door_open = false;
        let mut events = Vec::new();
        if rng.gen_bool(P_ACCESS_REQUEST) {
            events.push(EventDraft::new("access_request").with("credential", "qr"));
        }
        if rng.gen_bool(P_PASSAGE) {
            let direction = if rng.gen_bool(0.5) { "in" } else { "out" };
            events.push(self.passage(direction, None));
        }
        events
    }

    fn obey(&mut self, cmd: &Command) -> Obeyed {
        match cmd.op.as_str() {
            "open" => Obeyed::Done(Some(self.passage("in", Some(cmd)))),
            "deny" => {
                self.door_open = false;
                Obeyed::Done(None)
            }
            _ => Obeyed::UnknownOp,
        }
    }
}

impl Counter {
    fn step(&mut self, rng: &mut impl Rng) {
        self.entered += rng.gen_range(0..=4);
        self.left += rng.gen_range(0..=4);
    }
}

impl Behaviour {
    /// A device of `kind` in its resting state.
    pub fn new(kind: DeviceKind) -> Self {
        match kind {
            DeviceKind::Piano => Behaviour::Piano(Piano::default()),
            DeviceKind::TherapyRobot => Behaviour::TherapyRobot(TherapyRobot::default()),
            DeviceKind::Gate => Behaviour::Gate(Gate::default()),
            DeviceKind::Counter => Behaviour::Counter(Counter::default()),
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

    /// Advances the world by one telemetry interval; returns the events
    /// that happened.
    pub fn step(&mut self, rng: &mut impl Rng) -> Vec<EventDraft> {
        match self {
            Behaviour::Piano(p) => p.step(rng).into_iter().collect(),
            Behaviour::TherapyRobot(r) => r.step(rng).into_iter().collect(),
            Behaviour::Gate(g) => g.step(rng),
            Behaviour::Counter(c) => {
                c.step(rng);
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
                field("session_active", FieldValue::Bool(p.session.active)),
            ],
            Behaviour::TherapyRobot(r) => vec![
                field(
                    "temp_c",
                    FieldValue::Number((r.temp_c * 10.0).round() / 10.0),
                ),
                field("heating", FieldValue::Bool(r.heating)),
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

    /// Obeys `cmd` unless it expired (`now_ms` past `expires_at`) or its op
    /// is unknown to this kind.
    pub fn apply_command(&mut self, cmd: &Command, now_ms: u64) -> CommandOutcome {
        if now_ms > cmd.expires_at {
            return CommandOutcome::refused(cmd, "expired");
        }
        let obeyed = match self {
            Behaviour::Piano(p) => p.obey(cmd),
            Behaviour::TherapyRobot(r) => r.obey(cmd),
            Behaviour::Gate(g) => g.obey(cmd),
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
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    fn cmd(op: &str, expires_at: u64) -> Command {
        Command {
            id: format!("cmd-{op}"),
            op: op.to_owned(),
            args: json!({}),
            expires_at,
        }
    }

    /// The telemetry field `name` (panics when the kind does not report it).
    fn field(b: &Behaviour, name: &str) -> FieldValue {
        b.telemetry_fields()
            .into_iter()
            .find_map(|(n, v)| (n == name).then_some(v))
            .unwrap_or_else(|| panic!("{} reports no `{name}`", b.kind()))
    }

    #[test]
    fn expired_commands_are_refused_and_change_nothing() {
        let mut piano = Behaviour::new(DeviceKind::Piano);
        let out = piano.apply_command(&cmd("unlock", 1_000), 1_001);
        assert_eq!(
            out.ack,
            CommandAck {
                id: "cmd-unlock".into(),
                ok: false,
                error: Some("expired".into())
            }
        );
        assert!(out.events.is_empty());
        assert_eq!(field(&piano, "session_active"), FieldValue::Bool(false));
    }

    #[test]
    fn a_command_at_its_expiry_instant_is_still_obeyed() {
        let mut piano = Behaviour::new(DeviceKind::Piano);
        let out = piano.apply_command(&cmd("unlock", 1_000), 1_000);
        assert!(out.ack.ok);
        assert_eq!(out.ack.error, None);
    }

    #[test]
    fn piano_unlock_starts_and_lock_ends_a_session() {
        let mut piano = Behaviour::new(DeviceKind::Piano);
        let out = piano.apply_command(&cmd("unlock", 10), 5);
        assert!(out.ack.ok);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].event_type, "session_start");
        assert_eq!(out.events[0].body["cmd"], json!("cmd-unlock"));
        assert_eq!(field(&piano, "session_active"), FieldValue::Bool(true));

        let again = piano.apply_command(&cmd("unlock", 10), 5);
        assert!(again.ack.ok, "unlocking an unlocked piano is not an error");
        assert!(again.events.is_empty(), "but it starts no second session");

        let out = piano.apply_command(&cmd("lock", 10), 5);
        assert!(out.ack.ok);
        assert_eq!(out.events[0].event_type, "session_end");
        assert_eq!(field(&piano, "session_active"), FieldValue::Bool(false));
    }

    #[test]
    fn unknown_ops_are_refused_per_kind() {
        for (kind, op) in [
            (DeviceKind::Piano, "open"),
            (DeviceKind::TherapyRobot, "unlock"),
            (DeviceKind::Gate, "stop"),
            (DeviceKind::Counter, "lock"),
        ] {
            let mut b = Behaviour::new(kind);
            let out = b.apply_command(&cmd(op, 10), 5);
            assert!(!out.ack.ok, "{kind} must refuse {op}");
            assert_eq!(out.ack.error.as_deref(), Some("unknown op"));
            assert!(out.events.is_empty());
        }
    }

    #[test]
    fn robot_stop_turns_heating_off_and_ends_the_session() {
        let mut robot = Behaviour::new(DeviceKind::TherapyRobot);
        if let Behaviour::TherapyRobot(r) = &mut robot {
            r.start();
        }
        assert_eq!(field(&robot, "heating"), FieldValue::Bool(true));
        let out = robot.apply_command(&cmd("stop", 10), 5);
        assert!(out.ack.ok);
        assert_eq!(field(&robot, "heating"), FieldValue::Bool(false));
        assert_eq!(out.events[0].event_type, "session_end");
        assert_eq!(out.events[0].body["reason"], json!("stop"));

        let idle = robot.apply_command(&cmd("stop", 10), 5);
        assert!(idle.ack.ok);
        assert!(idle.events.is_empty());
    }

    #[test]
    fn heating_robot_warms_up_and_cools_down_within_bounds() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut robot = TherapyRobot::default();
        robot.start();
        let mut last = robot.temp_c;
        for _ in 0..40 {
            robot.drift_temperature(&mut rng);
            assert!(robot.temp_c >= last && robot.temp_c <= MAX_HEAT_C);
            last = robot.temp_c;
        }
        assert_eq!(robot.temp_c, MAX_HEAT_C);
        robot.end(None);
        for _ in 0..40 {
            robot.drift_temperature(&mut rng);
        }
        assert_eq!(robot.temp_c, AMBIENT_C);
    }

    #[test]
    fn gate_open_lets_someone_in_and_deny_keeps_the_door_closed() {
        let mut gate = Behaviour::new(DeviceKind::Gate);
        let out = gate.apply_command(&cmd("open", 10), 5);
        assert!(out.ack.ok);
        assert_eq!(out.events[0].event_type, "passage");
        assert_eq!(out.events[0].body["direction"], json!("in"));
        assert_eq!(field(&gate, "door"), FieldValue::Text("open".into()));

        let out = gate.apply_command(&cmd("deny", 10), 5);
        assert!(out.ack.ok);
        assert!(out.events.is_empty());
        assert_eq!(field(&gate, "door"), FieldValue::Text("closed".into()));
    }

    #[test]
    fn counter_reports_deltas_and_commit_resets_them() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut counter = Behaviour::new(DeviceKind::Counter);
        for _ in 0..50 {
            assert!(
                counter.step(&mut rng).is_empty(),
                "counters raise no events"
            );
        }
        let (FieldValue::Number(entered), FieldValue::Number(left)) =
            (field(&counter, "in"), field(&counter, "out"))
        else {
            panic!("counter fields are numbers");
        };
        assert!(entered > 0.0 && left > 0.0);
        let flow = counter.commit_report();
        assert_eq!(flow.entered as f64, entered);
        assert_eq!(flow.left as f64, left);
        assert_eq!(field(&counter, "in"), FieldValue::Number(0.0));
        assert_eq!(counter.commit_report(), Flow::default());
    }

    #[test]
    fn walk_in_piano_sessions_alternate_start_and_end() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut piano = Behaviour::new(DeviceKind::Piano);
        let types: Vec<_> = (0..500)
            .flat_map(|_| piano.step(&mut rng))
            .map(|e| e.event_type)
            .collect();
        assert!(types.len() >= 4, "500 steps see several sessions");
        for pair in types.windows(2) {
            assert_ne!(pair[0], pair[1], "starts and ends alternate: {types:?}");
        }
        assert_eq!(types[0], "session_start");
    }
}
