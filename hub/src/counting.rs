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
//! entrance counter still counts visits). Owned by the
//! ingest thread, through `actions`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveTime;
use protocol::calendar::Calendar;
use protocol::{FieldValue, Telemetry, ENTRANCE_ROOM};

use crate::access::OpeningHours;
use crate::config::{Config, RoomConfig};
use crate::metrics::Metrics;
use crate::occupancy::Occupancy;
use crate::store::{Store, StoreError};
use crate::twin::Twin;

#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error("counter telemetry field `{0}` is not a whole number of people ≥ 0")]
    BadDelta(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// People through a door since the counter's last message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub entered: u64,
    pub left: u64,
}

impl Flow {
    /// Reads `in` and `out` (a missing field is 0).
    pub fn from_telemetry(telemetry: &Telemetry) -> Result<Flow, CountError> {
        Ok(Flow {
            entered: delta(telemetry, "in")?,
            left: delta(telemetry, "out")?,
        })
    }
}

fn delta(telemetry: &Telemetry, name: &'static str) -> Result<u64, CountError> {
    match telemetry.fields.iter().find(|(n, _)| n == name) {
        None => Ok(0),
        Some((_, FieldValue::Number(n))) if *n >= 0.0 && n.fract() == 0.0 && *n < 1e15 => {
            Ok(*n as u64)
        }
        Some(_) => Err(CountError::BadDelta(name)),
    }
}

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
        }
    }

    fn closes(&self, center: &str, room: &str) -> Option<NaiveTime> {
        self.closing
            .get(center)
            .and_then(|rooms| rooms.get(room))
            .copied()
            .unwrap_or(Some(self.center_closes))
    }

    /// Applies one counter message from `twin`.
    pub fn on_counter(
        &mut self,
        occupancy: &mut Occupancy,
        twin: &Twin,
        telemetry: &Telemetry,
    ) -> Result<(), CountError> {
        let flow = Flow::from_telemetry(telemetry)?;
        let (center, room) = (twin.center.as_str(), twin.room.as_str());
        if room == ENTRANCE_ROOM {
            self.count_visits(center, telemetry.ts, flow.entered)?;
        }
        let Some(close) = self.closes(center, room) else {
            return Ok(());
        };
        let key = (center.to_owned(), room.to_owned());
        let closed_since_last = self
            .last_ts
            .insert(key, telemetry.ts)
            .is_some_and(|last| last < self.calendar.last_closing(telemetry.ts, close));
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
    fn count_visits(&self, center: &str, ts: u64, people: u64) -> Result<(), CountError> {
        if people > 0 {
            let day = self.calendar.day(ts);
            self.store.add_visits(center, day, people)?;
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

    fn telemetry(ts: u64, fields: &[(&str, FieldValue)]) -> Telemetry {
        Telemetry {
            ts,
            seq: 1,
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn deltas_are_whole_people() {
        let t = telemetry(0, &[("in", FieldValue::Number(3.0))]);
        assert_eq!(
            Flow::from_telemetry(&t).unwrap(),
            Flow {
                entered: 3,
                left: 0
            }
        );
        for bad in [
            FieldValue::Number(-1.0),
            FieldValue::Number(1.5),
            FieldValue::Text("2".into()),
        ] {
            let t = telemetry(0, &[("out", bad)]);
            assert!(matches!(
                Flow::from_telemetry(&t),
                Err(CountError::BadDelta("out"))
            ));
        }
    }

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
