//! Live room occupancy: how many people are in each room of each center now.
//!
//! One number per `(center, room)`, never below zero, written through
//! `store` at every change (made durable by ingest's next fsync) and
//! exported as `yizhan_room_occupancy{center,room}`. Gate `passage` events
//! move it today; counter deltas (`apply` with both directions) will too.
//! Owned by the ingest thread; gate access decisions read it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Which way someone went through a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    /// `"in"` or `"out"`, as in a `passage` event.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "in" => Some(Direction::In),
            "out" => Some(Direction::Out),
            _ => None,
        }
    }
}

/// People in a room after `entered` came in and `left` went out, starting
/// from `people`. More leaving than were counted inside (a missed entry)
/// floors at zero rather than going negative.
pub fn after_flow(people: u64, entered: u64, left: u64) -> u64 {
    people.saturating_add(entered).saturating_sub(left)
}

pub struct Occupancy {
    store: Arc<Store>,
    metrics: Metrics,
    /// center → room → people.
    rooms: HashMap<String, HashMap<String, u64>>,
}

impl Occupancy {
    /// Loads every room's last known occupancy.
    pub fn load(store: Arc<Store>, metrics: Metrics) -> Result<Occupancy, StoreError> {
        let mut rooms: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for (center, room, people) in store.occupancies()? {
            metrics
                .room_occupancy
                .with_label_values(&[&center, &room])
                .set(people as i64);
            rooms.entry(center).or_default().insert(room, people);
        }
        Ok(Occupancy {
            store,
            metrics,
            rooms,
        })
    }

    /// People in the room now (0 for a room never seen).
    pub fn people(&self, center: &str, room: &str) -> u64 {
        self.rooms
            .get(center)
            .and_then(|rooms| rooms.get(room))
            .copied()
            .unwrap_or(0)
    }

    /// One person through a door of the room.
    pub fn passage(
        &mut self,
        center: &str,
        room: &str,
        direction: Direction,
    ) -> Result<u64, StoreError> {
        match direction {
            Direction::In => self.apply(center, room, 1, 0),
            Direction::Out => self.apply(center, room, 0, 1),
        }
    }

    /// People in and out of the room; returns the new occupancy.
    pub fn apply(
        &mut self,
        center: &str,
        room: &str,
        entered: u64,
        left: u64,
    ) -> Result<u64, StoreError> {
        let people = after_flow(self.people(center, room), entered, left);
        self.store.put_occupancy(center, room, people)?;
        self.rooms
            .entry(center.to_string())
            .or_default()
            .insert(room.to_string(), people);
        self.metrics
            .room_occupancy
            .with_label_values(&[center, room])
            .set(people as i64);
        Ok(people)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_never_goes_below_zero() {
        assert_eq!(after_flow(0, 0, 1), 0);
        assert_eq!(after_flow(2, 1, 0), 3);
        assert_eq!(after_flow(3, 2, 4), 1);
        assert_eq!(after_flow(1, 0, 5), 0);
        assert_eq!(after_flow(u64::MAX, 1, 0), u64::MAX);
    }

    #[test]
    fn directions_parse_from_passage_events() {
        assert_eq!(Direction::parse("in"), Some(Direction::In));
        assert_eq!(Direction::parse("out"), Some(Direction::Out));
        assert_eq!(Direction::parse("sideways"), None);
    }
}
