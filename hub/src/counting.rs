//! Counting people: people-counter telemetry (`{"in":n,"out":n}`, people
//! through the counter's door since its last message) into live room
//! occupancy and a center's visits per local day.
//!
//! A counter provisioned in room `entrance` counts the center: its `in` are
//! the center's visits (filed under the local day of the message's `ts`, in
//! the centers' time zone) and its occupancy is the center's headcount.
//! Other counters count their room. At the room's closing time (its
//! `[[rooms]]` hours, else `counting.closes`) everyone has left: the first
//! message after it starts the room from zero. A 24-hour room is counted by
//! its gates' passages only, so its counters do not move its occupancy (an
//! entrance counter still counts visits). The deltas and the `ts` arrive
//! checked (`input::Flow`, `input::DeviceTs`). Owned by the ingest thread,
//! through `actions`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveTime};
use protocol::calendar::Calendar;
use protocol::ENTRANCE_ROOM;

use crate::access::OpeningHours;
use crate::config::{Config, RoomConfig};
use crate::input::{DeviceTs, Flow};
use crate::metrics::Metrics;
use crate::occupancy::Occupancy;
use crate::records::Twin;
use crate::store::{Store, StoreError};

/// When a configured room closes, or `None` for a 24-hour room.
fn closing_time(room: &RoomConfig, center_closes: NaiveTime) -> Option<NaiveTime> {
    match OpeningHours::from_config(room) {
        Ok(OpeningHours::Always) => None,
        Ok(OpeningHours::Between { close, .. }) => Some(close),
        // invariant: config validation refused bad hours.
        Err(_) => Some(center_closes),
    }
}

pub struct Counting {
    store: Arc<Store>,
    metrics: Metrics,
    calendar: Calendar,
    /// center → room → closing time (`None`: open around the clock).
    closing: HashMap<String, HashMap<String, Option<NaiveTime>>>,
    center_closes: NaiveTime,
    /// `(center, room)` → `ts` of the room's last counter message.
    last_ts: HashMap<(String, String), u64>,
    /// Visits counted and not written yet, per center and local day.
    unwritten: HashMap<(String, NaiveDate), u64>,
}

impl Counting {
    /// Builds from validated config.
    pub fn new(store: Arc<Store>, metrics: Metrics, config: &Config) -> Counting {
        // invariant: validated at config load.
        let center_closes =
            NaiveTime::parse_from_str(&config.counting.closes, "%H:%M").unwrap_or(NaiveTime::MIN);
        let mut closing: HashMap<String, HashMap<String, Option<NaiveTime>>> = HashMap::new();
        for room in &config.rooms {
            closing
                .entry(room.center.clone())
                .or_default()
                .insert(room.id.clone(), closing_time(room, center_closes));
        }
        Counting {
            store,
            metrics,
            calendar: Calendar {
                tz: config.time_zone(),
            },
            closing,
            center_closes,
            last_ts: HashMap::new(),
            unwritten: HashMap::new(),
        }
    }

    /// Adds the visits counted since the last flush to the stored days.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for ((center, day), people) in std::mem::take(&mut self.unwritten) {
            self.store.add_visits(&center, day, people)?;
        }
        Ok(())
    }

    fn closes(&self, center: &str, room: &str) -> Option<NaiveTime> {
        self.closing
            .get(center)
            .and_then(|rooms| rooms.get(room))
            .copied()
            .unwrap_or(Some(self.center_closes))
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
        let Some(close) = self.closes(center, room) else {
            return Ok(());
        };
        let key = (center.to_owned(), room.to_owned());
        let closed_since_last = self
            .last_ts
            .insert(key, ts.ms())
            .is_some_and(|last| last < self.calendar.last_closing(ts.ms(), close));
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
        if people > 0 {
            let day = self.calendar.day(ts.ms());
            *self.unwritten.entry((center.to_owned(), day)).or_default() += people;
            self.metrics
                .visits
                .with_label_values(&[center])
                .inc_by(people);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_rooms_close_by_their_hours() {
        let center = NaiveTime::from_hms_opt(21, 30, 0).unwrap();
        let room = |hours: Option<&str>, close: Option<&str>| RoomConfig {
            center: "c".into(),
            id: "r".into(),
            capacity: 10,
            hours: hours.map(Into::into),
            open: close.map(|_| "08:00".into()),
            close: close.map(Into::into),
        };
        assert_eq!(closing_time(&room(Some("24h"), None), center), None);
        assert_eq!(
            closing_time(&room(None, Some("20:00")), center),
            NaiveTime::from_hms_opt(20, 0, 0)
        );
    }
}
