//! Events not yet acknowledged by the hub: numbering, ids, and which of them
//! are due to be (re)sent.
//!
//! Contract v1 makes events at-least-once end to end: a device keeps every
//! event until `/tenants/D/event/ack` names its id, resends it (same id, same
//! seq) while it waits, and resends all of them after a reconnect. Pure: the
//! caller passes the clock in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use protocol::Event;

use crate::behaviour::EventDraft;

/// Whether a publish was an event's first or a resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    First,
    Resend,
}

#[derive(Debug, Clone)]
struct Pending {
    event: Event,
    ever_sent: bool,
    /// When it was last handed to the client; `None` makes it due now.
    last_sent: Option<Instant>,
}

/// A device's unacknowledged events, in `seq` order.
#[derive(Debug, Clone)]
pub struct Outbox {
    id_prefix: String,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    seq_by_id: HashMap<String, u64>,
}

impl Outbox {
    /// An empty outbox whose event ids are `<device>-<run>-<seq>`. `run`
    /// tells runs apart: `seq` restarts at 1 every run, and the hub stores
    /// each `(device, id)` once, so an id must never be reused.
    pub fn new(device: &str, run: &str) -> Self {
        Outbox {
            id_prefix: format!("{device}-{run}-"),
            next_seq: 1,
            pending: BTreeMap::new(),
            seq_by_id: HashMap::new(),
        }
    }

    /// Numbers `draft` with the next seq and keeps it until acknowledged.
    /// Returns its seq; the new event is due at once.
    pub fn create(&mut self, draft: EventDraft, ts: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("{}{seq}", self.id_prefix);
        self.seq_by_id.insert(id.clone(), seq);
        let event = Event {
            id,
            ts,
            seq,
            event_type: draft.event_type.to_owned(),
            body: draft.body,
        };
        self.pending.insert(
            seq,
            Pending {
                event,
                ever_sent: false,
                last_sent: None,
            },
        );
        seq
    }

    /// Drops the event `id`; `false` if it was not waiting (a duplicate ack
    /// or an id this outbox never made).
    pub fn ack(&mut self, id: &str) -> bool {
        match self.seq_by_id.remove(id) {
            Some(seq) => self.pending.remove(&seq).is_some(),
            None => false,
        }
    }

    /// Seqs of the events to publish now, oldest first: those never handed
    /// to the client since the last reconnect, and those sent at least
    /// `resend_after` ago.
    pub fn due(&self, now: Instant, resend_after: Duration) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| {
                p.last_sent
                    .is_none_or(|at| now.saturating_duration_since(at) >= resend_after)
            })
            .map(|(&seq, _)| seq)
            .collect()
    }

    /// The waiting event `seq`.
    pub fn event(&self, seq: u64) -> Option<&Event> {
        self.pending.get(&seq).map(|p| &p.event)
    }

    /// Records that event `seq` was handed to the client at `now`; `None`
    /// if it is no longer waiting.
    pub fn mark_sent(&mut self, seq: u64, now: Instant) -> Option<Sent> {
        let pending = self.pending.get_mut(&seq)?;
        pending.last_sent = Some(now);
        let first = !std::mem::replace(&mut pending.ever_sent, true);
        Some(if first { Sent::First } else { Sent::Resend })
    }

    /// Makes every waiting event due: after a reconnect, since a clean
    /// session drops whatever was in flight.
    pub fn make_all_due(&mut self) {
        for pending in self.pending.values_mut() {
            pending.last_sent = None;
        }
    }

    /// Number of events waiting for an ack.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn draft(event_type: &'static str) -> EventDraft {
        EventDraft {
            event_type,
            body: Map::new(),
            at_ms: 0,
        }
    }

    const RESEND: Duration = Duration::from_secs(5);

    #[test]
    fn events_are_numbered_from_one_with_run_unique_ids() {
        let mut out = Outbox::new("c01gate01", "run7");
        let a = out.create(draft("access_request"), 100);
        let b = out.create(draft("passage"), 200);
        assert_eq!((a, b), (1, 2));
        let event = out.event(2).unwrap();
        assert_eq!(event.id, "c01gate01-run7-2");
        assert_eq!(event.seq, 2);
        assert_eq!(event.ts, 200);
        assert_eq!(event.event_type, "passage");
    }

    #[test]
    fn new_events_are_due_at_once_and_resent_only_after_the_interval() {
        let t0 = Instant::now();
        let mut out = Outbox::new("d", "r");
        let seq = out.create(draft("x"), 1);
        assert_eq!(out.due(t0, RESEND), vec![seq]);
        assert_eq!(out.mark_sent(seq, t0), Some(Sent::First));
        assert!(out.due(t0 + Duration::from_secs(4), RESEND).is_empty());
        assert_eq!(out.due(t0 + RESEND, RESEND), vec![seq]);
        assert_eq!(out.mark_sent(seq, t0 + RESEND), Some(Sent::Resend));
        assert!(out.due(t0 + RESEND, RESEND).is_empty());
    }

    #[test]
    fn acked_events_are_never_resent_and_duplicate_acks_are_reported() {
        let t0 = Instant::now();
        let mut out = Outbox::new("d", "r");
        let first = out.create(draft("x"), 1);
        let second = out.create(draft("y"), 2);
        out.mark_sent(first, t0);
        out.mark_sent(second, t0);
        let id = out.event(first).unwrap().id.clone();
        assert!(out.ack(&id));
        assert!(!out.ack(&id), "a second ack of the same id changes nothing");
        assert!(!out.ack("d-r-99"));
        assert_eq!(out.len(), 1);
        assert_eq!(out.due(t0 + RESEND, RESEND), vec![second]);
        assert_eq!(out.mark_sent(first, t0), None);
    }

    #[test]
    fn a_reconnect_makes_every_waiting_event_due_in_seq_order() {
        let t0 = Instant::now();
        let mut out = Outbox::new("d", "r");
        let seqs: Vec<_> = (0..3).map(|i| out.create(draft("x"), i)).collect();
        for &seq in &seqs {
            out.mark_sent(seq, t0);
        }
        assert!(out.due(t0, RESEND).is_empty());
        out.make_all_due();
        assert_eq!(out.due(t0, RESEND), seqs);
        assert_eq!(out.mark_sent(seqs[0], t0), Some(Sent::Resend));
    }

    #[test]
    fn an_event_the_client_never_took_stays_a_first_send() {
        let t0 = Instant::now();
        let mut out = Outbox::new("d", "r");
        let seq = out.create(draft("x"), 1);
        out.make_all_due();
        assert_eq!(out.mark_sent(seq, t0), Some(Sent::First));
        assert!(!out.is_empty());
    }
}
