//! What a simulated device does: its physical state per kind, the telemetry
//! fields it reports, the events it raises and how it obeys commands, one
//! module per kind (`piano`, `robot`, `gate`, `counter`); `Behaviour` is
//! one device of any kind.
//!
//! Devices advance window by window of simulated time (`[from, to)`, never
//! across a local midnight). Counters and gates read their doors from the
//! center's [`Crowd`]; pianos and therapy robots run sessions in opening
//! hours, and booked ones when the hub unlocks them for a resident who
//! comes (the run's [`Attendance`]): their `session_start` names the
//! booking, which checks it in. Pure: time, the crowd, the attendance and
//! randomness come in as arguments, so every rule here is unit-tested
//! without a broker.

mod counter;
mod gate;
mod piano;
mod robot;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use chrono::NaiveDate;
use protocol::{Command, CommandAck, DeviceKind, FieldValue};
use rand::{Rng, RngCore};
use serde_json::{Map, Value};

use crate::crowd::{CenterCrowd, Crowd};
use crate::plan::DeviceSpec;
use crate::residents::Attendance;
use crate::stats::Counters;

pub use counter::Counter;
pub use gate::Gate;
pub use piano::Piano;
pub use robot::TherapyRobot;

pub(super) const MINUTE_MS: u64 = 60_000;

/// An event the device wants to raise at simulated time `at_ms`; the outbox
/// gives it its id and seq.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_type: &'static str,
    pub body: Map<String, Value>,
    pub at_ms: u64,
}

impl EventDraft {
    pub(super) fn new(event_type: &'static str, at_ms: u64) -> Self {
        EventDraft {
            event_type,
            body: Map::new(),
            at_ms,
        }
    }

    pub(super) fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
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

/// Whether a kind knows an op, and the events obeying it raised.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Obeyed {
    UnknownOp,
    Done(Vec<EventDraft>),
}

impl Obeyed {
    /// Obeyed by ending a session (`ended`, if one ran) for `reason`.
    pub(super) fn ended(ended: Option<EventDraft>, reason: &str) -> Obeyed {
        Obeyed::Done(
            ended
                .map(|e| e.with("reason", reason))
                .into_iter()
                .collect(),
        )
    }
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
    /// Which booked places their residents come to (the run's, shared).
    pub attendance: Arc<Attendance>,
}

impl World {
    pub(super) fn is_open(&self, ms: u64) -> bool {
        self.crowd.is_open(ms)
    }

    /// The crowd of the local day `ms` falls on.
    pub(super) fn crowd_on(&self, ms: u64) -> (NaiveDate, Arc<Crowd>) {
        let day = self.crowd.calendar.day(ms);
        (day, self.crowd.day(day))
    }
}

/// A session (piano playing, robot treatment) until `ends_ms`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Session {
    pub(super) ends_ms: u64,
    /// The command that started it (a booking's `unlock`), if any.
    pub(super) cmd: Option<String>,
    /// The booking it is, if its resident checked in with it.
    pub(super) booking: Option<String>,
}

impl Session {
    /// Whether `lock` ends this session: not when it is another booking's
    /// (a slot's `lock` and the next slot's `unlock` come together).
    pub(super) fn locked_by(&self, lock: &Command) -> bool {
        let booking = lock.args.get("booking").and_then(Value::as_str);
        self.booking.is_none() || self.booking.as_deref() == booking
    }
}

/// Whose place an `unlock` opens.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Unlocked {
    /// This run's resident of the booking, who comes now.
    Comes(String),
    /// This run's resident, who does not come (or already came).
    Away,
    /// No booking of this run (staff, or another front end).
    Other,
}

impl Unlocked {
    pub(super) fn of(cmd: &Command, world: &World) -> Unlocked {
        let Some(booking) = cmd.args.get("booking").and_then(Value::as_str) else {
            return Unlocked::Other;
        };
        match world.attendance.arrive(booking) {
            Some(true) => Unlocked::Comes(booking.to_owned()),
            Some(false) => Unlocked::Away,
            None => Unlocked::Other,
        }
    }
}

/// The end of the slot an `unlock` opened (`until`), if it says.
pub(super) fn unlocked_until(cmd: &Command) -> Option<u64> {
    cmd.args.get("until").and_then(Value::as_u64)
}

/// Marks what caused an event: a command (with its id) or a walk-in.
pub(super) fn source(draft: EventDraft, cmd: Option<&str>) -> EventDraft {
    match cmd {
        Some(id) => draft.with("source", "cmd").with("cmd", id),
        None => draft.with("source", "walk_in"),
    }
}

/// One minute of simulated time (or what is left of one, `span` < 1) from
/// `t`, in `world`, with the run's randomness and tallies.
pub(super) struct Minute<'a> {
    pub world: &'a World,
    pub t: u64,
    pub span: f64,
    pub rng: &'a mut dyn RngCore,
    pub counters: &'a mut Counters,
}

/// A device whose state moves minute by minute (pianos, therapy robots).
pub(super) trait ByMinute {
    /// Advances one minute; the event it raised, if any.
    fn minute(&mut self, now: Minute) -> Option<EventDraft>;
}

/// Advances `device` minute by minute through `[from, to)`.
fn by_minute(
    device: &mut impl ByMinute,
    world: &World,
    (from, to): (u64, u64),
    rng: &mut impl Rng,
    c: &mut Counters,
) -> Vec<EventDraft> {
    minutes(from, to)
        .filter_map(|(t, span)| {
            device.minute(Minute {
                world,
                t,
                span,
                rng: &mut *rng,
                counters: &mut *c,
            })
        })
        .collect()
}

/// One telemetry field.
pub(super) fn field(name: &str, value: FieldValue) -> (String, FieldValue) {
    (name.to_owned(), value)
}

/// Splits `[from, to)` into steps of at most a minute: `(start, minutes)`.
pub(super) fn minutes(from: u64, to: u64) -> impl Iterator<Item = (u64, f64)> {
    (from..to)
        .step_by(MINUTE_MS as usize)
        .map(move |t| (t, (to.min(t + MINUTE_MS) - t) as f64 / MINUTE_MS as f64))
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
            DeviceKind::Gate => Behaviour::Gate(Gate::numbered(spec.number.saturating_sub(1))),
            DeviceKind::Counter => Behaviour::Counter(Counter::over(
                (spec.room != protocol::ENTRANCE_ROOM).then(|| spec.room.clone()),
            )),
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
            Behaviour::Piano(p) => by_minute(p, world, (from, to), rng, c),
            Behaviour::TherapyRobot(r) => by_minute(r, world, (from, to), rng, c),
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
        match self {
            Behaviour::Piano(p) => p.telemetry_fields(),
            Behaviour::TherapyRobot(r) => r.telemetry_fields(),
            Behaviour::Gate(g) => g.telemetry_fields(),
            Behaviour::Counter(c) => c.telemetry_fields(),
        }
    }

    /// Called once the telemetry from [`Behaviour::telemetry_fields`] was
    /// handed to the client: resets the deltas and returns the people it
    /// reported (zero for kinds other than counters).
    pub fn commit_report(&mut self) -> Flow {
        match self {
            Behaviour::Piano(p) => {
                p.commit_report();
                Flow::default()
            }
            Behaviour::Counter(c) => c.commit_report(),
            Behaviour::TherapyRobot(_) | Behaviour::Gate(_) => Flow::default(),
        }
    }

    /// Obeys `cmd` at simulated time `sim_now` in `world` unless it
    /// expired (real `real_now_ms` past `expires_at`, the hub's clock) or
    /// its op is unknown to this kind.
    pub fn apply_command(
        &mut self,
        cmd: &Command,
        (real_now_ms, sim_now): (u64, u64),
        world: &World,
        c: &mut Counters,
    ) -> CommandOutcome {
        if real_now_ms > cmd.expires_at {
            return CommandOutcome::refused(cmd, "expired");
        }
        let obeyed = match self {
            Behaviour::Piano(p) => p.obey(cmd, sim_now, world, c),
            Behaviour::TherapyRobot(r) => r.obey(cmd, sim_now, world, c),
            Behaviour::Gate(g) => g.obey(cmd, sim_now, c),
            Behaviour::Counter(_) => Obeyed::UnknownOp,
        };
        match obeyed {
            Obeyed::Done(events) => CommandOutcome {
                ack: CommandAck {
                    id: cmd.id.clone(),
                    ok: true,
                    error: None,
                },
                events,
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
