//! Counting people (pure): which way someone went through a door, the
//! people in a room after a flow (never below zero), when a room's seats
//! are saturated (raised at 90%, cleared below 80%), when a room closes
//! (its `[[rooms]]` hours, else `[counting] closes`; a 24-hour room never)
//! and whether it closed between two counter messages (then everyone has
//! left and its count starts from zero). `occupancy` keeps the counts
//! these rules move.

use chrono::NaiveTime;
use protocol::calendar::Calendar;

use crate::settings::{OpeningHours, Rooms};

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

/// When `(center, room)` closes, or `None` for a 24-hour room.
pub fn closing_time(rooms: &Rooms, center: &str, room: &str) -> Option<NaiveTime> {
    match rooms.get(center, room).map(|rules| rules.hours) {
        Some(OpeningHours::Always) => None,
        Some(OpeningHours::Between { close, .. }) => Some(close),
        None => Some(rooms.default_close),
    }
}

/// Whether a room closing at `close` closed after a message at `last_ts`
/// and at or before one at `ts`.
pub fn closed_between(calendar: &Calendar, last_ts: u64, ts: u64, close: NaiveTime) -> bool {
    last_ts < calendar.last_closing(ts, close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RoomConfig;

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

    #[test]
    fn configured_rooms_close_by_their_hours() {
        let center = NaiveTime::from_hms_opt(21, 30, 0).unwrap();
        let room = |id: &str, hours: Option<&str>, close: Option<&str>| RoomConfig {
            center: "c".into(),
            id: id.into(),
            capacity: 10,
            hours: hours.map(Into::into),
            open: close.map(|_| "08:00".into()),
            close: close.map(Into::into),
        };
        let rooms = Rooms::parse(
            &[
                room("gym", Some("24h"), None),
                room("r", None, Some("20:00")),
            ],
            center,
        )
        .unwrap();
        assert_eq!(closing_time(&rooms, "c", "gym"), None);
        assert_eq!(
            closing_time(&rooms, "c", "r"),
            NaiveTime::from_hms_opt(20, 0, 0)
        );
        assert_eq!(closing_time(&rooms, "c", "hall"), Some(center), "no entry");
    }

    #[test]
    fn a_room_closed_between_two_messages_across_its_closing_time() {
        let cal = Calendar::default();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let close = NaiveTime::from_hms_opt(21, 30, 0).unwrap();
        let closing = cal.at(day, close);
        let hour = 3_600_000;
        for (last, now, expect) in [
            (closing - hour, closing - 1, false),
            (closing - hour, closing, true),
            (closing - 1, closing + hour, true),
            (closing, closing + hour, false),
            (closing + hour, closing + 12 * hour, false),
            (closing - 24 * hour - 1, closing - hour, true),
        ] {
            assert_eq!(
                closed_between(&cal, last, now, close),
                expect,
                "{last} → {now}"
            );
        }
    }
}
