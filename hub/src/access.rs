//! Gate access decisions: who may enter the room behind a gate, now.
//!
//! A gate's `access_request` event (`{"credential":"…"}`) is answered with an
//! `open` or a `deny` command whose args carry the reason. The decision is an
//! ordered list of rules (`RULES`); the first that fails names the reason:
//!
//! 1. the credential belongs to a registered resident,
//! 2. who is not blocked,
//! 3. the gate's room is configured (`[[rooms]]`),
//! 4. the room is open now (its hours, in `[access] time_zone`),
//! 5. the room's live occupancy is below its capacity,
//! 6. a gate bound to a bookable resource (listed in its `devices`) opens
//!    only for a resident holding a booking of it now (from `grace_minutes`
//!    before the slot to its end, on the schedule's clock).
//!
//! An open gate checks the resident's booking in (`Schedule::gate_passage`).
//! Credentials are looked up by keyed hash only (`secrets::credential_hash`):
//! `input` hashes a request's credential before the event is stored, so the
//! clear credential never gets here and is never logged.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveTime, Timelike};
use chrono_tz::Tz;

use crate::bookings::Schedule;
use crate::config::RoomConfig;
use crate::records::Resident;
use crate::store::Store;

/// When a room is open, in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningHours {
    /// Day and night (the 24-hour gym).
    Always,
    /// From `open` (inclusive) to `close` (exclusive); `close` before `open`
    /// spans midnight.
    Between { open: NaiveTime, close: NaiveTime },
}

impl OpeningHours {
    /// Reads a room entry's hours; an error names the field and the reason.
    pub fn from_config(room: &RoomConfig) -> Result<OpeningHours, (&'static str, String)> {
        OpeningHours::parse(room.hours.as_deref(), &room.open, &room.close)
    }

    /// Reads `hours` or `open` and `close`; an error names the field.
    pub fn parse(
        hours: Option<&str>,
        open: &Option<String>,
        close: &Option<String>,
    ) -> Result<OpeningHours, (&'static str, String)> {
        match (hours, open, close) {
            (Some("24h"), None, None) => Ok(OpeningHours::Always),
            (Some(other), None, None) => Err((
                "hours",
                format!("{other:?}: the only value is \"24h\"; otherwise give open and close"),
            )),
            (Some(_), _, _) => Err(("hours", "give either hours or open and close".into())),
            (None, Some(open), Some(close)) => {
                let open = parse_hhmm(open).map_err(|e| ("open", e))?;
                let close = parse_hhmm(close).map_err(|e| ("close", e))?;
                if open == close {
                    return Err(("close", "equals open; use hours = \"24h\"".into()));
                }
                Ok(OpeningHours::Between { open, close })
            }
            (None, None, _) => Err((
                "hours",
                "missing: give hours = \"24h\" or open and close".into(),
            )),
            (None, Some(_), None) => Err(("close", "missing (open is given)".into())),
        }
    }

    pub fn is_open(self, local: NaiveTime) -> bool {
        match self {
            OpeningHours::Always => true,
            OpeningHours::Between { open, close } if open < close => local >= open && local < close,
            OpeningHours::Between { open, close } => local >= open || local < close,
        }
    }
}

pub fn parse_hhmm(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day as HH:MM"))
}

/// A room's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRules {
    pub capacity: u64,
    pub hours: OpeningHours,
}

/// Why a gate stays shut. `as_str` is the `reason` in the deny command's
/// args and in `yizhan_access_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The request carries no credential string.
    BadRequest,
    UnknownResident,
    Blocked,
    /// The gate's room has no `[[rooms]]` entry.
    UnknownRoom,
    Closed,
    Full,
    /// The gate guards a bookable resource and the resident holds no
    /// booking of it now.
    NoBooking,
    /// The hub could not read its store (fails closed).
    HubError,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::BadRequest => "bad_request",
            DenyReason::UnknownResident => "unknown_resident",
            DenyReason::Blocked => "blocked",
            DenyReason::UnknownRoom => "unknown_room",
            DenyReason::Closed => "closed",
            DenyReason::Full => "full",
            DenyReason::NoBooking => "no_booking",
            DenyReason::HubError => "hub_error",
        }
    }
}

/// Everything a decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub resident: Option<&'a Resident>,
    pub room: Option<&'a RoomRules>,
    pub local_time: NaiveTime,
    pub occupancy: u64,
    /// `None`: the gate guards no bookable resource; else whether the
    /// resident holds a booking of it now.
    pub booking: Option<bool>,
}

/// One rule of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Registered,
    NotBlocked,
    RoomKnown,
    OpeningHours,
    Capacity,
    Booking,
}

/// The rules, in the order they are checked.
const RULES: [Rule; 6] = [
    Rule::Registered,
    Rule::NotBlocked,
    Rule::RoomKnown,
    Rule::OpeningHours,
    Rule::Capacity,
    Rule::Booking,
];

impl Rule {
    fn check(self, request: &Request) -> Result<(), DenyReason> {
        let pass = match self {
            Rule::Registered => request.resident.is_some(),
            Rule::NotBlocked => request.resident.is_some_and(|r| !r.blocked),
            Rule::RoomKnown => request.room.is_some(),
            Rule::OpeningHours => request
                .room
                .is_some_and(|room| room.hours.is_open(request.local_time)),
            Rule::Capacity => request
                .room
                .is_some_and(|room| request.occupancy < room.capacity),
            Rule::Booking => request.booking != Some(false),
        };
        pass.then_some(()).ok_or(match self {
            Rule::Registered => DenyReason::UnknownResident,
            Rule::NotBlocked => DenyReason::Blocked,
            Rule::RoomKnown => DenyReason::UnknownRoom,
            Rule::OpeningHours => DenyReason::Closed,
            Rule::Capacity => DenyReason::Full,
            Rule::Booking => DenyReason::NoBooking,
        })
    }
}

/// The pure decision: `Ok` opens the gate, `Err` names the first rule that
/// failed.
pub fn decide(request: &Request) -> Result<(), DenyReason> {
    RULES.iter().try_for_each(|rule| rule.check(request))
}

/// The gate side of the hub: rooms and the time zone.
pub struct Access {
    store: Arc<Store>,
    time_zone: Tz,
    /// center → room → rules.
    rooms: HashMap<String, HashMap<String, RoomRules>>,
    /// Bookings, for gates bound to a bookable resource.
    schedule: Option<Arc<Schedule>>,
}

impl Access {
    /// Builds from validated config (`Config::validate` ran).
    pub fn new(store: Arc<Store>, time_zone: Tz, rooms: &[RoomConfig]) -> Access {
        let mut by_center: HashMap<String, HashMap<String, RoomRules>> = HashMap::new();
        for room in rooms {
            // invariant: validated at config load; a bad entry never gets here.
            let hours = OpeningHours::from_config(room).unwrap_or(OpeningHours::Always);
            let rules = RoomRules {
                capacity: u64::from(room.capacity),
                hours,
            };
            by_center
                .entry(room.center.clone())
                .or_default()
                .insert(room.id.clone(), rules);
        }
        Access {
            time_zone,
            rooms: by_center,
            store,
            schedule: None,
        }
    }

    /// Gates bound to bookable resources open for booked residents only.
    pub fn set_schedule(&mut self, schedule: Arc<Schedule>) {
        self.schedule = Some(schedule);
    }

    /// Decides a request at `gate` for the room `(center, room)` holding
    /// `occupancy` people, at unix ms `now_ms`. `credential_hash` is the
    /// keyed hash of the request's credential, `None` when it carried none.
    /// `Ok` names the resident let in.
    pub fn decide(
        &self,
        gate: &str,
        (center, room): (&str, &str),
        credential_hash: Option<&str>,
        occupancy: u64,
        now_ms: u64,
    ) -> Result<String, DenyReason> {
        let hash = credential_hash.ok_or(DenyReason::BadRequest)?;
        let resident = self.store.resident_by_credential(hash).map_err(|error| {
            tracing::error!(%error, "resident lookup failed; denying");
            DenyReason::HubError
        })?;
        let booking = match (&self.schedule, &resident) {
            (Some(schedule), Some(resident)) => schedule
                .holds_booking_now(gate, &resident.id)
                .map_err(|error| {
                    tracing::error!(%error, "booking lookup failed; denying");
                    DenyReason::HubError
                })?,
            _ => None,
        };
        let request = Request {
            resident: resident.as_ref(),
            room: self.rooms.get(center).and_then(|rooms| rooms.get(room)),
            local_time: self.local_time(now_ms),
            occupancy,
            booking,
        };
        decide(&request)?;
        Ok(resident.map(|r| r.id).unwrap_or_default())
    }

    fn local_time(&self, now_ms: u64) -> NaiveTime {
        let utc = chrono::DateTime::from_timestamp_millis(now_ms as i64).unwrap_or_default();
        let local = utc.with_timezone(&self.time_zone);
        // Minute resolution is what opening hours are written in.
        NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second())
            .unwrap_or(NaiveTime::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> NaiveTime {
        parse_hhmm(text).unwrap()
    }

    fn resident(blocked: bool) -> Resident {
        Resident {
            id: "r1".into(),
            credential_hash: String::new(),
            group: None,
            blocked,
            created_at: 0,
        }
    }

    fn room(capacity: u64, hours: OpeningHours) -> RoomRules {
        RoomRules { capacity, hours }
    }

    fn check(
        resident: Option<&Resident>,
        room: Option<&RoomRules>,
        at: &str,
        occupancy: u64,
        expect: Result<(), DenyReason>,
    ) {
        check_booked(resident, room, at, occupancy, None, expect);
    }

    fn check_booked(
        resident: Option<&Resident>,
        room: Option<&RoomRules>,
        at: &str,
        occupancy: u64,
        booking: Option<bool>,
        expect: Result<(), DenyReason>,
    ) {
        let request = Request {
            resident,
            room,
            local_time: time(at),
            occupancy,
            booking,
        };
        assert_eq!(decide(&request), expect, "{request:?}");
    }

    #[test]
    fn the_first_failing_rule_names_the_reason() {
        let (ok, blocked) = (resident(false), resident(true));
        let day = OpeningHours::Between {
            open: time("07:00"),
            close: time("22:00"),
        };
        let gym = room(2, OpeningHours::Always);
        let yoga = room(2, day);
        check(Some(&ok), Some(&gym), "03:00", 1, Ok(()));
        check(Some(&ok), Some(&yoga), "07:00", 0, Ok(()));
        check(
            None,
            Some(&gym),
            "03:00",
            0,
            Err(DenyReason::UnknownResident),
        );
        check(
            Some(&blocked),
            Some(&gym),
            "03:00",
            0,
            Err(DenyReason::Blocked),
        );
        check(Some(&ok), None, "03:00", 0, Err(DenyReason::UnknownRoom));
        check(Some(&ok), Some(&yoga), "22:00", 0, Err(DenyReason::Closed));
        check(Some(&ok), Some(&gym), "03:00", 2, Err(DenyReason::Full));
        // Order: an unknown resident at a closed, full room is "unknown".
        check(
            None,
            Some(&yoga),
            "23:00",
            9,
            Err(DenyReason::UnknownResident),
        );
        check(
            Some(&blocked),
            Some(&yoga),
            "23:00",
            9,
            Err(DenyReason::Blocked),
        );
        check(Some(&ok), Some(&yoga), "23:00", 9, Err(DenyReason::Closed));
        let (booked, unbooked) = (Some(true), Some(false));
        check_booked(Some(&ok), Some(&yoga), "19:00", 0, booked, Ok(()));
        check_booked(
            Some(&ok),
            Some(&yoga),
            "19:00",
            0,
            unbooked,
            Err(DenyReason::NoBooking),
        );
        check_booked(
            Some(&ok),
            Some(&yoga),
            "19:00",
            2,
            unbooked,
            Err(DenyReason::Full),
        );
    }

    #[test]
    fn hours_may_span_midnight() {
        let night = OpeningHours::Between {
            open: time("20:00"),
            close: time("02:00"),
        };
        assert!(night.is_open(time("23:59")));
        assert!(night.is_open(time("01:59")));
        assert!(!night.is_open(time("02:00")));
        assert!(!night.is_open(time("12:00")));
    }

    fn room_config(hours: Option<&str>, open: Option<&str>, close: Option<&str>) -> RoomConfig {
        RoomConfig {
            center: "c".into(),
            id: "r".into(),
            capacity: 1,
            hours: hours.map(Into::into),
            open: open.map(Into::into),
            close: close.map(Into::into),
        }
    }

    #[test]
    fn bad_hours_name_their_field() {
        let field = |h, o, c| OpeningHours::from_config(&room_config(h, o, c)).map_err(|e| e.0);
        assert_eq!(field(Some("24h"), None, None), Ok(OpeningHours::Always));
        assert!(field(None, Some("07:00"), Some("22:00")).is_ok());
        assert_eq!(field(Some("allday"), None, None), Err("hours"));
        assert_eq!(field(Some("24h"), Some("07:00"), None), Err("hours"));
        assert_eq!(field(None, None, None), Err("hours"));
        assert_eq!(field(None, Some("7am"), Some("22:00")), Err("open"));
        assert_eq!(field(None, Some("07:00"), Some("24:00")), Err("close"));
        assert_eq!(field(None, Some("07:00"), None), Err("close"));
        assert_eq!(field(None, Some("07:00"), Some("07:00")), Err("close"));
    }
}
