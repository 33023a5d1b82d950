//! A gym access gate: members present their QR credential, the hub
//! answers `open` or `deny` in the order asked; those let in leave through
//! it later (exit is free).

use std::collections::VecDeque;

use chrono::NaiveDate;
use protocol::{Command, FieldValue};

use super::{field, source, EventDraft, Obeyed, World};
use crate::crowd::{member_credential, GymVisit};
use crate::stats::Counters;

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
    /// The gate with `index` among its center's gates.
    pub(super) fn numbered(index: usize) -> Gate {
        Gate {
            index,
            ..Gate::default()
        }
    }

    pub(super) fn step(
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

    pub(super) fn obey(&mut self, cmd: &Command, now: u64, c: &mut Counters) -> Obeyed {
        let op = cmd.op.as_str();
        if op != "open" && op != "deny" {
            return Obeyed::UnknownOp;
        }
        let Some(waiting) = self.waiting.pop_front() else {
            // Whoever asked already walked away.
            return Obeyed::Done(Vec::new());
        };
        if op == "deny" {
            c.access_denied += 1;
            self.door_open = false;
            return Obeyed::Done(Vec::new());
        }
        c.access_opened += 1;
        self.door_open = true;
        self.inside.push(waiting.visit);
        let passage =
            source(EventDraft::new("passage", now), Some(&cmd.id)).with("direction", "in");
        Obeyed::Done(vec![passage])
    }

    pub(super) fn telemetry_fields(&self) -> Vec<(String, FieldValue)> {
        let door = if self.door_open { "open" } else { "closed" };
        vec![field("door", FieldValue::Text(door.to_owned()))]
    }
}
