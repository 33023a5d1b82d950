//! The uplink outbox: every message for the upstream broker, from the
//! moment the fact it describes is written until the upstream
//! acknowledged it (docs/upstream.md).
//!
//! Trees: `uplink` (events, alarms, twin changes, booking changes, visits:
//! never dropped), `uplink_telemetry` (telemetry windows and raw
//! telemetry: dropped oldest first past the bound) and `uplink_index`
//! (`v\0center\0day` → the key of that day's unsent visits entry, so a newer
//! total replaces it; `b\0booking` → the booking's last revision). Both
//! outbox trees are keyed by one sequence from sled's id generator (8
//! bytes, big-endian), taken and written under one lock, so keys become
//! visible in increasing order: the forwarder reads both trees merged by
//! key from where it stopped, and a device's messages keep their order.
//!
//! An event, a booking and a day's visits are written with their entry in
//! one sled transaction: an fsync that makes the fact durable makes its
//! entry durable too, and a crash keeps both or neither. Twin changes and
//! telemetry come from ingest (`uplink_append`). The backlog's size is
//! kept in memory (counted once when the outbox is enabled) and shown on
//! the gauges given in `OutboxConfig`, so a scrape reads memory only.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::NaiveDate;
use prometheus::{IntCounterVec, IntGauge};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};

use protocol::api::{CommandOrigin, CommandRecord};

use super::codec::{decode_u64, pair_key, pair_key_text, to_json};
use super::{Store, StoreError};
use crate::metrics::Metrics;
use crate::records::uplink::{self, UplinkClass, UplinkEntry};
use crate::records::{Booking, StoredEvent};

/// Where the outbox's size and drops are shown.
pub struct OutboxMeters {
    pub messages: IntGauge,
    pub bytes: IntGauge,
    /// Entries dropped past the bound, by class.
    pub dropped: IntCounterVec,
}

impl OutboxMeters {
    /// The uplink's backlog gauges and drop counter in `metrics`.
    pub fn of(metrics: &Metrics) -> OutboxMeters {
        OutboxMeters {
            messages: metrics.uplink_backlog_messages.clone(),
            bytes: metrics.uplink_backlog_bytes.clone(),
            dropped: metrics.uplink_dropped.clone(),
        }
    }
}

/// How the outbox is kept.
pub struct OutboxConfig {
    /// The hub's id, the first part of every message id.
    pub hub: String,
    /// Past this many bytes (keys and values) the oldest telemetry is
    /// dropped; events, alarms, twin changes, bookings and visits never are.
    pub max_bytes: u64,
    /// Called after every write (wakes the forwarder).
    pub wake: Box<dyn Fn() + Send + Sync>,
    pub meters: OutboxMeters,
}

#[cfg(test)]
impl OutboxConfig {
    /// For unit tests: hub `hub1`, nothing woken.
    pub(crate) fn for_tests(max_bytes: u64, metrics: &Metrics) -> OutboxConfig {
        OutboxConfig {
            hub: "hub1".into(),
            max_bytes,
            wake: Box::new(|| {}),
            meters: OutboxMeters::of(metrics),
        }
    }
}

/// The outbox of a hub with an upstream.
pub(super) struct Outbox {
    config: OutboxConfig,
    facts: Tree,
    telemetry: Tree,
    index: Tree,
    /// Held while a key is taken and its entry written, and while the
    /// forwarder takes entries (so the bound never drops one it holds).
    order: Mutex<()>,
    /// Keys up to this one were read by the forwarder's current session:
    /// they are on their way, and the bound drops only later telemetry
    /// (else a reading could be both delivered and counted dropped). 0
    /// between sessions.
    taken: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// What one write did to the backlog.
#[derive(Default)]
struct Change {
    added: u64,
    removed: Option<u64>,
}

impl Change {
    fn added(bytes: usize) -> Change {
        Change {
            added: bytes as u64,
            removed: None,
        }
    }
}

/// A transaction body's result (nothing aborts one).
pub(super) type Tx<T> = Result<T, ConflictableTransactionError<Infallible>>;

pub(super) fn storage(error: TransactionError<Infallible>) -> StoreError {
    match error {
        TransactionError::Storage(error) => StoreError::Sled(error),
        TransactionError::Abort(never) => match never {},
    }
}

/// An entry's size in the backlog: its key and its value.
fn size(value_len: usize) -> usize {
    8 + value_len
}

impl Outbox {
    fn open(db: &sled::Db, config: OutboxConfig) -> Result<Outbox, StoreError> {
        let outbox = Outbox {
            config,
            facts: db.open_tree("uplink")?,
            telemetry: db.open_tree("uplink_telemetry")?,
            index: db.open_tree("uplink_index")?,
            order: Mutex::new(()),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        };
        for tree in [&outbox.facts, &outbox.telemetry] {
            for entry in tree.iter() {
                let (_, value) = entry?;
                outbox.messages.fetch_add(1, Ordering::Relaxed);
                outbox
                    .bytes
                    .fetch_add(size(value.len()) as u64, Ordering::Relaxed);
            }
        }
        outbox.show();
        Ok(outbox)
    }

    fn tree(&self, class: UplinkClass) -> &Tree {
        match class.droppable() {
            true => &self.telemetry,
            false => &self.facts,
        }
    }

    /// Takes the next key and runs `write` with it under the order lock,
    /// then keeps the backlog's size, holds the bound and wakes the
    /// forwarder.
    fn write<T>(
        &self,
        db: &sled::Db,
        write: impl FnOnce([u8; 8]) -> Result<(T, Change), StoreError>,
    ) -> Result<T, StoreError> {
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        // sled's first id is 0; keys start at 1 so that 0 reads from the start.
        let key = (db.generate_id()? + 1).to_be_bytes();
        let (value, change) = write(key)?;
        if change.added > 0 {
            self.messages.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(change.added, Ordering::Relaxed);
        }
        if let Some(bytes) = change.removed {
            self.forget(bytes);
        }
        self.hold_bound()?;
        self.show();
        (self.config.wake)();
        Ok(value)
    }

    /// Drops the oldest telemetry the forwarder has not taken while the
    /// backlog is over the bound (called under the order lock). What the
    /// forwarder holds (at most a read batch and its window) may keep the
    /// backlog over the bound until it is acknowledged.
    fn hold_bound(&self) -> Result<(), StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let taken = self.taken.load(Ordering::Relaxed).to_be_bytes();
        while self.bytes.load(Ordering::Relaxed) > self.config.max_bytes {
            let oldest = self
                .telemetry
                .range::<&[u8], _>((Excluded(&taken[..]), Unbounded))
                .next()
                .transpose()?;
            let Some((key, _)) = oldest else {
                return Ok(());
            };
            let Some(value) = self.telemetry.remove(key)? else {
                continue;
            };
            let class = UplinkEntry::decode(&value).map_or(UplinkClass::Telemetry, |e| e.class);
            self.forget(size(value.len()) as u64);
            self.config
                .meters
                .dropped
                .with_label_values(&[class.as_str()])
                .inc();
        }
        Ok(())
    }

    /// One entry of `bytes` left the backlog.
    fn forget(&self, bytes: u64) {
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn show(&self) {
        let meters = &self.config.meters;
        let as_i64 = |n: &AtomicU64| i64::try_from(n.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        meters.messages.set(as_i64(&self.messages));
        meters.bytes.set(as_i64(&self.bytes));
    }

    fn append(&self, db: &sled::Db, entry: &UplinkEntry) -> Result<(), StoreError> {
        let value = entry.encode();
        self.write(db, |key| {
            self.tree(entry.class).insert(key, value.as_slice())?;
            Ok(((), Change::added(size(value.len()))))
        })
    }

    fn event_once(
        &self,
        db: &sled::Db,
        events: &Tree,
        key: &[u8],
        stored: &StoredEvent,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let entry = uplink::event(&self.config.hub, stored).encode();
        self.write(db, |seq| {
            let new = (events, &self.facts)
                .transaction(|(events, facts)| -> Tx<bool> {
                    if events.get(key)?.is_some() {
                        return Ok(false);
                    }
                    events.insert(key, value)?;
                    facts.insert(&seq[..], entry.as_slice())?;
                    Ok(true)
                })
                .map_err(storage)?;
            let change = match new {
                true => Change::added(size(entry.len())),
                false => Change::default(),
            };
            Ok((new, change))
        })
    }

    fn booking_batch(
        &self,
        db: &sled::Db,
        bookings: &Tree,
        batch: &Batch,
        booking: &Booking,
        at: u64,
    ) -> Result<(), StoreError> {
        let rev_key = pair_key(REVISION, &booking.id);
        self.write(db, |seq| {
            let len = (bookings, &self.facts, &self.index)
                .transaction(|(bookings, facts, index)| -> Tx<usize> {
                    bookings.apply_batch(batch)?;
                    let rev = index.get(&rev_key)?.map_or(0, |v| decode_u64(&v)) + 1;
                    index.insert(rev_key.as_slice(), &rev.to_be_bytes()[..])?;
                    let entry = uplink::booking(&self.config.hub, booking, rev, at).encode();
                    facts.insert(&seq[..], entry.as_slice())?;
                    Ok(entry.len())
                })
                .map_err(storage)?;
            Ok(((), Change::added(size(len))))
        })
    }

    fn add_visits(
        &self,
        db: &sled::Db,
        visits: &Tree,
        center: &str,
        day: NaiveDate,
        people: u64,
        at: u64,
    ) -> Result<u64, StoreError> {
        let day_text = day.to_string();
        let key = pair_key(center, &day_text);
        let index_key = pair_key(VISITS, &pair_key_text(center, &day_text));
        self.write(db, |seq| {
            let (total, len, replaced) = (visits, &self.facts, &self.index)
                .transaction(
                    |(visits, facts, index)| -> Tx<(u64, usize, Option<usize>)> {
                        let total = visits.get(&key)?.map_or(0, |v| decode_u64(&v)) + people;
                        visits.insert(key.as_slice(), &total.to_be_bytes()[..])?;
                        let replaced = match index.get(&index_key)? {
                            Some(unsent) => facts.remove(unsent)?.map(|old| size(old.len())),
                            None => None,
                        };
                        let entry =
                            uplink::visits(&self.config.hub, center, day, total, at).encode();
                        facts.insert(&seq[..], entry.as_slice())?;
                        index.insert(index_key.as_slice(), &seq[..])?;
                        Ok((total, entry.len(), replaced))
                    },
                )
                .map_err(storage)?;
            let change = Change {
                added: size(len) as u64,
                removed: replaced.map(|bytes| bytes as u64),
            };
            Ok((total, change))
        })
    }

    /// Writes a district command's final record (`value` under `key`, out
    /// of the open index) with its outcome's entry, atomically.
    fn command_outcome(
        &self,
        db: &sled::Db,
        (commands, open): (&Tree, &Tree),
        key: &[u8],
        value: &[u8],
        entry: &UplinkEntry,
    ) -> Result<(), StoreError> {
        let entry = entry.encode();
        self.write(db, |seq| {
            (commands, open, &self.facts)
                .transaction(|(commands, open, facts)| -> Tx<()> {
                    commands.insert(key, value)?;
                    open.remove(key)?;
                    facts.insert(&seq[..], entry.as_slice())?;
                    Ok(())
                })
                .map_err(storage)?;
            Ok(((), Change::added(size(entry.len()))))
        })
    }

    /// Up to `limit` entries with keys after `after`, both trees merged in
    /// key order.
    fn read(&self, after: u64, limit: usize) -> Result<Vec<(u64, UplinkEntry)>, StoreError> {
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let facts = read_tree(&self.facts, after, limit)?;
        let telemetry = read_tree(&self.telemetry, after, limit)?;
        // A full batch may stop before the other tree's later keys: take
        // nothing past the lower of the full batches' last keys.
        let limit_key = [&facts, &telemetry]
            .iter()
            .filter(|batch| batch.len() == limit)
            .filter_map(|batch| batch.last().map(|(key, _)| *key))
            .min()
            .unwrap_or(u64::MAX);
        let mut merged: Vec<(u64, UplinkEntry)> = facts
            .into_iter()
            .chain(telemetry)
            .filter(|(key, _)| *key <= limit_key)
            .collect();
        merged.sort_by_key(|(key, _)| *key);
        merged.truncate(limit);
        if let Some((last, _)) = merged.last() {
            self.taken.fetch_max(*last, Ordering::Relaxed);
        }
        Ok(merged)
    }

    fn release(&self) {
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        self.taken.store(0, Ordering::Relaxed);
    }

    fn remove(&self, sent: &[(u64, UplinkClass)]) -> Result<(), StoreError> {
        for (key, class) in sent {
            if let Some(old) = self.tree(*class).remove(key.to_be_bytes())? {
                self.forget(size(old.len()) as u64);
            }
        }
        self.show();
        Ok(())
    }

    fn oldest_at(&self) -> Result<Option<u64>, StoreError> {
        let mut oldest = None;
        for tree in [&self.facts, &self.telemetry] {
            if let Some((_, value)) = tree.first()? {
                let at = UplinkEntry::decode(&value).map(|e| e.at);
                oldest = oldest.into_iter().chain(at).min();
            }
        }
        Ok(oldest)
    }
}

/// `uplink_index` tags.
const VISITS: &str = "v";
const REVISION: &str = "b";

fn read_tree(tree: &Tree, after: u64, limit: usize) -> Result<Vec<(u64, UplinkEntry)>, StoreError> {
    use std::ops::Bound::{Excluded, Unbounded};
    let start = after.to_be_bytes();
    tree.range::<&[u8], _>((Excluded(&start[..]), Unbounded))
        .take(limit)
        .map(|item| {
            let (key, value) = item?;
            let seq = decode_u64(&key);
            let entry = UplinkEntry::decode(&value)
                .ok_or_else(|| StoreError::BadKey(format!("uplink entry {seq} does not decode")))?;
            Ok((seq, entry))
        })
        .collect()
}

impl Store {
    /// From now on, events, bookings and visits are written with their
    /// outbox entries, and `uplink_append` keeps what it is given. Counts
    /// the backlog left by an earlier run (a scan: once, at start).
    pub fn enable_uplink(&mut self, config: OutboxConfig) -> Result<(), StoreError> {
        self.uplink = Some(Outbox::open(&self.db, config)?);
        Ok(())
    }

    /// Adds entries to the outbox (not fsynced): twin changes and
    /// telemetry from ingest. Nothing without an upstream.
    pub fn uplink_append(&self, entry: &UplinkEntry) -> Result<(), StoreError> {
        match &self.uplink {
            Some(outbox) => outbox.append(&self.db, entry),
            None => Ok(()),
        }
    }

    /// Up to `limit` entries after key `after` (0: from the oldest), in key
    /// order, taken by the forwarder: the bound no longer drops them until
    /// `uplink_release`.
    pub fn uplink_read(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, UplinkEntry)>, StoreError> {
        match &self.uplink {
            Some(outbox) => outbox.read(after, limit),
            None => Ok(Vec::new()),
        }
    }

    /// The forwarder's session ended: what it took and did not get
    /// acknowledged is waiting again (and may be dropped past the bound).
    pub fn uplink_release(&self) {
        if let Some(outbox) = &self.uplink {
            outbox.release();
        }
    }

    /// Forgets entries the upstream acknowledged (not fsynced: a crash may
    /// send them again; consumers drop duplicates by message id). Keys
    /// already gone (dropped, or a replaced visits entry) are skipped.
    pub fn uplink_remove(&self, sent: &[(u64, UplinkClass)]) -> Result<(), StoreError> {
        match &self.uplink {
            Some(outbox) => outbox.remove(sent),
            None => Ok(()),
        }
    }

    /// When the oldest waiting entry was written (unix ms).
    pub fn uplink_oldest_at(&self) -> Result<Option<u64>, StoreError> {
        match &self.uplink {
            Some(outbox) => outbox.oldest_at(),
            None => Ok(None),
        }
    }

    /// Entries waiting and their bytes.
    pub fn uplink_backlog(&self) -> (u64, u64) {
        self.uplink.as_ref().map_or((0, 0), |outbox| {
            (
                outbox.messages.load(Ordering::Relaxed),
                outbox.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// `insert_event_once` with the event's outbox entry, atomically.
    pub(super) fn event_with_entry(
        &self,
        key: &[u8],
        stored: &StoredEvent,
        value: &[u8],
    ) -> Option<Result<bool, StoreError>> {
        let outbox = self.uplink.as_ref()?;
        Some(outbox.event_once(&self.db, &self.events, key, stored, value))
    }

    /// Applies a booking's batch with its outbox entry, atomically.
    pub(super) fn apply_booking_batch(
        &self,
        batch: Batch,
        booking: &Booking,
        at: u64,
    ) -> Result<(), StoreError> {
        match &self.uplink {
            Some(outbox) => outbox.booking_batch(&self.db, &self.bookings, &batch, booking, at),
            None => Ok(self.bookings.apply_batch(batch)?),
        }
    }

    /// A district command's final record with its outcome's outbox entry,
    /// atomically; `None` (nothing written) without an upstream, for
    /// another origin or a command no longer remembered as taken.
    pub(super) fn outcome_with_entry(
        &self,
        key: &[u8],
        record: &CommandRecord,
    ) -> Option<Result<(), StoreError>> {
        let outbox = self.uplink.as_ref()?;
        if record.origin != CommandOrigin::District || !record.status.is_final() {
            return None;
        }
        let taken = match self.downlink_taken(&record.id) {
            Ok(taken) => taken?,
            Err(error) => return Some(Err(error)),
        };
        let entry = uplink::command_outcome(&outbox.config.hub, &taken.center, record);
        let trees = (&self.commands, &self.open_commands);
        Some(outbox.command_outcome(&self.db, trees, key, &to_json(record), &entry))
    }

    /// Adds visits with the day's outbox entry, atomically; `None` without
    /// an upstream.
    pub(super) fn visits_with_entry(
        &self,
        center: &str,
        day: NaiveDate,
        people: u64,
        at: u64,
    ) -> Option<Result<u64, StoreError>> {
        let outbox = self.uplink.as_ref()?;
        Some(outbox.add_visits(&self.db, &self.visits, center, day, people, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::uplink::{DeviceRef, FieldStats, TelemetryWindow};
    use crate::records::Status;
    use protocol::DeviceKind;
    use std::collections::BTreeMap;

    /// A store with an outbox of `max_bytes`, on a temp dir, and its meters.
    fn outbox(max_bytes: u64) -> (Store, Metrics, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .enable_uplink(OutboxConfig::for_tests(max_bytes, &metrics))
            .unwrap();
        (store, metrics, dir)
    }

    fn event(id: &str) -> StoredEvent {
        StoredEvent {
            device: "p1".into(),
            center: "c1".into(),
            kind: DeviceKind::Piano,
            received_at: 10,
            event: serde_json::from_value(
                serde_json::json!({"id": id, "ts": 1, "seq": 1, "type": "key_activity", "pad": "x".repeat(200)}),
            )
            .unwrap(),
        }
    }

    fn window(from: u64) -> UplinkEntry {
        let device = DeviceRef {
            id: "p1".into(),
            center: "c1".into(),
            kind: DeviceKind::Piano,
        };
        let fields = BTreeMap::from([("temp_c".to_string(), FieldStats::new(36.5))]);
        uplink::telemetry_window(
            "hub1",
            &TelemetryWindow {
                device: &device,
                from,
                to: from + 60_000,
                count: 3,
                fields: &fields,
            },
        )
    }

    fn booking(status: Status) -> Booking {
        serde_json::from_value(serde_json::json!({
            "id": "b1", "resource": "yoga", "center": "c1", "kind": "class",
            "slot_start": 1, "slot_end": 2, "resident": "r1", "group": "adult",
            "status": status, "created_at": 0
        }))
        .unwrap()
    }

    /// The waiting entries' ids, read as a session that then ends would.
    fn ids(store: &Store) -> Vec<String> {
        let ids = store
            .uplink_read(0, 1000)
            .unwrap()
            .into_iter()
            .map(|(_, entry)| {
                let payload: serde_json::Value = serde_json::from_slice(&entry.payload).unwrap();
                payload["id"].as_str().unwrap().to_string()
            })
            .collect();
        store.uplink_release();
        ids
    }

    /// Removes every waiting entry as a PUBACK would; returns them.
    fn acknowledge_all(store: &Store) -> Vec<(u64, UplinkClass)> {
        let entries = store.uplink_read(0, 1000).unwrap();
        let sent: Vec<_> = entries.iter().map(|(key, e)| (*key, e.class)).collect();
        store.uplink_remove(&sent).unwrap();
        store.uplink_release();
        sent
    }

    #[test]
    fn facts_and_telemetry_come_back_in_write_order_and_once_per_event() {
        let (store, metrics, _dir) = outbox(1 << 30);
        assert!(store.insert_event_once(&event("e1")).unwrap());
        store.uplink_append(&window(0)).unwrap();
        assert!(
            !store.insert_event_once(&event("e1")).unwrap(),
            "a duplicate"
        );
        store.put_booking(&booking(Status::Booked), &[]).unwrap();
        store.put_booking(&booking(Status::Cancelled), &[]).unwrap();
        store.uplink_append(&window(60_000)).unwrap();
        assert_eq!(
            ids(&store),
            [
                "hub1/ev/p1/e1",
                "hub1/tm/p1/0/60000",
                "hub1/bk/b1/1",
                "hub1/bk/b1/2",
                "hub1/tm/p1/60000/120000"
            ]
        );
        assert_eq!(store.uplink_backlog().0, 5);
        assert_eq!(metrics.uplink_backlog_messages.get(), 5);
        // Read in pages of two: the merge never skips a key.
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let page = store.uplink_read(cursor, 2).unwrap();
            let Some((last, _)) = page.last() else { break };
            cursor = *last;
            seen.extend(page.into_iter().map(|(key, _)| key));
        }
        let all: Vec<u64> = store
            .uplink_read(0, 100)
            .unwrap()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn acknowledged_entries_leave_and_the_backlog_returns_to_zero() {
        let (store, metrics, _dir) = outbox(1 << 30);
        store.insert_event_once(&event("e1")).unwrap();
        store.uplink_append(&window(0)).unwrap();
        let sent = acknowledge_all(&store);
        store.uplink_remove(&sent).unwrap();
        assert_eq!(
            store.uplink_backlog(),
            (0, 0),
            "a second removal counts nothing"
        );
        assert_eq!(metrics.uplink_backlog_bytes.get(), 0);
        assert_eq!(store.uplink_oldest_at().unwrap(), None);
    }

    #[test]
    fn past_the_bound_the_oldest_telemetry_goes_and_no_fact_does() {
        // Windows from 6,000,000 ms on: ids (and entries) of one length.
        let minute = |n: u64| 6_000_000 + n * 60_000;
        let entry_bytes = 8 + window(minute(0)).encode().len() as u64;
        let (store, metrics, _dir) = outbox(4 * entry_bytes);
        for n in 0..6 {
            store.uplink_append(&window(minute(n))).unwrap();
        }
        let dropped = |class: &str| metrics.uplink_dropped.with_label_values(&[class]).get();
        assert_eq!(dropped("telemetry"), 2);
        assert_eq!(
            ids(&store)[0],
            "hub1/tm/p1/6120000/6180000",
            "the oldest went"
        );
        for n in 0..20 {
            store.insert_event_once(&event(&format!("e{n}"))).unwrap();
        }
        assert_eq!(dropped("telemetry"), 6, "every window made way for events");
        let (messages, bytes) = store.uplink_backlog();
        assert_eq!(messages, 20, "no event was dropped");
        assert!(bytes > 4 * entry_bytes, "events are kept past the bound");
        store.uplink_append(&window(0)).unwrap();
        assert_eq!(dropped("telemetry"), 7, "new telemetry cannot stay either");
        assert_eq!(dropped("event"), 0);
    }

    #[test]
    fn telemetry_the_forwarder_took_is_not_dropped_until_its_session_ends() {
        // Windows from 6,000,000 ms on: ids (and entries) of one length.
        let minute = |n: u64| 6_000_000 + n * 60_000;
        let entry_bytes = 8 + window(minute(0)).encode().len() as u64;
        let (store, metrics, _dir) = outbox(2 * entry_bytes);
        for n in 0..2 {
            store.uplink_append(&window(minute(n))).unwrap();
        }
        let taken = store.uplink_read(0, 10).unwrap();
        assert_eq!(taken.len(), 2);
        store.uplink_append(&window(minute(2))).unwrap();
        let dropped = || {
            metrics
                .uplink_dropped
                .with_label_values(&["telemetry"])
                .get()
        };
        assert_eq!(dropped(), 1, "the new window made way for itself");
        assert_eq!(store.uplink_backlog().0, 2, "the taken windows stay");
        // The session ends with nothing acknowledged: the oldest may go.
        store.uplink_release();
        store.uplink_append(&window(minute(3))).unwrap();
        assert_eq!(dropped(), 2);
        assert_eq!(
            ids(&store),
            ["hub1/tm/p1/6060000/6120000", "hub1/tm/p1/6180000/6240000"]
        );
    }

    #[test]
    fn a_days_newer_visits_replace_its_unsent_entry() {
        let (store, _metrics, _dir) = outbox(1 << 30);
        let day = NaiveDate::from_ymd_opt(2027, 1, 4).unwrap();
        let other = NaiveDate::from_ymd_opt(2027, 1, 5).unwrap();
        assert_eq!(store.add_visits("c1", day, 3).unwrap(), 3);
        assert_eq!(store.add_visits("c1", other, 1).unwrap(), 1);
        assert_eq!(store.add_visits("c1", day, 2).unwrap(), 5);
        assert_eq!(
            ids(&store),
            ["hub1/vi/c1/2027-01-05/1", "hub1/vi/c1/2027-01-04/5"]
        );
        assert_eq!(store.uplink_backlog().0, 2);
        // Once sent, the next total is a new entry.
        acknowledge_all(&store);
        store.add_visits("c1", day, 1).unwrap();
        assert_eq!(ids(&store), ["hub1/vi/c1/2027-01-04/6"]);
        assert_eq!(store.visits("c1", day, day).unwrap(), [(day, 6)]);
    }

    #[test]
    fn the_backlog_is_counted_again_after_a_reopen() {
        let (store, _metrics, dir) = outbox(1 << 30);
        store.insert_event_once(&event("e1")).unwrap();
        store.uplink_append(&window(0)).unwrap();
        let before = store.uplink_backlog();
        store.flush().unwrap();
        drop(store);
        let metrics = Metrics::new();
        let mut store = Store::reopen(dir.path());
        store
            .enable_uplink(OutboxConfig::for_tests(1 << 30, &metrics))
            .unwrap();
        assert_eq!(store.uplink_backlog(), before);
        assert_eq!(metrics.uplink_backlog_messages.get(), 2);
    }
}
