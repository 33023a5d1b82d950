//! Bookings: one tree `bookings`, so a booking and everything kept in step
//! with it is one atomic batch — `b\0id` (the booking),
//! `s\0resource\0start\0id` and `r\0resident\0start\0id` (index entries),
//! `c\0resource\0start\0` (places per group and waitlist of the slot),
//! `d\0at\0what\0id` (milestones: slot starts, grace ends and slot ends to
//! process), `k\0resident\0key` (the answer to a request with an
//! `Idempotency-Key`) and `x\0at\0resident\0key` (when it was answered,
//! to forget it); and `strikes` (`resident\0at\0booking` → booking id).

use super::codec::{decode, get_json, pair_key_text, time_key, time_range, to_json};
use super::undo::{keep, Writes};
use super::{Store, StoreError};
use crate::clock::unix_ms;
use crate::records::booking::{decode_count, encode_count};
use crate::records::{Booking, IndexEntry, KeptAnswer, Milestone, SlotCount, Status};

impl Store {
    /// Writes a booking, its two index entries, its slot's count and its due
    /// times in one atomic batch, with its uplink entry when the hub has an
    /// upstream (not fsynced: the desk flushes once per
    /// batch of jobs). Reads the slot's count and the booking's previous
    /// entry outside the batch: only the booking desk writes bookings.
    /// Returns the booking's status before (`None`: a new booking).
    pub fn put_booking(
        &self,
        booking: &Booking,
        due: &[(u64, Milestone)],
    ) -> Result<Option<Status>, StoreError> {
        let (writes, was) = self.booking_writes(booking, due)?;
        self.apply_booking_writes(writes, booking)?;
        Ok(was)
    }

    /// `put_booking`, with the answer to the request that made it kept
    /// under `resident` and `key` in the same atomic batch: if the booking
    /// is durable, so is the answer a retry gets.
    pub fn put_booking_answered(
        &self,
        booking: &Booking,
        due: &[(u64, Milestone)],
        key: &str,
        answer: &KeptAnswer,
    ) -> Result<Option<Status>, StoreError> {
        let (mut writes, was) = self.booking_writes(booking, due)?;
        writes.insert(answer_key(&booking.resident, key), to_json(answer));
        writes.insert(answered_key(answer.at, &booking.resident, key), &[][..]);
        self.apply_booking_writes(writes, booking)?;
        Ok(was)
    }

    /// The answer kept for `resident`'s request with `key`, if any.
    pub fn kept_answer(&self, resident: &str, key: &str) -> Result<Option<KeptAnswer>, StoreError> {
        get_json(&self.bookings, &answer_key(resident, key))
    }

    /// Forgets up to `limit` answers given before `before` (not fsynced);
    /// returns how many.
    pub fn forget_answers(&self, before: u64, limit: usize) -> Result<usize, StoreError> {
        let start = tagged(ANSWERED, "");
        let end = tagged(ANSWERED, &format!("{before:016x}"));
        let mut writes = Writes::default();
        let mut forgotten = 0;
        for key in self
            .bookings
            .range(start.as_bytes()..end.as_bytes())
            .keys()
            .take(limit)
        {
            let key = key?;
            let (resident, answer) = parse_answered_key(&key)
                .ok_or_else(|| StoreError::BadKey(format!("answered {key:?}")))?;
            writes.remove(answer_key(&resident, &answer));
            writes.remove(key.to_vec());
            forgotten += 1;
        }
        writes.apply(&self.bookings)?;
        Ok(forgotten)
    }

    /// The writes of `put_booking`, and the booking's status before.
    fn booking_writes(
        &self,
        booking: &Booking,
        due: &[(u64, Milestone)],
    ) -> Result<(Writes, Option<Status>), StoreError> {
        let slot_key = time_key(
            &tagged(SLOT, &booking.resource),
            booking.slot_start,
            &booking.id,
        );
        let count_key = time_key(&tagged(COUNT, &booking.resource), booking.slot_start, "");
        let resident_key = time_key(
            &tagged(RESIDENT, &booking.resident),
            booking.slot_start,
            &booking.id,
        );
        let mut count = self
            .bookings
            .get(&count_key)?
            .map(|v| decode_count(&v))
            .unwrap_or_default();
        let mut was = None;
        if let Some(old) = self.bookings.get(&slot_key)? {
            let old: IndexEntry = decode(&slot_key, &old)?;
            count.apply(old.status, old.group, false);
            was = Some(old.status);
        }
        count.apply(booking.status, booking.group, true);
        let entry = to_json(&IndexEntry::of(booking));
        let mut writes = Writes::default();
        writes.insert(count_key, &encode_count(&count)[..]);
        writes.insert(tagged(BOOKING, &booking.id), to_json(booking));
        writes.insert(slot_key, entry.as_slice());
        writes.insert(resident_key, entry);
        for (at, what) in due {
            writes.insert(due_key(*at, *what, &booking.id), &[][..]);
        }
        Ok((writes, was))
    }

    /// Applies a booking's writes atomically, with its uplink entry when
    /// the hub has an upstream (the previous values kept for the desk's
    /// undo first).
    fn apply_booking_writes(&self, writes: Writes, booking: &Booking) -> Result<(), StoreError> {
        let batch = writes.kept_batch(&self.bookings)?;
        self.apply_booking_batch(batch, booking, unix_ms())
    }

    pub fn booking(&self, id: &str) -> Result<Option<Booking>, StoreError> {
        get_json(&self.bookings, &tagged(BOOKING, id))
    }

    /// The count of `resource`'s slot starting at `start`.
    pub fn slot_count(&self, resource: &str, start: u64) -> Result<SlotCount, StoreError> {
        let key = time_key(&tagged(COUNT, resource), start, "");
        Ok(self
            .bookings
            .get(key)?
            .map(|v| decode_count(&v))
            .unwrap_or_default())
    }

    /// Counts of `resource`'s slots starting in `[from, to)`, in start
    /// order (slots never booked left out).
    pub fn slot_counts(
        &self,
        resource: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, SlotCount)>, StoreError> {
        let owner = tagged(COUNT, resource);
        let (start, end) = (time_key(&owner, from, ""), time_key(&owner, to, ""));
        let prefix = owner.len() + 1;
        self.bookings
            .range(start..end)
            .map(|entry| {
                let (key, value) = entry?;
                let at = key
                    .get(prefix..prefix + 16)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| StoreError::BadKey(format!("slot count {key:?}")))?;
                Ok((at, decode_count(&value)))
            })
            .collect()
    }

    /// Index entries of `resource`'s bookings with slots starting in
    /// `[from, to)`, as `(start, booking id, entry)` in start order.
    pub fn slot_entries(
        &self,
        resource: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String, IndexEntry)>, StoreError> {
        time_range(&self.bookings, &tagged(SLOT, resource), from, to)
    }

    /// Index entries of `resident`'s bookings with slots starting in
    /// `[from, to)`.
    pub fn resident_entries(
        &self,
        resident: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String, IndexEntry)>, StoreError> {
        time_range(&self.bookings, &tagged(RESIDENT, resident), from, to)
    }

    /// Milestones at or before `now`, oldest first, as `(at, what, id)`.
    pub fn due_until(&self, now: u64) -> Result<Vec<(u64, Milestone, String)>, StoreError> {
        let start = tagged(DUE, "");
        let end = tagged(DUE, &format!("{now:016x}\x01"));
        self.bookings
            .range(start.as_bytes()..end.as_bytes())
            .keys()
            .map(|key| {
                let key = key?;
                parse_due_key(&key).ok_or_else(|| StoreError::BadKey(format!("due {key:?}")))
            })
            .collect()
    }

    /// Forgets a processed milestone (not fsynced).
    pub fn remove_due(&self, at: u64, what: Milestone, id: &str) -> Result<(), StoreError> {
        let key = due_key(at, what, id);
        keep(&self.bookings, &key)?;
        self.bookings.remove(key)?;
        Ok(())
    }

    /// Records a no-show strike (not fsynced).
    pub fn add_strike(&self, resident: &str, at: u64, booking: &str) -> Result<(), StoreError> {
        let key = time_key(resident, at, booking);
        keep(&self.strikes, &key)?;
        self.strikes.insert(key, to_json(&booking))?;
        Ok(())
    }

    /// Times of `resident`'s strikes at or after `since`.
    pub fn strikes_since(&self, resident: &str, since: u64) -> Result<Vec<u64>, StoreError> {
        Ok(time_range(&self.strikes, resident, since, u64::MAX)?
            .into_iter()
            .map(|(at, _, _): (u64, String, serde::de::IgnoredAny)| at)
            .collect())
    }
}

/// Record kinds in the `bookings` tree, the first part of their keys.
const BOOKING: &str = "b";
const SLOT: &str = "s";
const RESIDENT: &str = "r";
const COUNT: &str = "c";
const DUE: &str = "d";
const ANSWER: &str = "k";
const ANSWERED: &str = "x";

/// `tag\0owner`: one kind of record of one owner in the `bookings` tree.
fn tagged(tag: &str, owner: &str) -> String {
    pair_key_text(tag, owner)
}

fn due_key(at: u64, what: Milestone, id: &str) -> Vec<u8> {
    tagged(DUE, &format!("{at:016x}\0{}\0{id}", what.as_str())).into_bytes()
}

/// `k\0resident\0key`. Residents are labels and keys visible ASCII: neither
/// holds a `\0`.
fn answer_key(resident: &str, key: &str) -> String {
    tagged(ANSWER, &pair_key_text(resident, key))
}

fn answered_key(at: u64, resident: &str, key: &str) -> Vec<u8> {
    tagged(ANSWERED, &format!("{at:016x}\0{resident}\0{key}")).into_bytes()
}

/// The resident and key of an `answered_key`.
fn parse_answered_key(key: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.strip_prefix(&tagged(ANSWERED, ""))?.splitn(3, '\0');
    let (_at, resident, key) = (parts.next()?, parts.next()?, parts.next()?);
    Some((resident.to_string(), key.to_string()))
}

fn parse_due_key(key: &[u8]) -> Option<(u64, Milestone, String)> {
    let text = std::str::from_utf8(key).ok()?;
    let text = text.strip_prefix(&tagged(DUE, ""))?;
    let mut parts = text.splitn(3, '\0');
    let at = u64::from_str_radix(parts.next()?, 16).ok()?;
    let what = Milestone::parse(parts.next()?)?;
    Some((at, what, parts.next()?.to_string()))
}
