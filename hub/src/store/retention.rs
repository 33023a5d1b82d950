//! Retention: the `aging` tree, one time index for every kind of record
//! that is kept for a while (events, command records, notifications), and
//! the pruning that walks it — plus the audit log, whose own tree is
//! already in time order — so one mechanism removes old records of every
//! kind.
//!
//! `aging` keys are `kind (1 byte) | at (u64 big-endian, unix ms) | the
//! record's key in its tree`, value empty: a walk of one kind's prefix
//! meets its records oldest first. `at` is the time the hub stored the
//! record (an event's `received_at`, a command's `created_at`, a
//! notification's storing time on the wall clock), never a device's or the
//! schedule clock's, so a device's skewed `ts` or a `fixed:` clock cannot
//! keep a record forever or prune it at once. The index entry is written
//! before the record, so at any crash point every record is indexed
//! (an entry without its record is removed by the next walk). Records
//! stored before the index existed are indexed once (`index_unaged`).

use super::codec::decode;
use super::{Store, StoreError};
use protocol::api::CommandRecord;

use crate::records::{AuditEntry, Notification, StoredEvent};

/// The kinds of records retention removes; the label of
/// `yizhan_records_pruned_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aged {
    Events,
    Commands,
    Notifications,
    Audit,
}

impl Aged {
    pub const ALL: [Aged; 4] = [
        Aged::Events,
        Aged::Commands,
        Aged::Notifications,
        Aged::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aged::Events => "events",
            Aged::Commands => "commands",
            Aged::Notifications => "notifications",
            Aged::Audit => "audit",
        }
    }

    /// The first byte of this kind's `aging` keys.
    fn tag(self) -> u8 {
        match self {
            Aged::Events => b'e',
            Aged::Commands => b'c',
            Aged::Notifications => b'n',
            Aged::Audit => b'a',
        }
    }
}

/// What one bounded pruning call did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    /// Where the next call goes on; `None` once nothing older is left.
    pub resume: Option<Vec<u8>>,
}

impl Store {
    /// Indexes `key` of `tree`'s record of `kind` stored at `at`.
    pub(super) fn age(&self, kind: Aged, at: u64, key: &[u8]) -> Result<(), StoreError> {
        self.aging.insert(aging_key(kind, at, key), &[])?;
        Ok(())
    }

    /// Removes records of `kind` stored before `before` (unix ms), looking
    /// at `max` of them at most, from `resume` (the previous call's) or
    /// the oldest. An open command and a notification the webhook has not
    /// delivered are kept (and looked at again next time). Not fsynced: a
    /// crash at worst keeps a record longer.
    pub fn prune(
        &self,
        kind: Aged,
        before: u64,
        max: usize,
        resume: Option<Vec<u8>>,
    ) -> Result<Pruned, StoreError> {
        if kind == Aged::Audit {
            return self.prune_audit(before, max);
        }
        let start = resume.unwrap_or_else(|| vec![kind.tag()]);
        let end = aging_key(kind, before, b"");
        let (tree, mut removed) = (self.tree_of(kind), 0);
        let (mut records, mut index) = (sled::Batch::default(), sled::Batch::default());
        let (mut last, mut looked) = (None, 0);
        for item in self.aging.range(start..end).keys().take(max) {
            looked += 1;
            let key = item?;
            let record = key.get(9..).unwrap_or_default();
            if !self.still_needed(kind, record)? {
                // An entry whose record is gone (indexed twice, or its
                // record's write lost in a crash) goes without a count.
                removed += usize::from(tree.contains_key(record)?);
                records.remove(record);
                index.remove(key.clone());
            }
            last = Some(key);
        }
        tree.apply_batch(records)?;
        self.aging.apply_batch(index)?;
        // The key just after the last one looked at, when `max` were: the
        // walk goes on past it.
        let resume = last.filter(|_| looked == max).map(|key| {
            let mut next = key.to_vec();
            next.push(0);
            next
        });
        Ok(Pruned { removed, resume })
    }

    /// Whether records of `kind` may predate the `aging` tree and are not
    /// all indexed yet (`index_unaged` has not finished on this store).
    pub fn unaged(&self, kind: Aged) -> Result<bool, StoreError> {
        Ok(kind != Aged::Audit && !self.meta.contains_key(backfilled(kind))?)
    }

    /// Indexes records of `kind` stored before the `aging` tree existed,
    /// `max` at a time from `resume` (the previous call's); where to go
    /// on, `None` once done — then noted in `meta`, so a store does it
    /// once. Such a record is indexed by its own time (an event's
    /// `received_at`, a command's `created_at`, a notification's `at`).
    pub fn index_unaged(
        &self,
        kind: Aged,
        max: usize,
        resume: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut index = sled::Batch::default();
        let (mut last, mut looked) = (None, 0);
        let start = resume.unwrap_or_default();
        for item in self.tree_of(kind).range(start..).take(max) {
            let (key, value) = item?;
            index.insert(aging_key(kind, stored_at(kind, &key, &value)?, &key), &[]);
            looked += 1;
            last = Some(key);
        }
        self.aging.apply_batch(index)?;
        match last.filter(|_| looked == max) {
            Some(key) => {
                let mut next = key.to_vec();
                next.push(0);
                Ok(Some(next))
            }
            None => {
                self.meta.insert(backfilled(kind), &[])?;
                Ok(None)
            }
        }
    }

    fn tree_of(&self, kind: Aged) -> &sled::Tree {
        match kind {
            Aged::Events => &self.events,
            Aged::Commands => &self.commands,
            Aged::Notifications => &self.notifications,
            Aged::Audit => &self.audit,
        }
    }

    /// Whether a record must stay whatever its age: an open command, an
    /// undelivered notification (its id ends its key).
    fn still_needed(&self, kind: Aged, record: &[u8]) -> Result<bool, StoreError> {
        Ok(match kind {
            Aged::Commands => self.open_commands.contains_key(record)?,
            Aged::Notifications => {
                let id = record.rsplit(|&byte| byte == 0).next().unwrap_or_default();
                self.outbox.contains_key(id)?
            }
            Aged::Events | Aged::Audit => false,
        })
    }

    /// The audit log's tree is in write order already: its oldest entries
    /// go first, `max` at most.
    fn prune_audit(&self, before: u64, max: usize) -> Result<Pruned, StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.audit.iter().take(max) {
            let (key, value) = item?;
            let entry: AuditEntry = decode(&key, &value)?;
            if entry.at >= before {
                break;
            }
            batch.remove(key);
            removed += 1;
        }
        self.audit.apply_batch(batch)?;
        let more = removed == max;
        Ok(Pruned {
            removed,
            resume: more.then(Vec::new),
        })
    }
}

/// The `meta` key noting that `kind`'s older records are indexed.
fn backfilled(kind: Aged) -> Vec<u8> {
    [b"aging_backfilled_", kind.as_str().as_bytes()].concat()
}

/// When a record of `kind` was stored, from the record.
fn stored_at(kind: Aged, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    Ok(match kind {
        Aged::Events => decode::<StoredEvent>(key, value)?.received_at,
        Aged::Commands => decode::<CommandRecord>(key, value)?.created_at,
        Aged::Notifications => decode::<Notification>(key, value)?.at,
        Aged::Audit => decode::<AuditEntry>(key, value)?.at,
    })
}

fn aging_key(kind: Aged, at: u64, record: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + record.len());
    key.push(kind.tag());
    key.extend_from_slice(&at.to_be_bytes());
    key.extend_from_slice(record);
    key
}

#[cfg(test)]
mod tests {
    use protocol::api::{CommandOrigin, CommandRecord, CommandStatus};
    use protocol::DeviceKind;

    use super::*;
    use crate::records::{Notification, StoredEvent};

    fn event(id: &str, received_at: u64) -> StoredEvent {
        StoredEvent {
            device: "d1".into(),
            center: "c1".into(),
            kind: DeviceKind::Gate,
            received_at,
            event: serde_json::from_value(serde_json::json!(
                {"id": id, "ts": 1, "seq": 1, "type": "x"}
            ))
            .unwrap(),
        }
    }

    fn command(id: &str, created_at: u64, status: CommandStatus) -> CommandRecord {
        CommandRecord {
            id: id.into(),
            device: "d1".into(),
            op: "open".into(),
            args: serde_json::json!({}),
            origin: CommandOrigin::Api,
            status,
            created_at,
            expires_at: created_at + 10,
            first_sent_at: None,
            last_sent_at: None,
            completed_at: None,
            attempts: 0,
            error: None,
        }
    }

    fn notification(id: &str) -> Notification {
        Notification {
            id: id.into(),
            resident: "r1".into(),
            booking: "b1".into(),
            kind: "promoted".into(),
            message: "m".into(),
            at: 1,
        }
    }

    /// Prunes `kind` before `before` in calls of `max`; removed in all.
    fn prune_all(store: &Store, kind: Aged, before: u64, max: usize) -> usize {
        let (mut removed, mut resume) = (0, None);
        loop {
            let pruned = store.prune(kind, before, max, resume.take()).unwrap();
            removed += pruned.removed;
            match pruned.resume {
                Some(next) => resume = Some(next),
                None => return removed,
            }
        }
    }

    fn ids<T>(page: super::super::Page<T>, id: impl Fn(&T) -> &str) -> Vec<String> {
        page.items.iter().map(|item| id(item).to_string()).collect()
    }

    #[test]
    fn old_records_go_open_commands_and_undelivered_notifications_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (id, at) in [("e3", 300), ("e1", 100), ("e2", 200)] {
            assert!(store.insert_event_once(&event(id, at)).unwrap());
        }
        assert_eq!(prune_all(&store, Aged::Events, 250, 1), 2, "e1, e2");
        let left = store.events_page("d1", None, 10).unwrap();
        assert_eq!(ids(left, |e| &e.event.id), ["e3"]);
        assert_eq!(prune_all(&store, Aged::Events, 250, 1), 0);

        store
            .put_command(&command("c1", 100, CommandStatus::Sent))
            .unwrap();
        store
            .put_command(&command("c2", 110, CommandStatus::Acked))
            .unwrap();
        store
            .put_command(&command("c3", 900, CommandStatus::Acked))
            .unwrap();
        assert_eq!(prune_all(&store, Aged::Commands, 500, 1), 1, "c2 only");
        let left = store.commands_page("d1", None, 10).unwrap();
        assert_eq!(ids(left, |c| &c.id), ["c1", "c3"]);
        // Once c1 has its outcome it goes too (its created_at is unchanged).
        store
            .put_command(&command("c1", 100, CommandStatus::Expired))
            .unwrap();
        assert_eq!(prune_all(&store, Aged::Commands, 500, 2), 1);

        store.add_notification(&notification("n1"), true).unwrap();
        store.add_notification(&notification("n2"), false).unwrap();
        let later = crate::clock::unix_ms() + 1;
        assert_eq!(prune_all(&store, Aged::Notifications, later, 5), 1, "n2");
        store.delivered("n1").unwrap();
        assert_eq!(prune_all(&store, Aged::Notifications, later, 5), 1, "n1");
        assert!(store
            .notifications_page("r1", None, 5)
            .unwrap()
            .items
            .is_empty());
    }

    /// A store holding d1's events e0.. received at 0...
    fn with_events(count: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..count {
            store
                .insert_event_once(&event(&format!("e{i}"), i))
                .unwrap();
        }
        (dir, store)
    }

    #[test]
    fn records_stored_before_the_index_are_indexed_once() {
        let (_dir, store) = with_events(5);
        store.aging.clear().unwrap(); // as a store written before it
        assert!(store.unaged(Aged::Events).unwrap());
        assert_eq!(prune_all(&store, Aged::Events, 100, 10), 0, "not indexed");
        let mut resume = None;
        for calls in 1.. {
            resume = store.index_unaged(Aged::Events, 2, resume).unwrap();
            if resume.is_none() {
                assert_eq!(calls, 3, "2 + 2 + 1");
                break;
            }
        }
        assert!(!store.unaged(Aged::Events).unwrap());
        assert_eq!(prune_all(&store, Aged::Events, 3, 10), 3, "e0, e1, e2");
        store.age(Aged::Events, 9, b"d1\0gone").unwrap();
        assert_eq!(
            prune_all(&store, Aged::Events, 100, 10),
            2,
            "an orphan entry is not counted"
        );
    }

    #[test]
    fn pages_follow_on_without_gaps_or_repeats() {
        let (_dir, store) = with_events(7);
        let mut other = event("e0", 0);
        other.device = "d10".into();
        store.insert_event_once(&other).unwrap();
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = store.events_page("d1", after.as_deref(), 3).unwrap();
            assert!(page.items.len() <= 3);
            after = page.next.clone();
            seen.extend(ids(page, |e| &e.event.id));
            if after.is_none() {
                break;
            }
        }
        assert_eq!(
            seen,
            ["e0", "e1", "e2", "e3", "e4", "e5", "e6"],
            "d10's not in"
        );
        let last = store.events_page("d1", Some(b"e3"), 3).unwrap();
        assert!(last.next.is_none(), "exactly the last three: no next");
    }
}
