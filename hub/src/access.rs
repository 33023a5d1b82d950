//! Gate access decisions: who may enter the room behind a gate, now.
//!
//! A gate's `access_request` event (`{"credential":"…"}`) is answered with an
//! `open` or a `deny` command whose args carry the reason. The decision is an
//! ordered list of rules (`RULES`); the first that fails names the reason:
//!
//! 1. the credential belongs to a registered resident,
//! 2. who is not blocked,
//! 3. the gate's room has an entry (`[[rooms]]`, or set through the API),
//! 4. the room is open now (its hours, in `[access] time_zone`),
//! 5. the room's live occupancy is below its capacity,
//! 6. a gate bound to a bookable resource (listed in its `devices`) opens
//!    only for a resident holding a booking of it now (from `grace_minutes`
//!    before the slot to its end, on the schedule's clock).
//!
//! Pure: the facts come in as values (`AccessFacts`). `actions` looks the
//! resident up by the keyed hash of the credential (`input` hashed it before
//! the event was stored, so the clear credential never gets this far), asks
//! the booking desk whether they hold a booking now, reads the room's
//! occupancy, and checks the resident's booking in once the gate opens.

use chrono::NaiveTime;

use crate::records::Resident;
use crate::settings::RoomRules;

/// Why a gate stays shut. `as_str` is the `reason` in the deny command's
/// args and in `yizhan_access_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The request carries no credential string.
    BadRequest,
    UnknownResident,
    Blocked,
    /// The gate's room has no entry (file or API).
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
pub struct AccessFacts<'a> {
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
    fn check(self, facts: &AccessFacts) -> Result<(), DenyReason> {
        let pass = match self {
            Rule::Registered => facts.resident.is_some(),
            Rule::NotBlocked => facts.resident.is_some_and(|r| !r.blocked),
            Rule::RoomKnown => facts.room.is_some(),
            Rule::OpeningHours => facts
                .room
                .is_some_and(|room| room.hours.is_open(facts.local_time)),
            Rule::Capacity => facts
                .room
                .is_some_and(|room| facts.occupancy < room.capacity),
            Rule::Booking => facts.booking != Some(false),
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
pub fn decide(facts: &AccessFacts) -> Result<(), DenyReason> {
    RULES.iter().try_for_each(|rule| rule.check(facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{parse_hhmm, OpeningHours};

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
        let facts = AccessFacts {
            resident,
            room,
            local_time: time(at),
            occupancy,
            booking,
        };
        assert_eq!(decide(&facts), expect, "{facts:?}");
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
}
