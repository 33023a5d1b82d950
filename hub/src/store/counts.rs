//! What ingest counts: rooms' live occupancy, visits per center and local
//! day, piano play per local day.

use chrono::NaiveDate;

use super::codec::{decode, decode_u64, pair_key, pair_key_text, to_json};
use super::{Store, StoreError};
use crate::clock::unix_ms;
use crate::records::RoomCount;

impl Store {
    /// Records a room's live count (not fsynced).
    pub fn put_occupancy(
        &self,
        center: &str,
        room: &str,
        count: &RoomCount,
    ) -> Result<(), StoreError> {
        self.occupancy
            .insert(pair_key(center, room), to_json(count))?;
        Ok(())
    }

    /// Every room's live count, as `(center, room, count)`.
    pub fn occupancies(&self) -> Result<Vec<(String, String, RoomCount)>, StoreError> {
        self.occupancy
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let text = String::from_utf8_lossy(&key);
                let (center, room) = text.split_once('\0').unwrap_or((&text, ""));
                let count = decode(&key, &value)?;
                Ok((center.to_string(), room.to_string(), count))
            })
            .collect()
    }

    /// Adds `people` to the visits of `center` on local `day` (not
    /// fsynced), with the day's uplink entry when the hub has an upstream;
    /// returns the day's new total.
    pub fn add_visits(&self, center: &str, day: NaiveDate, people: u64) -> Result<u64, StoreError> {
        if let Some(total) = self.visits_with_entry(center, day, people, unix_ms()) {
            return total;
        }
        let total = self
            .visits
            .update_and_fetch(pair_key(center, &day.to_string()), |old| {
                let n = old.map(decode_u64).unwrap_or(0) + people;
                Some(n.to_be_bytes().to_vec())
            })?;
        Ok(total.as_deref().map(decode_u64).unwrap_or(0))
    }

    /// The visits of `center` per local day from `from` to `to` (both
    /// included), days without visits left out.
    pub fn visits(
        &self,
        center: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError> {
        let (start, end) = (
            pair_key(center, &from.to_string()),
            pair_key(center, &to.to_string()),
        );
        self.visits
            .range(start..=end)
            .map(|entry| {
                let (key, value) = entry?;
                let day = key
                    .rsplit(|&b| b == 0)
                    .next()
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| StoreError::BadKey(format!("visits {key:?}")))?;
                Ok((day, decode_u64(&value)))
            })
            .collect()
    }

    /// Every center's visits per local day from `from` on, as
    /// `(center, day, visits)` (a scan of every center's days: once, at
    /// start).
    pub fn visits_from(
        &self,
        from: NaiveDate,
    ) -> Result<Vec<(String, NaiveDate, u64)>, StoreError> {
        let mut found = Vec::new();
        for entry in self.visits.iter() {
            let (key, value) = entry?;
            let text = String::from_utf8_lossy(&key);
            let parsed = text
                .split_once('\0')
                .and_then(|(center, day)| Some((center, day.parse::<NaiveDate>().ok()?)));
            let (center, day) =
                parsed.ok_or_else(|| StoreError::BadKey(format!("visits {key:?}")))?;
            if day >= from {
                found.push((center.to_string(), day, decode_u64(&value)));
            }
        }
        Ok(found)
    }

    /// Adds `ms` of play to `piano` of `center` on local `day` (not fsynced).
    pub fn add_usage(
        &self,
        center: &str,
        day: NaiveDate,
        piano: &str,
        ms: u64,
    ) -> Result<(), StoreError> {
        let key = pair_key(&pair_key_text(center, &day.to_string()), piano);
        self.usage.update_and_fetch(key, |old| {
            let n = old.map(decode_u64).unwrap_or(0) + ms;
            Some(n.to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// Milliseconds each piano of `center` played per local day from `from`
    /// to `to` (both included), as `(day, piano, ms)` in day order.
    pub fn usage(
        &self,
        center: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, String, u64)>, StoreError> {
        let start = pair_key(center, &from.to_string());
        // `\x01` sorts after the `\0` that ends the last day's prefix.
        let mut end = pair_key(center, &to.to_string());
        end.push(1);
        self.usage
            .range(start..end)
            .map(|entry| {
                let (key, value) = entry?;
                let bad = || StoreError::BadKey(format!("usage {key:?}"));
                let mut parts = key.split(|&b| b == 0).skip(1);
                let day = parts
                    .next()
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(bad)?;
                let piano = parts
                    .next()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .ok_or_else(bad)?;
                Ok((day, piano.to_owned(), decode_u64(&value)))
            })
            .collect()
    }
}
