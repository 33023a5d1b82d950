//! A moxibustion therapy robot: heats to its setpoint during a session,
//! cools down after; a faulty session keeps heating until something stops
//! it (the hub's `stop`, or its thermal fuse). A booked slot is the booked
//! resident's from its `unlock` to its end: a walk-in session gives way,
//! the resident's treatment (its `session_start` names the booking, which
//! checks it in) ends well before the slot does, and no walk-in starts in
//! what is left of it (the hub stops a session running past a booked
//! slot).

use protocol::{Command, FieldValue};
use rand::Rng;

use super::{
    field, source, unlocked_until, ByMinute, EventDraft, Minute, Obeyed, Session, Unlocked, World,
    MINUTE_MS,
};
use crate::stats::Counters;

/// Chance per minute of opening hours that an idle robot starts a session.
const P_ROBOT_SESSION: f64 = 1.0 / 60.0;
/// Room temperature a robot cools down to, °C.
const AMBIENT_C: f64 = 24.0;
/// Temperature a working robot holds during a session, °C.
pub(super) const SETPOINT_C: f64 = 42.0;
/// How fast a robot heats and cools, °C per minute.
const HEAT_RATE: f64 = 1.5;
const COOL_RATE: f64 = 1.0;
/// How fast a faulty robot keeps heating past its setpoint, °C per minute,
/// and where its thermal fuse finally stops it.
const RUNAWAY_RATE: f64 = 0.8;
const FUSE_C: f64 = 80.0;
/// A booked treatment ends this long before its slot does (20 minutes of a
/// 30-minute slot), by the slot's end rather than by when the `unlock`
/// came: the hub locks at the slot's end on its own clock.
const ENDS_BEFORE_SLOT_MS: u64 = 10 * MINUTE_MS;

/// A moxibustion robot: heats to its setpoint during a session, cools down
/// after; a faulty session keeps heating until something stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct TherapyRobot {
    session: Option<Session>,
    heating: bool,
    faulty: bool,
    pub(super) temp_c: f64,
    /// A booked slot holds the robot until then: no walk-in before.
    reserved_until: u64,
}

impl Default for TherapyRobot {
    fn default() -> Self {
        TherapyRobot {
            session: None,
            heating: false,
            faulty: false,
            temp_c: AMBIENT_C,
            reserved_until: 0,
        }
    }
}

impl TherapyRobot {
    pub(super) fn start(&mut self, at: u64, ends_ms: u64, faulty: bool) -> Option<EventDraft> {
        let walk_in = Session {
            ends_ms,
            cmd: None,
            booking: None,
        };
        self.begin(walk_in, faulty)
            .then(|| source(EventDraft::new("session_start", at), None))
    }

    /// A booked resident's treatment, started by `unlock` `cmd`.
    fn start_booked(
        &mut self,
        at: u64,
        ends_ms: u64,
        cmd: &str,
        booking: String,
    ) -> Option<EventDraft> {
        let booked = Session {
            ends_ms,
            cmd: Some(cmd.to_owned()),
            booking: Some(booking.clone()),
        };
        self.begin(booked, false).then(|| {
            source(EventDraft::new("session_start", at), Some(cmd)).with("booking", booking)
        })
    }

    /// Starts `session` unless one runs; whether it started.
    fn begin(&mut self, session: Session, faulty: bool) -> bool {
        if self.session.is_some() {
            return false;
        }
        self.session = Some(session);
        self.heating = true;
        self.faulty = faulty;
        true
    }

    pub(super) fn end(&mut self, at: u64, cmd: Option<&str>) -> Option<EventDraft> {
        self.heating = false;
        self.faulty = false;
        self.session
            .take()
            .map(|_| source(EventDraft::new("session_end", at), cmd))
    }

    /// Heats towards the setpoint (past it when faulty, up to the fuse),
    /// cools towards ambient otherwise.
    pub(super) fn drift_temperature(&mut self, minutes: f64) {
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

    /// A booked slot of this run starts: the robot is the booking's until
    /// the slot's end. A walk-in session gives way; a resident who comes
    /// starts their treatment. For anyone else's booking the resident
    /// starts the session themselves.
    fn unlock(&mut self, cmd: &Command, now: u64, world: &World, c: &mut Counters) -> Obeyed {
        let until = unlocked_until(cmd).unwrap_or(now + 3 * ENDS_BEFORE_SLOT_MS);
        let unlocked = Unlocked::of(cmd, world);
        if unlocked == Unlocked::Other {
            return Obeyed::Done(Vec::new());
        }
        self.reserved_until = self.reserved_until.max(until);
        let walk_in = self.end(now, None).map(|e| e.with("reason", "booked"));
        let mut events: Vec<EventDraft> = walk_in.into_iter().collect();
        if let Unlocked::Comes(booking) = unlocked {
            let ends = until.saturating_sub(ENDS_BEFORE_SLOT_MS).max(now);
            let started = self.start_booked(now, ends, &cmd.id, booking);
            c.sessions += u64::from(started.is_some());
            events.extend(started);
        }
        Obeyed::Done(events)
    }

    pub(super) fn obey(
        &mut self,
        cmd: &Command,
        now: u64,
        world: &World,
        c: &mut Counters,
    ) -> Obeyed {
        match cmd.op.as_str() {
            "stop" => {
                c.stops_received += 1;
                Obeyed::ended(self.end(now, Some(&cmd.id)), "stop")
            }
            "unlock" => self.unlock(cmd, now, world, c),
            // The booked slot ended (or its place was given up).
            "lock" if self.session.as_ref().is_some_and(|s| !s.locked_by(cmd)) => {
                Obeyed::Done(Vec::new())
            }
            "lock" => Obeyed::ended(self.end(now, Some(&cmd.id)), "lock"),
            _ => Obeyed::UnknownOp,
        }
    }

    pub(super) fn telemetry_fields(&self) -> Vec<(String, FieldValue)> {
        vec![
            field(
                "temp_c",
                FieldValue::Number((self.temp_c * 10.0).round() / 10.0),
            ),
            field("heating", FieldValue::Bool(self.heating)),
            field("session_active", FieldValue::Bool(self.session.is_some())),
        ]
    }
}

impl ByMinute for TherapyRobot {
    /// A session ends when its time is up (a faulty one runs on) or at the
    /// fuse; an idle robot in opening hours may start one (faulty by
    /// chance); the temperature drifts either way.
    fn minute(&mut self, now: Minute) -> Option<EventDraft> {
        let (t, span) = (now.t, now.span);
        let event = match &self.session {
            Some(s) if s.ends_ms <= t && !self.faulty => self.end(t, None),
            Some(_) if self.temp_c >= FUSE_C => self.end(t, None).map(|e| e.with("reason", "fuse")),
            None if now.world.is_open(t)
                && t >= self.reserved_until
                && now.rng.gen_bool(P_ROBOT_SESSION * span) =>
            {
                let faulty = now.rng.gen_bool(now.world.overheat_chance);
                let ends = t + now.rng.gen_range(20..=30) * MINUTE_MS;
                now.counters.sessions += 1;
                now.counters.faults_injected += u64::from(faulty);
                self.start(t, ends, faulty)
            }
            _ => None,
        };
        self.drift_temperature(span);
        event
    }
}
