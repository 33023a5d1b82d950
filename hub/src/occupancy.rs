//! Live room occupancy and visits: how many people are in each room of
//! each center now, and how many came through each center's entrance per
//! local day.
//!
//! One count per `(center, room)`, moved by gate `passage` events and
//! counter deltas by the `counting` rules, never below zero, kept here at
//! every change and written through `store` when ingest writes its twins
//! (`flush`: before the fsync of a batch with events, else at most every
//! 100 ms) and exported as `yizhan_room_occupancy{center,room}`; a room
//! with configured seats also has a ratio and a saturation alarm. A
//! counter provisioned in room `entrance` counts the center: its `in` are
//! the center's visits (filed under the local day of the message's `ts`)
//! and its occupancy is the center's headcount. At a room's closing time
//! everyone has left: the first counter message after it starts the room
//! from zero. A 24-hour room is counted by its gates' passages only, so
//! its counters do not move its occupancy (an entrance counter still counts
//! visits). The deltas and the `ts` arrive checked (`input::Flow`,
//! `input::DeviceTs`). Owned by the ingest thread, through `actions`; gate
//! access decisions read it, and its rooms' entries (seats, hours: the
//! file's, then the API's, which reach ingest as `Control::Room`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use protocol::calendar::Calendar;
use protocol::ENTRANCE_ROOM;

use crate::clock::unix_ms;
use crate::counting::{after_flow, closed_between, closing_time, saturated_after, Direction};
use crate::input::{DeviceTs, Flow};
use crate::metrics::Metrics;
use crate::records::{RoomCount, Twin};
use crate::settings::{RoomRules, Rooms};
use crate::store::{Store, StoreError};
use crate::visits::VisitGauges;

/// Every room's live count.
pub struct Occupancy {
    store: Arc<Store>,
    metrics: Metrics,
    /// Rooms with an entry: their seats and hours.
    rooms: Rooms,
    /// center → room → count.
    counts: HashMap<String, HashMap<String, RoomCount>>,
    /// Rooms changed since the last `flush`.
    unwritten: HashSet<(String, String)>,
}

impl Occupancy {
    /// Loads every room's last known occupancy; `rooms` give the seats.
    pub fn load(
        store: Arc<Store>,
        metrics: Metrics,
        rooms: Rooms,
    ) -> Result<Occupancy, StoreError> {
        let mut occupancy = Occupancy {
            store: store.clone(),
            metrics,
            rooms,
            counts: HashMap::new(),
            unwritten: HashSet::new(),
        };
        for (center, room, count) in store.occupancies()? {
            occupancy.export(&center, &room, count);
            occupancy
                .counts
                .entry(center)
                .or_default()
                .insert(room, count);
        }
        Ok(occupancy)
    }

    /// The rooms with an entry (seats, hours).
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Sets a room's entry (through the API): its seats count from now on.
    pub fn set_room(&mut self, center: &str, room: &str, rules: RoomRules) {
        self.rooms.put(center, room, rules);
        self.export(center, room, self.count(center, room));
    }

    /// People in the room now (0 for a room never seen).
    pub fn people(&self, center: &str, room: &str) -> u64 {
        self.count(center, room).people
    }

    fn count(&self, center: &str, room: &str) -> RoomCount {
        self.counts
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
        self.counts
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
        self.rooms.seats(center, room)
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

/// People counters' messages: they move rooms' occupancy and count the
/// centers' visits.
pub struct Counters {
    store: Arc<Store>,
    metrics: Metrics,
    calendar: Calendar,
    /// `(center, room)` → `ts` of the room's last counter message.
    last_ts: HashMap<(String, String), u64>,
    /// Visits counted and not written yet, per center and local day.
    unwritten: HashMap<(String, NaiveDate), u64>,
    /// Visits of the current local day and month.
    visit_gauges: VisitGauges,
}

impl Counters {
    /// Counters over `store`; this month's visits read for the gauges.
    pub fn load(
        store: Arc<Store>,
        metrics: Metrics,
        calendar: Calendar,
    ) -> Result<Counters, StoreError> {
        let visit_gauges = VisitGauges::load(&store, metrics.clone(), calendar, unix_ms())?;
        Ok(Counters {
            store,
            metrics,
            calendar,
            last_ts: HashMap::new(),
            unwritten: HashMap::new(),
            visit_gauges,
        })
    }

    /// Adds the visits counted since the last flush to the stored days;
    /// moves the visit gauges to a new local day once it began.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.visit_gauges.turn(unix_ms());
        for ((center, day), people) in std::mem::take(&mut self.unwritten) {
            self.store.add_visits(&center, day, people)?;
        }
        Ok(())
    }

    /// Applies one counter message from `twin`: `flow` people at `ts`.
    pub fn on_counter(
        &mut self,
        occupancy: &mut Occupancy,
        twin: &Twin,
        flow: Flow,
        ts: DeviceTs,
    ) -> Result<(), StoreError> {
        let (center, room) = (twin.center.as_str(), twin.room.as_str());
        if room == ENTRANCE_ROOM {
            self.count_visits(center, ts, flow.entered)?;
        }
        let Some(close) = closing_time(occupancy.rooms(), center, room) else {
            return Ok(());
        };
        let key = (center.to_owned(), room.to_owned());
        let closed_since_last = self
            .last_ts
            .insert(key, ts.ms())
            .is_some_and(|last| closed_between(&self.calendar, last, ts.ms(), close));
        if closed_since_last && occupancy.people(center, room) > 0 {
            occupancy.reset(center, room)?;
        }
        if flow == Flow::default() {
            return Ok(());
        }
        occupancy.apply(center, room, flow.entered, flow.left)?;
        Ok(())
    }

    /// `people` came in through `center`'s entrance at device time `ts`.
    fn count_visits(&mut self, center: &str, ts: DeviceTs, people: u64) -> Result<(), StoreError> {
        let day = self.calendar.day(ts.ms());
        // Also at 0: the center's series exist from its first message.
        self.visit_gauges.counted(center, day, people);
        if people > 0 {
            *self.unwritten.entry((center.to_owned(), day)).or_default() += people;
            self.metrics
                .visits
                .with_label_values(&[center])
                .inc_by(people);
        }
        Ok(())
    }
}
