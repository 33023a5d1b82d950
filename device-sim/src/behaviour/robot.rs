//! A moxibustion therapy robot: heats to its setpoint during a session,
//! cools down after; a faulty session keeps heating until something stops
//! it (the hub's `stop`, or its thermal fuse).

use protocol::{Command, FieldValue};
use rand::Rng;

use super::{field, source, ByMinute, EventDraft, Minute, Obeyed, Session, MINUTE_MS};
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

/// A moxibustion robot: heats to its setpoint during a session, cools down
/// after; a faulty session keeps heating until something stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct TherapyRobot {
    session: Option<Session>,
    heating: bool,
    faulty: bool,
    pub(super) temp_c: f64,
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
    pub(super) fn start(&mut self, at: u64, ends_ms: u64, faulty: bool) -> Option<EventDraft> {
        if self.session.is_some() {
            return None;
        }
        self.session = Some(Session { ends_ms, cmd: None });
        self.heating = true;
        self.faulty = faulty;
        Some(source(EventDraft::new("session_start", at), None))
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

    pub(super) fn obey(&mut self, cmd: &Command, now: u64, c: &mut Counters) -> Obeyed {
        match cmd.op.as_str() {
            "stop" => {
                c.stops_received += 1;
                Obeyed::ended(self.end(now, Some(&cmd.id)), "stop")
            }
            // A booked slot starts: the resident starts the session.
            "unlock" => Obeyed::Done(None),
            // The booked slot ended.
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
            None if now.world.is_open(t) && now.rng.gen_bool(P_ROBOT_SESSION * span) => {
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
