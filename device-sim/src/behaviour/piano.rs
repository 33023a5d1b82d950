//! An AI piano: walk-in sessions in opening hours, booked ones the hub
//! unlocks and locks, key presses while it plays. A resident who comes to
//! their booked hour takes the piano from a walk-in, and their
//! `session_start` names the booking (the hub checks it in).

use protocol::{Command, FieldValue};
use rand::Rng;

use super::{
    field, source, unlocked_until, ByMinute, EventDraft, Minute, Obeyed, Session, Unlocked, World,
    MINUTE_MS,
};
use crate::stats::Counters;

/// Chance per minute of opening hours that an idle piano gets a walk-in.
const P_PIANO_WALK_IN: f64 = 1.0 / 40.0;
/// Key presses per minute of play.
const KEYS_PER_MINUTE: std::ops::Range<u64> = 30..150;
/// A booked session the hub unlocked without `until` lasts this long.
const DEFAULT_BOOKED_MS: u64 = 60 * MINUTE_MS;

/// An AI piano: walk-in and booked sessions with key presses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Piano {
    session: Option<Session>,
    keys_since_report: u64,
    keys_in_session: u64,
}

impl Piano {
    pub(super) fn start(
        &mut self,
        at: u64,
        ends_ms: u64,
        cmd: Option<&str>,
        booking: Option<&str>,
    ) -> Option<EventDraft> {
        if self.session.is_some() {
            return None;
        }
        self.session = Some(Session {
            ends_ms,
            cmd: cmd.map(str::to_owned),
            booking: booking.map(str::to_owned),
        });
        self.keys_in_session = 0;
        let started = source(EventDraft::new("session_start", at), cmd);
        Some(match booking {
            Some(id) => started.with("booking", id),
            None => started,
        })
    }

    pub(super) fn end(&mut self, at: u64, cmd: Option<&str>) -> Option<EventDraft> {
        self.session.take().map(|_| {
            source(EventDraft::new("session_end", at), cmd)
                .with("key_presses", self.keys_in_session)
        })
    }

    pub(super) fn obey(
        &mut self,
        cmd: &Command,
        now: u64,
        world: &World,
        c: &mut Counters,
    ) -> Obeyed {
        match cmd.op.as_str() {
            "unlock" => {
                let until = unlocked_until(cmd).unwrap_or(now + DEFAULT_BOOKED_MS);
                let mut events = Vec::new();
                let booking = match Unlocked::of(cmd, world) {
                    Unlocked::Away => return Obeyed::Done(events),
                    Unlocked::Comes(booking) => {
                        let walk_in = self.end(now, None).map(|e| e.with("reason", "booked"));
                        events.extend(walk_in);
                        Some(booking)
                    }
                    Unlocked::Other => None,
                };
                let started = self.start(now, until, Some(&cmd.id), booking.as_deref());
                c.sessions += u64::from(started.is_some());
                events.extend(started);
                Obeyed::Done(events)
            }
            "lock" if self.session.as_ref().is_some_and(|s| !s.locked_by(cmd)) => {
                Obeyed::Done(Vec::new())
            }
            "lock" => Obeyed::ended(self.end(now, Some(&cmd.id)), "lock"),
            "deny" => Obeyed::ended(self.end(now, Some(&cmd.id)), "denied"),
            _ => Obeyed::UnknownOp,
        }
    }

    pub(super) fn telemetry_fields(&self) -> Vec<(String, FieldValue)> {
        vec![
            field(
                "key_presses",
                FieldValue::Number(self.keys_since_report as f64),
            ),
            field("session_active", FieldValue::Bool(self.session.is_some())),
        ]
    }

    pub(super) fn commit_report(&mut self) {
        self.keys_since_report = 0;
    }
}

impl ByMinute for Piano {
    /// A session ends when its time is up; a running one presses keys; an
    /// idle piano in opening hours may get a walk-in.
    fn minute(&mut self, now: Minute) -> Option<EventDraft> {
        let (t, span) = (now.t, now.span);
        match &self.session {
            Some(s) if s.ends_ms <= t => self.end(t, None),
            Some(_) => {
                let keys = (now.rng.gen_range(KEYS_PER_MINUTE) as f64 * span) as u64;
                self.keys_since_report += keys;
                self.keys_in_session += keys;
                None
            }
            None if now.world.is_open(t) && now.rng.gen_bool(P_PIANO_WALK_IN * span) => {
                let ends = t + now.rng.gen_range(20..60) * MINUTE_MS;
                now.counters.sessions += 1;
                self.start(t, ends, None, None)
            }
            None => None,
        }
    }
}
