//! Live room occupancy: how many people are in each room of each center
//! now, and whether the room is saturated.
//!
//! One count per `(center, room)`, never below zero, kept here at every
//! change and written through `store` when ingest writes its twins (`flush`:
//! before the fsync of a batch with events, else at most every 100 ms) and
//! exported as `yizhan_room_occupancy{center,room}`. Gate `passage` events
//! and counter deltas (`counting`) move it; the room `entrance` holds a
//! center's headcount. A room with configured seats (its `capacity`) also
//! has a ratio and a saturation alarm: raised at 90% of its seats, cleared
//! below 80%. Owned by the ingest thread; gate access decisions read it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::RoomConfig;
use crate::metrics::Metrics;
use crate::records::RoomCount;
use crate::store::{Store, StoreError};

/// Share of seats taken at which a room becomes saturated.
pub const SATURATION_RAISE: f64 = 0.9;
/// Share of seats below which a saturated room is clear again.
pub const SATURATION_CLEAR: f64 = 0.8;

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

/// Whether a room holding `people` of `seats` is saturated, given whether
/// it was: raised at [`SATURATION_RAISE`], cleared below
/// [`SATURATION_CLEAR`], unchanged in between.
pub fn saturated_after(was: bool, people: u64, seats: u64) -> bool {
    let share = people as f64 / seats.max(1) as f64;
    if was {
        share >= SATURATION_CLEAR
    } else {
        share >= SATURATION_RAISE
    }
}

pub struct Occupancy {
    store: Arc<Store>,
    metrics: Metrics,
    /// center → room → seats, for rooms with a configured capacity.
    seats: HashMap<String, HashMap<String, u64>>,
    /// center → room → count.
    rooms: HashMap<String, HashMap<String, RoomCount>>,
    /// Rooms changed since the last `flush`.
    unwritten: HashSet<(String, String)>,
}

impl Occupancy {
    /// Loads every room's last known occupancy; `rooms` give the seats.
    pub fn load(
        store: Arc<Store>,
        metrics: Metrics,
        rooms: &[RoomConfig],
    ) -> Result<Occupancy, StoreError> {
        let mut seats: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for room in rooms {
            seats
                .entry(room.center.clone())
                .or_default()
                .insert(room.id.clone(), u64::from(room.capacity));
        }
        let mut occupancy = Occupancy {
            store: store.clone(),
            metrics,
            seats,
            rooms: HashMap::new(),
            unwritten: HashSet::new(),
        };
        for (center, room, count) in store.occupancies()? {
            occupancy.export(&center, &room, count);
            occupancy
                .rooms
                .entry(center)
                .or_default()
                .insert(room, count);
        }
        Ok(occupancy)
    }

    /// People in the room now (0 for a room never seen).
    pub fn people(&self, center: &str, room: &str) -> u64 {
        self.count(center, room).people
    }

    fn count(&self, center: &str, room: &str) -> RoomCount {
        self.rooms
            .get(center)
            .and_then(|rooms| rooms.get(room))
            .copied()
            .unwrap_or_default()
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

    /// Everyone left (the room closed).
    pub fn reset(&mut self, center: &str, room: &str) -> Result<u64, StoreError> {
        let people = self.people(center, room);
        self.apply(center, room, 0, people)
    }

    /// People in and out of the room; returns the new occupancy.
    pub fn apply(
        &mut self,
        center: &str,
        room: &str,
        entered: u64,
        left: u64,
    ) -> Result<u64, StoreError> {
        let before = self.count(center, room);
        let people = after_flow(before.people, entered, left);
        let saturated = match self.seats_of(center, room) {
            Some(seats) => saturated_after(before.saturated, people, seats),
            None => false,
        };
        let count = RoomCount { people, saturated };
        self.unwritten.insert((center.to_owned(), room.to_owned()));
        self.rooms
            .entry(center.to_string())
            .or_default()
            .insert(room.to_string(), count);
        if saturated && !before.saturated {
            self.metrics
                .room_saturation_alarms
                .with_label_values(&[center, room])
                .inc();
            tracing::warn!(center, room, people, "room saturated");
        } else if before.saturated && !saturated {
            tracing::info!(center, room, people, "room saturation cleared");
        }
        self.export(center, room, count);
        Ok(people)
    }

    /// Writes the rooms changed since the last flush.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for (center, room) in std::mem::take(&mut self.unwritten) {
            let count = self.count(&center, &room);
            self.store.put_occupancy(&center, &room, &count)?;
        }
        Ok(())
    }

    fn seats_of(&self, center: &str, room: &str) -> Option<u64> {
        self.seats
            .get(center)
            .and_then(|rooms| rooms.get(room))
            .copied()
    }

    fn export(&self, center: &str, room: &str, count: RoomCount) {
        let labels = [center, room];
        self.metrics
            .room_occupancy
            .with_label_values(&labels)
            .set(count.people as i64);
        if let Some(seats) = self.seats_of(center, room) {
            self.metrics
                .room_occupancy_ratio
                .with_label_values(&labels)
                .set(count.people as f64 / seats.max(1) as f64);
            self.metrics
                .room_saturated
                .with_label_values(&labels)
                .set(i64::from(count.saturated));
        }
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
    fn saturation_is_raised_at_90_percent_and_cleared_below_80() {
        assert!(!saturated_after(false, 17, 20));
        assert!(saturated_after(false, 18, 20));
        assert!(saturated_after(true, 16, 20), "still saturated at 80%");
        assert!(!saturated_after(true, 15, 20));
        assert!(
            saturated_after(false, 1, 0),
            "a room without seats is full at once"
        );
    }

    #[test]
    fn directions_parse_from_passage_events() {
        assert_eq!(Direction::parse("in"), Some(Direction::In));
        assert_eq!(Direction::parse("out"), Some(Direction::Out));
        assert_eq!(Direction::parse("sideways"), None);
    }
}
