//! Bookings as stored: a booking (or a waitlist place, or the offer of
//! one), where it stands, the group its place is for, the count of each
//! slot's places kept in step with every write (and its binary encoding),
//! the index entries of slots and residents, and a booking's milestones.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::resource::ResourceConfig;

/// Who a place is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Child,
    Youth,
    Adult,
    Senior,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Child, Group::Youth, Group::Adult, Group::Senior];

    pub fn parse(text: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Child => "child",
            Group::Youth => "youth",
            Group::Adult => "adult",
            Group::Senior => "senior",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = BookingStatus)]
pub enum Status {
    /// Refused as full; may join the waitlist.
    Offered,
    Waitlisted,
    Booked,
    CheckedIn,
    Cancelled,
    NoShow,
    /// Left on the waitlist when the slot ended.
    Expired,
}

impl Status {
    /// Takes one of the slot's places.
    pub fn holds_place(self) -> bool {
        matches!(self, Status::Booked | Status::CheckedIn)
    }

    /// Counts against the resident's quotas.
    pub fn counts_for_quota(self) -> bool {
        matches!(self, Status::Booked | Status::CheckedIn | Status::NoShow)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Offered => "offered",
            Status::Waitlisted => "waitlisted",
            Status::Booked => "booked",
            Status::CheckedIn => "checked_in",
            Status::Cancelled => "cancelled",
            Status::NoShow => "no_show",
            Status::Expired => "expired",
        }
    }
}

/// One slot of a resource, in unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub start: u64,
    pub end: u64,
}

/// Who a new booking is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Booker {
    pub resident: String,
    pub group: Group,
    pub child_birthdate: Option<NaiveDate>,
}

/// A booking (or a waitlist place, or the offer of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Booking {
    pub id: String,
    pub resource: String,
    pub center: String,
    pub kind: String,
    /// Unix ms.
    pub slot_start: u64,
    pub slot_end: u64,
    pub resident: String,
    pub group: Group,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_birthdate: Option<NaiveDate>,
    pub status: Status,
    pub created_at: u64,
    #[serde(default)]
    pub waitlisted_at: Option<u64>,
    #[serde(default)]
    pub checked_in_at: Option<u64>,
    /// `staff`, `device:<id>` or `gate:<id>`.
    #[serde(default)]
    pub checked_in_by: Option<String>,
    #[serde(default)]
    pub cancelled_at: Option<u64>,
    /// Cancelled within `late_cancel_minutes` of the start.
    #[serde(default)]
    pub late_cancel: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// The bound devices were commanded `unlock` for it.
    #[serde(default)]
    pub unlocked: bool,
}

impl Booking {
    /// A place of `resource`'s `slot` booked for `who` at `now`, under `id`.
    pub fn booked(
        id: String,
        resource: &ResourceConfig,
        slot: Slot,
        who: Booker,
        now: u64,
    ) -> Booking {
        Booking {
            id,
            resource: resource.id.clone(),
            center: resource.center.clone(),
            kind: resource.kind.clone(),
            slot_start: slot.start,
            slot_end: slot.end,
            resident: who.resident,
            group: who.group,
            child_birthdate: who.child_birthdate,
            status: Status::Booked,
            created_at: now,
            waitlisted_at: None,
            checked_in_at: None,
            checked_in_by: None,
            cancelled_at: None,
            late_cancel: false,
            reason: None,
            unlocked: false,
        }
    }

    /// Who it is for.
    pub fn booker(&self) -> Booker {
        Booker {
            resident: self.resident.clone(),
            group: self.group,
            child_birthdate: self.child_birthdate,
        }
    }

    /// The booking's slot.
    pub fn slot(&self) -> Slot {
        Slot {
            start: self.slot_start,
            end: self.slot_end,
        }
    }
}

/// What a booking request carrying an `Idempotency-Key` was answered, kept
/// with the booking it made (one atomic batch): a retry with the same key
/// gets this answer again instead of a second booking. Kept per resident
/// and key for `KEPT_ANSWER_MS` on the schedule's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptAnswer {
    /// What was asked (resource, slot, group, child's birth date): the same
    /// key sent with another request is refused.
    pub request: String,
    /// The booking as answered: booked (201), or the offer of a full slot.
    pub booking: Booking,
    /// The 409's reason when the slot was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    /// When it was answered.
    pub at: u64,
}

/// How long an idempotent answer is kept: a day, far longer than any
/// client retries.
pub const KEPT_ANSWER_MS: u64 = 24 * 3_600_000;

/// One slot's places taken per group and its waitlist, kept by the store in
/// step with every booking write (availability reads one record per slot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCount {
    pub load: SlotLoad,
    pub waitlist: u32,
}

impl SlotCount {
    /// Counts (`add`) or uncounts a booking in `status` for `group`.
    pub fn apply(&mut self, status: Status, group: Group, add: bool) {
        match (status.holds_place(), status == Status::Waitlisted, add) {
            (true, _, true) => self.load.add(group),
            (true, _, false) => self.load.remove(group),
            (_, true, true) => self.waitlist += 1,
            (_, true, false) => self.waitlist = self.waitlist.saturating_sub(1),
            _ => {}
        }
    }
}

/// What the slot and resident indexes keep of a booking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub resource: String,
    pub status: Status,
    pub group: Group,
    pub end: u64,
    /// When it joined the waitlist (its order there).
    pub waitlisted_at: Option<u64>,
}

impl IndexEntry {
    pub fn of(booking: &Booking) -> IndexEntry {
        IndexEntry {
            resource: booking.resource.clone(),
            status: booking.status,
            group: booking.group,
            end: booking.slot_end,
            waitlisted_at: booking.waitlisted_at,
        }
    }
}

/// A booking's milestones: the work the schedule's clock brings it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// Slot start: unlock the bound devices.
    Start,
    /// Grace over: release a booking not checked in.
    Grace,
    /// Slot end: lock, expire the waitlist, count the seat time.
    End,
}

impl Milestone {
    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::Start => "start",
            Milestone::Grace => "grace",
            Milestone::End => "end",
        }
    }

    pub fn parse(text: &str) -> Option<Milestone> {
        [Milestone::Start, Milestone::Grace, Milestone::End]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// Active places (booked or checked in) of one slot, per group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotLoad {
    by_group: [u32; 4],
}

impl SlotLoad {
    pub fn add(&mut self, group: Group) {
        self.by_group[group.index()] += 1;
    }

    pub fn remove(&mut self, group: Group) {
        let n = &mut self.by_group[group.index()];
        *n = n.saturating_sub(1);
    }

    /// As stored: the places per group in `Group::ALL` order.
    pub fn counts(&self) -> [u32; 4] {
        self.by_group
    }

    pub fn from_counts(by_group: [u32; 4]) -> SlotLoad {
        SlotLoad { by_group }
    }

    pub fn taken(&self) -> u32 {
        self.by_group.iter().sum()
    }

    pub fn of(&self, group: Group) -> u32 {
        self.by_group[group.index()]
    }
}

/// A slot count as stored: five big-endian u32 (places per group in
/// `Group::ALL` order, then the waitlist).
pub fn encode_count(count: &SlotCount) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    let values = count.load.counts().into_iter().chain([count.waitlist]);
    for (chunk, value) in bytes.chunks_exact_mut(4).zip(values) {
        chunk.copy_from_slice(&value.to_be_bytes());
    }
    bytes
}

/// A slot count read back (missing values read as 0).
pub fn decode_count(bytes: &[u8]) -> SlotCount {
    let mut values = bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    let mut next = || values.next().unwrap_or(0);
    let by_group = [next(), next(), next(), next()];
    SlotCount {
        load: SlotLoad::from_counts(by_group),
        waitlist: next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_count_reads_back_as_written() {
        let mut count = SlotCount::default();
        count.apply(Status::Booked, Group::Senior, true);
        count.apply(Status::Booked, Group::Child, true);
        count.apply(Status::Waitlisted, Group::Adult, true);
        count.apply(Status::Booked, Group::Child, false);
        let read = decode_count(&encode_count(&count));
        assert_eq!(read, count);
        assert_eq!(
            (
                read.load.taken(),
                read.load.of(Group::Senior),
                read.waitlist
            ),
            (1, 1, 1)
        );
    }
}
