//! The district's store: one sled tree, keys by area, JSON values. Only
//! this module touches sled. A batch of messages is applied in memory
//! (`Batch`: writes over the tree, read back by later messages of the
//! batch), written as one atomic sled batch together with the ids it
//! marks seen, then fsynced (`commit`); the source acknowledges the
//! messages only after that. So a message is either applied and its id
//! recorded, or neither, across any crash.
//!
//! Keys (`{at}` is 8 bytes big-endian, so ranges follow time):
//! `s/{id}` seen ids (value: `{at}`), `S/{at}{id}` the same by time (to
//! forget ids after `dedupe_days`), `d/{center}/{day}` a center's day,
//! `b/{hub}/{booking}` a booking's latest write, `t/{hub}/{device}` a
//! device's presence, `h/{hub}` and `c/{center}` statuses, `a/{at}{id}`
//! alarms, `r/{at}{seq}` refused messages, `k/{id}` commands sent, `m/…`
//! counts.
//!
//! Commands are the one thing the API writes: a command's record once,
//! before it is published (`insert_command`), and its move from
//! `publishing` to `sent` or `unconfirmed` (`advance_command`, a
//! compare-and-swap, so it never overwrites the hub's outcome that intake
//! may have written meanwhile).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::records::{AlarmRecord, CommandState, DayTally, RejectedRecord, Status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored value under {key:?} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

/// The meta key counting alarms, and refused messages.
const ALARMS: &[u8] = b"m/alarms";
const REJECTED: &[u8] = b"m/rejected";

pub fn seen_key(id: &str) -> Vec<u8> {
    [b"s/".as_slice(), id.as_bytes()].concat()
}

fn seen_time_key(at: u64, id: &str) -> Vec<u8> {
    [b"S/".as_slice(), &at.to_be_bytes(), id.as_bytes()].concat()
}

pub fn day_key(center: &str, day: NaiveDate) -> Vec<u8> {
    format!("d/{center}/{day}").into_bytes()
}

pub fn booking_key(hub: &str, booking: &str) -> Vec<u8> {
    format!("b/{hub}/{booking}").into_bytes()
}

pub fn twin_key(hub: &str, device: &str) -> Vec<u8> {
    format!("t/{hub}/{device}").into_bytes()
}

pub fn hub_key(hub: &str) -> Vec<u8> {
    format!("h/{hub}").into_bytes()
}

pub fn center_key(center: &str) -> Vec<u8> {
    format!("c/{center}").into_bytes()
}

pub fn command_key(id: &str) -> Vec<u8> {
    format!("k/{id}").into_bytes()
}

fn alarm_key(at: u64, id: &str) -> Vec<u8> {
    [b"a/".as_slice(), &at.to_be_bytes(), id.as_bytes()].concat()
}

fn rejected_key(at: u64, seq: u64) -> Vec<u8> {
    [b"r/".as_slice(), &at.to_be_bytes(), &seq.to_be_bytes()].concat()
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: error.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // invariant: the records are plain structs of strings, numbers and maps
    // with string keys; they always serialize.
    serde_json::to_vec(value).expect("a record serializes")
}

fn read_u64(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("district.sled"))
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("district")?;
        Ok(Store { db, tree })
    }

    /// A batch of writes over the store, applied by `commit`.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            tree: &self.tree,
            writes: BTreeMap::new(),
        }
    }

    /// Writes `batch` atomically and fsyncs: on return it survives a crash.
    pub fn commit(&self, batch: Batch<'_>) -> Result<(), StoreError> {
        let mut writes = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(value) => writes.insert(key, value),
                None => writes.remove(key),
            }
        }
        self.tree.apply_batch(writes)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Whether `id` was applied (and not forgotten yet).
    pub fn seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(seen_key(id))?)
    }

    /// Every `prefix` entry, decoded, by key.
    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), decode(&key, &value)?))
            })
            .collect()
    }

    /// Ids applied (within the dedupe window) that start with `prefix`
    /// (`{hub}/`: one hub's), after `after`, in order, at most `limit`.
    pub fn seen_ids(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let start = match after {
            Some(after) => [seen_key(after), vec![0]].concat(),
            None => seen_key(prefix),
        };
        let mut ids = Vec::new();
        for entry in self.tree.range(start..) {
            let (key, _) = entry?;
            let Some(id) = key.strip_prefix(b"s/") else {
                break;
            };
            if !id.starts_with(prefix.as_bytes()) || ids.len() == limit {
                break;
            }
            ids.push(String::from_utf8_lossy(id).into_owned());
        }
        Ok(ids)
    }

    /// Hubs (`h/`) or centers (`c/`) with their status, by name.
    pub fn statuses(&self, hubs: bool) -> Result<BTreeMap<String, Status>, StoreError> {
        let prefix: &[u8] = if hubs { b"h/" } else { b"c/" };
        Ok(self
            .scan::<Status>(prefix)?
            .into_iter()
            .map(|(key, status)| (String::from_utf8_lossy(&key[2..]).into_owned(), status))
            .collect())
    }

    /// Each center's days from `from` to `to` (inclusive), one center or all.
    pub fn days(
        &self,
        center: Option<&str>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<String, BTreeMap<NaiveDate, DayTally>>, StoreError> {
        let prefix = match center {
            Some(center) => format!("d/{center}/"),
            None => "d/".to_string(),
        };
        let mut days: BTreeMap<String, BTreeMap<NaiveDate, DayTally>> = BTreeMap::new();
        for (key, tally) in self.scan::<DayTally>(prefix.as_bytes())? {
            let text = String::from_utf8_lossy(&key[2..]).into_owned();
            let Some((center, day)) = text.rsplit_once('/') else {
                continue;
            };
            let Ok(day) = NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
                continue;
            };
            if (from..=to).contains(&day) {
                days.entry(center.to_string())
                    .or_default()
                    .insert(day, tally);
            }
        }
        Ok(days)
    }

    /// Alarms stored at `[from, to)` (hub clock), newest first, at most
    /// `limit`, of one center or all.
    pub fn alarms(
        &self,
        from: u64,
        to: u64,
        center: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AlarmRecord>, StoreError> {
        let range = alarm_key(from, "")..alarm_key(to, "");
        let mut alarms = Vec::new();
        for entry in self.tree.range(range).rev() {
            let (key, value) = entry?;
            let alarm: AlarmRecord = decode(&key, &value)?;
            if center.is_none_or(|c| c == alarm.center) {
                alarms.push(alarm);
                if alarms.len() == limit {
                    break;
                }
            }
        }
        Ok(alarms)
    }

    /// Stored alarms and refused messages.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        Ok((
            read_u64(self.tree.get(ALARMS)?),
            read_u64(self.tree.get(REJECTED)?),
        ))
    }

    /// Forgets ids applied before `before` (unix ms), up to `max` at a
    /// time; returns how many. Not fsynced: an id remembered longer after a
    /// crash does no harm.
    pub fn forget_seen(&self, before: u64, max: usize) -> Result<usize, StoreError> {
        let mut writes = sled::Batch::default();
        let mut forgotten = 0;
        for entry in self.tree.range(b"S/".to_vec()..seen_time_key(before, "")) {
            let (key, _) = entry?;
            writes.remove(key.to_vec());
            writes.remove([b"s/".as_slice(), &key[10..]].concat());
            forgotten += 1;
            if forgotten == max {
                break;
            }
        }
        self.tree.apply_batch(writes)?;
        Ok(forgotten)
    }

    /// Removes the oldest alarms and refused messages beyond their bounds.
    pub fn prune(&self, max_alarms: usize, max_rejected: usize) -> Result<(), StoreError> {
        for (prefix, count_key, max) in [
            (b"a/".as_slice(), ALARMS, max_alarms),
            (b"r/".as_slice(), REJECTED, max_rejected),
        ] {
            let count = read_u64(self.tree.get(count_key)?);
            let excess = count.saturating_sub(max as u64);
            if excess == 0 {
                continue;
            }
            let mut writes = sled::Batch::default();
            for entry in self.tree.scan_prefix(prefix).take(excess as usize) {
                writes.remove(entry?.0);
            }
            writes.insert(count_key, &(max as u64).to_be_bytes());
            self.tree.apply_batch(writes)?;
        }
        Ok(())
    }

    /// The command sent under `id`.
    pub fn command(&self, id: &str) -> Result<Option<CommandState>, StoreError> {
        let key = command_key(id);
        self.tree
            .get(&key)?
            .map(|value| decode(&key, &value))
            .transpose()
    }

    /// Records a new command and fsyncs; `false` if the id exists.
    pub fn insert_command(&self, command: &CommandState) -> Result<bool, StoreError> {
        let key = command_key(&command.id);
        let swapped =
            self.tree
                .compare_and_swap(key, None as Option<&[u8]>, Some(encode(command)))?;
        self.db.flush()?;
        Ok(swapped.is_ok())
    }

    /// Moves command `id` from status `from` to `to` (fsynced), unless
    /// something else changed it first; whether it moved.
    pub fn advance_command(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        let key = command_key(id);
        loop {
            let Some(old) = self.tree.get(&key)? else {
                return Ok(false);
            };
            let mut command: CommandState = decode(&key, &old)?;
            if command.status != from {
                return Ok(false);
            }
            command.status = to.to_string();
            let new = encode(&command);
            if self
                .tree
                .compare_and_swap(&key, Some(&old), Some(new))?
                .is_ok()
            {
                self.db.flush()?;
                return Ok(true);
            }
        }
    }

    /// The refused messages kept, oldest first.
    pub fn rejected(&self) -> Result<Vec<RejectedRecord>, StoreError> {
        Ok(self
            .scan::<RejectedRecord>(b"r/")?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }
}

/// Writes over the store not applied yet; reads see them.
pub struct Batch<'a> {
    tree: &'a sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    pub fn put_json<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(key, Some(encode(value)));
    }

    /// Whether `id` was applied, by an earlier batch or this one.
    pub fn seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.get(&seen_key(id))?.is_some())
    }

    /// Marks `id` applied at `at` (district clock).
    pub fn mark_seen(&mut self, id: &str, at: u64) {
        self.writes
            .insert(seen_key(id), Some(at.to_be_bytes().to_vec()));
        self.writes.insert(seen_time_key(at, id), Some(Vec::new()));
    }

    fn bump(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        let next = self
            .get(key)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_be_bytes)
            + 1;
        self.writes
            .insert(key.to_vec(), Some(next.to_be_bytes().to_vec()));
        Ok(next)
    }

    pub fn add_alarm(&mut self, alarm: &AlarmRecord) -> Result<(), StoreError> {
        self.bump(ALARMS)?;
        self.put_json(alarm_key(alarm.at, &alarm.id), alarm);
        Ok(())
    }

    pub fn add_rejected(&mut self, record: &RejectedRecord) -> Result<(), StoreError> {
        let seq = self.bump(REJECTED)?;
        self.put_json(rejected_key(record.received_at, seq), record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_batch_is_read_back_and_ids_are_forgotten_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let mut batch = store.batch();
        batch.mark_seen("a", 1_000);
        batch.mark_seen("b", 5_000);
        let tally = DayTally {
            visits: 7,
            ..DayTally::default()
        };
        batch.put_json(day_key("c1", day), &tally);
        assert!(batch.seen("a").unwrap(), "a batch reads its own writes");
        assert!(
            !store.seen("a").unwrap(),
            "nothing is written before commit"
        );
        store.commit(batch).unwrap();
        assert!(store.seen("a").unwrap());
        let days = store.days(Some("c1"), day, day).unwrap();
        assert_eq!(days["c1"][&day], tally);
        assert!(store.days(Some("c2"), day, day).unwrap().is_empty());
        assert_eq!(store.seen_ids("", None, 10).unwrap(), ["a", "b"]);
        assert_eq!(store.seen_ids("", Some("a"), 10).unwrap(), ["b"]);
        assert_eq!(store.seen_ids("b", None, 10).unwrap(), ["b"]);
        assert_eq!(store.seen_ids("", None, 1).unwrap(), ["a"]);
        assert_eq!(store.forget_seen(2_000, 100).unwrap(), 1);
        assert!(!store.seen("a").unwrap());
        assert!(store.seen("b").unwrap());
    }

    #[test]
    fn alarms_are_listed_newest_first_and_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = store.batch();
        for (n, center) in [(1, "c1"), (2, "c2"), (3, "c1"), (4, "c1")] {
            let alarm = AlarmRecord {
                id: format!("h/ev/r/{n}"),
                hub: "h".into(),
                center: center.into(),
                device: "r".into(),
                kind: "therapy_robot".into(),
                alarm_type: "interlock_trip".into(),
                at: n * 1000,
                event: serde_json::Value::Null,
            };
            batch.add_alarm(&alarm).unwrap();
        }
        store.commit(batch).unwrap();
        let ids = |alarms: Vec<AlarmRecord>| alarms.into_iter().map(|a| a.at).collect::<Vec<_>>();
        assert_eq!(
            ids(store.alarms(0, 10_000, None, 10).unwrap()),
            [4000, 3000, 2000, 1000]
        );
        assert_eq!(
            ids(store.alarms(0, 10_000, Some("c1"), 2).unwrap()),
            [4000, 3000]
        );
        assert_eq!(
            ids(store.alarms(2000, 4000, None, 10).unwrap()),
            [3000, 2000]
        );
        store.prune(2, 10).unwrap();
        assert_eq!(
            ids(store.alarms(0, 10_000, None, 10).unwrap()),
            [4000, 3000]
        );
        assert_eq!(store.counts().unwrap(), (2, 0));
    }
}
