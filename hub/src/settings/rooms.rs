//! Rooms behind gates and counters: their seats and opening hours, checked
//! once whether they come from the file (`[[rooms]]`) or the API, and when
//! a room without an entry closes (`[counting] closes`).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveTime;

use super::opening::OpeningHours;
use super::{is_label, FieldError, RoomConfig};

/// Most seats a room may have (a number from a request is range-checked).
pub const MAX_SEATS: u32 = 100_000;

/// A room's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRules {
    /// People allowed in at once (its seats).
    pub capacity: u64,
    pub hours: OpeningHours,
}

impl RoomRules {
    /// Checks one entry; an error names the field (relative to the entry).
    pub fn from_config(room: &RoomConfig) -> Result<RoomRules, FieldError> {
        let invalid = |field: &str, reason: &str| (field.to_string(), reason.to_string());
        for (field, value) in [("center", &room.center), ("id", &room.id)] {
            if !is_label(value) {
                return Err(invalid(field, "1-64 letters, digits, '-' or '_'"));
            }
        }
        if !(1..=MAX_SEATS).contains(&room.capacity) {
            return Err(invalid("capacity", "must be from 1 to 100000"));
        }
        let hours = OpeningHours::from_room(room).map_err(|(f, reason)| (f.to_string(), reason))?;
        Ok(RoomRules {
            capacity: u64::from(room.capacity),
            hours,
        })
    }

    /// The entry these rules were read from (hours written back as the
    /// file writes them).
    pub fn config(&self, center: &str, id: &str) -> RoomConfig {
        let hhmm = |t: NaiveTime| t.format("%H:%M").to_string();
        let (hours, open, close) = match self.hours {
            OpeningHours::Always => (Some("24h".to_string()), None, None),
            OpeningHours::Between { open, close } => (None, Some(hhmm(open)), Some(hhmm(close))),
        };
        RoomConfig {
            center: center.to_string(),
            id: id.to_string(),
            // invariant: checked to be at most MAX_SEATS when read.
            capacity: u32::try_from(self.capacity).unwrap_or(MAX_SEATS),
            hours,
            open,
            close,
        }
    }
}

/// Every room with an entry, by center and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Rooms {
    /// center → room → rules: looked up by `&str`, without allocating.
    by_center: HashMap<String, HashMap<String, RoomRules>>,
    /// When a room without an entry closes (local time).
    pub default_close: NaiveTime,
}

impl Rooms {
    /// Checks the file's entries; an error names the field
    /// (`rooms[i].field`).
    pub fn parse(entries: &[RoomConfig], default_close: NaiveTime) -> Result<Rooms, FieldError> {
        let mut rooms = Rooms {
            by_center: HashMap::new(),
            default_close,
        };
        let mut seen = HashSet::new();
        for (index, room) in entries.iter().enumerate() {
            let at = |(field, reason): FieldError| (format!("rooms[{index}].{field}"), reason);
            let rules = RoomRules::from_config(room).map_err(at)?;
            if !seen.insert((&room.center, &room.id)) {
                return Err(at((
                    "id".into(),
                    "another entry has this center and id".into(),
                )));
            }
            rooms.put(&room.center, &room.id, rules);
        }
        Ok(rooms)
    }

    /// Adds or replaces a room's rules.
    pub fn put(&mut self, center: &str, room: &str, rules: RoomRules) {
        self.by_center
            .entry(center.to_string())
            .or_default()
            .insert(room.to_string(), rules);
    }

    /// The rules of a room with an entry.
    pub fn get(&self, center: &str, room: &str) -> Option<&RoomRules> {
        self.by_center.get(center).and_then(|rooms| rooms.get(room))
    }

    /// A room's seats, if it has an entry.
    pub fn seats(&self, center: &str, room: &str) -> Option<u64> {
        self.get(center, room).map(|rules| rules.capacity)
    }

    /// The entries of `center`'s rooms, in id order.
    pub fn of_center(&self, center: &str) -> Vec<RoomConfig> {
        let Some(rooms) = self.by_center.get(center) else {
            return Vec::new();
        };
        let sorted: BTreeMap<_, _> = rooms.iter().collect();
        sorted
            .into_iter()
            .map(|(id, rules)| rules.config(center, id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(capacity: u32, hours: Option<&str>, open: Option<&str>) -> RoomConfig {
        RoomConfig {
            center: "c".into(),
            id: "study".into(),
            capacity,
            hours: hours.map(Into::into),
            open: open.map(Into::into),
            close: open.map(|_| "21:30".into()),
        }
    }

    #[test]
    fn an_entry_is_checked_and_written_back_as_it_was_given() {
        let check = |e: RoomConfig| RoomRules::from_config(&e).map(|r| r.config("c", "study"));
        for given in [entry(40, None, Some("08:30")), entry(1, Some("24h"), None)] {
            assert_eq!(check(given.clone()), Ok(given));
        }
        let field = |e: RoomConfig| check(e).map_err(|(field, _)| field);
        assert_eq!(field(entry(0, Some("24h"), None)), Err("capacity".into()));
        assert_eq!(
            field(entry(MAX_SEATS + 1, Some("24h"), None)),
            Err("capacity".into())
        );
        assert_eq!(field(entry(4, None, None)), Err("hours".into()));
        assert_eq!(field(entry(4, None, Some("8:30am"))), Err("open".into()));
        let mut spaced = entry(4, Some("24h"), None);
        spaced.id = "study room".into();
        assert_eq!(field(spaced), Err("id".into()));
    }

    #[test]
    fn a_put_replaces_a_room_and_a_center_lists_its_rooms_in_order() {
        let close = NaiveTime::from_hms_opt(21, 0, 0).unwrap();
        let mut rooms = Rooms::parse(&[entry(40, None, Some("08:30"))], close).unwrap();
        let gym = RoomRules {
            capacity: 4,
            hours: OpeningHours::Always,
        };
        rooms.put("c", "gym", gym);
        rooms.put("c", "study", gym);
        assert_eq!(rooms.seats("c", "study"), Some(4));
        let ids: Vec<String> = rooms.of_center("c").into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["gym", "study"]);
        assert!(rooms.of_center("elsewhere").is_empty());
    }
}
