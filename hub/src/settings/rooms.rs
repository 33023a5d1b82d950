//! Rooms behind gates and counters (`[[rooms]]`): their seats and opening
//! hours, checked, and when a room without an entry closes
//! (`[counting] closes`).

use std::collections::{HashMap, HashSet};

use chrono::NaiveTime;

use super::opening::OpeningHours;
use super::{is_label, FieldError, RoomConfig};

/// A room's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRules {
    /// People allowed in at once (its seats).
    pub capacity: u64,
    pub hours: OpeningHours,
}

/// Every configured room, by center and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Rooms {
    /// center → room → rules: looked up by `&str`, without allocating.
    by_center: HashMap<String, HashMap<String, RoomRules>>,
    /// When a room without an entry closes (local time).
    pub default_close: NaiveTime,
}

impl Rooms {
    /// Checks the entries; an error names the field (`rooms[i].field`).
    pub fn parse(entries: &[RoomConfig], default_close: NaiveTime) -> Result<Rooms, FieldError> {
        let mut by_center: HashMap<String, HashMap<String, RoomRules>> = HashMap::new();
        let mut seen = HashSet::new();
        for (index, room) in entries.iter().enumerate() {
            let invalid = |field: &str, reason: String| (format!("rooms[{index}].{field}"), reason);
            for (field, value) in [("center", &room.center), ("id", &room.id)] {
                if !is_label(value) {
                    return Err(invalid(field, "1-64 letters, digits, '-' or '_'".into()));
                }
            }
            if room.capacity == 0 {
                return Err(invalid("capacity", "must be at least 1".into()));
            }
            let hours =
                OpeningHours::from_room(room).map_err(|(field, reason)| invalid(field, reason))?;
            if !seen.insert((&room.center, &room.id)) {
                return Err(invalid("id", "another entry has this center and id".into()));
            }
            let rules = RoomRules {
                capacity: u64::from(room.capacity),
                hours,
            };
            by_center
                .entry(room.center.clone())
                .or_default()
                .insert(room.id.clone(), rules);
        }
        Ok(Rooms {
            by_center,
            default_close,
        })
    }

    /// The rules of a configured room.
    pub fn get(&self, center: &str, room: &str) -> Option<&RoomRules> {
        self.by_center.get(center).and_then(|rooms| rooms.get(room))
    }

    /// A configured room's seats.
    pub fn seats(&self, center: &str, room: &str) -> Option<u64> {
        self.get(center, room).map(|rules| rules.capacity)
    }
}
