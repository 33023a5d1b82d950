//! Durable state: the only module that touches sled.
//!
//! Trees: `devices` (provisioning records), `revoked` (ids cut off),
//! `twins` (device twins), `events` (each `(device, event id)` once),
//! `commands` (every command record, keyed `device\0id`), `open_commands`
//! (the keys of commands without an outcome yet, so a restart reloads only
//! those), `residents`, `credentials` (keyed credential hash → resident id),
//! `occupancy` (live people per `center\0room`), `visits` (people through
//! a center's entrance per local day, `center\0YYYY-MM-DD`), `usage`
//! (milliseconds a piano played per local day, `center\0YYYY-MM-DD\0piano`)
//! bookings: one tree `bookings`, so a booking and everything kept in step
//! with it is one atomic batch — `b\0id` (the booking), `s\0resource\0start\0id`
//! and `r\0resident\0start\0id` (index entries), `c\0resource\0start\0`
//! (places per group and waitlist of the slot), `d\0at\0what\0id` (slot
//! starts, grace ends and slot ends to process); `strikes`
//! (`resident\0at\0booking` → booking id), `notifications` (`resident\0at id`),
//! `outbox` (notification id → notification, until the webhook took it),
//! `outages` (bound device → outage), `resources` (resources added or
//! changed through the API, id → config entry);
//! and `meta` (boot epoch,
//! generated admin-token hash, the credential-hashing key, the number of
//! twins, kept with every new twin so nobody counts the tree). Values are JSON.
//! `flush` fsyncs; the ingest loop calls it once per batch holding events
//! before it acknowledges them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;

use crate::records::booking::{decode_count, encode_count};
use crate::records::{
    Booking, DeviceRecord, IndexEntry, Milestone, Notification, Outage, Resident, ResourceConfig,
    RoomCount, SlotCount, StoredEvent, Twin,
};

use protocol::api::CommandRecord;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key:?}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("malformed key {0}")]
    BadKey(String),
}

/// Why a resident could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentConflict {
    IdTaken,
    CredentialTaken,
}

pub struct Store {
    db: sled::Db,
    devices: sled::Tree,
    revoked: sled::Tree,
    twins: sled::Tree,
    events: sled::Tree,
    commands: sled::Tree,
    open_commands: sled::Tree,
    residents: sled::Tree,
    credentials: sled::Tree,
    occupancy: sled::Tree,
    visits: sled::Tree,
    usage: sled::Tree,
    bookings: sled::Tree,
    strikes: sled::Tree,
    notifications: sled::Tree,
    outbox: sled::Tree,
    outages: sled::Tree,
    resources: sled::Tree,
    meta: sled::Tree,
    /// Twins stored (as in `meta`), for `/metrics` without a scan.
    twin_count: AtomicU64,
}

const BOOT_EPOCH_KEY: &[u8] = b"boot_epoch";
const ADMIN_TOKEN_KEY: &[u8] = b"admin_token_sha256";
const CREDENTIAL_KEY: &[u8] = b"credential_hmac_key";
const TWIN_COUNT_KEY: &[u8] = b"twin_count";

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(Some(200))
            .open()?;
        let (twins, meta) = (db.open_tree("twins")?, db.open_tree("meta")?);
        let twin_count = AtomicU64::new(stored_twin_count(&twins, &meta)?);
        Ok(Store {
            devices: db.open_tree("devices")?,
            revoked: db.open_tree("revoked")?,
            twins,
            events: db.open_tree("events")?,
            commands: db.open_tree("commands")?,
            open_commands: db.open_tree("open_commands")?,
            residents: db.open_tree("residents")?,
            credentials: db.open_tree("credentials")?,
            occupancy: db.open_tree("occupancy")?,
            visits: db.open_tree("visits")?,
            usage: db.open_tree("usage")?,
            bookings: db.open_tree("bookings")?,
            strikes: db.open_tree("strikes")?,
            notifications: db.open_tree("notifications")?,
            outbox: db.open_tree("outbox")?,
            outages: db.open_tree("outages")?,
            resources: db.open_tree("resources")?,
            meta,
            twin_count,
            db,
        })
    }

    /// Increments and returns the boot epoch. A twin marked online in an
    /// earlier epoch is offline now: every session ended with the process.
    pub fn next_boot_epoch(&self) -> Result<u64, StoreError> {
        let next = self
            .meta
            .update_and_fetch(BOOT_EPOCH_KEY, |old| {
                let n = old.map(decode_u64).unwrap_or(0) + 1;
                Some(n.to_be_bytes().to_vec())
            })?
            .map(|v| decode_u64(&v))
            .unwrap_or(1);
        self.db.flush()?;
        Ok(next)
    }

    pub fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(ADMIN_TOKEN_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_admin_token_hash(&self, sha256_hex: &str) -> Result<(), StoreError> {
        self.meta.insert(ADMIN_TOKEN_KEY, sha256_hex.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Records a provisioned device and its initial twin, replacing a revoked
    /// one, in one transaction with the twin count. Returns false (and
    /// writes nothing) when the id is live. Fsyncs.
    pub fn provision(&self, record: &DeviceRecord, twin: &Twin) -> Result<bool, StoreError> {
        let key = record.id.as_bytes();
        let (record, twin) = (to_json(record), to_json(twin));
        let trees = (&self.devices, &self.twins, &self.revoked, &self.meta);
        let outcome = trees.transaction(|(devices, twins, revoked, meta)| {
            if devices.get(key)?.is_some() && revoked.get(key)?.is_none() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            devices.insert(key, record.as_slice())?;
            let new_twin = twins.insert(key, twin.as_slice())?.is_none();
            revoked.remove(key)?;
            if new_twin {
                let count = meta.get(TWIN_COUNT_KEY)?.map_or(0, |v| decode_u64(&v));
                meta.insert(TWIN_COUNT_KEY, (count + 1).to_be_bytes().to_vec())?;
            }
            Ok(new_twin)
        });
        let new_twin = match outcome {
            Ok(new_twin) => new_twin,
            Err(TransactionError::Abort(())) => return Ok(false),
            Err(TransactionError::Storage(error)) => return Err(error.into()),
        };
        if new_twin {
            self.twin_count.fetch_add(1, Ordering::Relaxed);
        }
        self.db.flush()?;
        Ok(true)
    }

    pub fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        get_json(&self.devices, id)
    }

    /// Marks a device revoked. Returns false when it was never provisioned.
    pub fn revoke(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        if !self.devices.contains_key(id)? {
            return Ok(false);
        }
        self.revoked.insert(id, &at.to_be_bytes())?;
        self.db.flush()?;
        Ok(true)
    }

    pub fn is_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.revoked.contains_key(id)?)
    }

    pub fn revoked_ids(&self) -> Result<Vec<String>, StoreError> {
        self.revoked
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    pub fn twin(&self, id: &str) -> Result<Option<Twin>, StoreError> {
        get_json(&self.twins, id)
    }

    /// Writes twins in one atomic batch (not fsynced: see `flush`). Only
    /// twins `provision` created: the twin count does not change here.
    pub fn put_twins<'a>(&self, twins: impl Iterator<Item = &'a Twin>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for twin in twins {
            batch.insert(twin.id.as_bytes(), to_json(twin));
        }
        self.twins.apply_batch(batch)?;
        Ok(())
    }

    /// Every twin, in id order.
    pub fn twins(&self) -> impl Iterator<Item = Result<Twin, StoreError>> + '_ {
        self.twins.iter().map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
    }

    pub fn twin_count(&self) -> u64 {
        self.twin_count.load(Ordering::Relaxed)
    }

    /// Stores an event unless `(device, id)` is already stored. Returns
    /// whether it was new.
    pub fn insert_event_once(&self, event: &StoredEvent) -> Result<bool, StoreError> {
        let key = pair_key(&event.device, &event.event.id);
        let swapped =
            self.events
                .compare_and_swap(key, None as Option<&[u8]>, Some(to_json(event)))?;
        Ok(swapped.is_ok())
    }

    /// Events of one device, in id order.
    pub fn events_of(&self, device: &str) -> Result<Vec<StoredEvent>, StoreError> {
        scan_json(&self.events, &pair_key(device, ""))
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The key credentials are hashed with: 32 random bytes made at first
    /// use and kept in `meta` (never leaves the hub).
    pub fn credential_key(&self) -> Result<[u8; 32], StoreError> {
        let fresh = rand::random::<[u8; 32]>();
        // Only the first writer's key sticks; later calls read it back.
        let _ =
            self.meta
                .compare_and_swap(CREDENTIAL_KEY, None as Option<&[u8]>, Some(&fresh[..]))?;
        let stored = self.meta.get(CREDENTIAL_KEY)?.unwrap_or_default();
        self.db.flush()?;
        Ok(stored.as_ref().try_into().unwrap_or(fresh))
    }

    /// Writes a command record (not fsynced) and keeps the open-commands
    /// index in step: a superset of the open ones at any crash point.
    pub fn put_command(&self, record: &CommandRecord) -> Result<(), StoreError> {
        let key = pair_key(&record.device, &record.id);
        if record.status.is_final() {
            self.commands.insert(&key, to_json(record))?;
            self.open_commands.remove(&key)?;
        } else {
            self.open_commands.insert(&key, &[])?;
            self.commands.insert(&key, to_json(record))?;
        }
        Ok(())
    }

    pub fn command(&self, device: &str, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let key = pair_key(device, id);
        self.commands
            .get(&key)?
            .map(|value| decode(&key, &value))
            .transpose()
    }

    /// Commands of one device, oldest first (ids sort by issue time).
    pub fn commands_of(&self, device: &str) -> Result<Vec<CommandRecord>, StoreError> {
        scan_json(&self.commands, &pair_key(device, ""))
    }

    /// Every command without an outcome yet.
    pub fn open_commands(&self) -> Result<Vec<CommandRecord>, StoreError> {
        let mut open = Vec::new();
        for key in self.open_commands.iter().keys() {
            let key = key?;
            if let Some(value) = self.commands.get(&key)? {
                let record: CommandRecord = decode(&key, &value)?;
                if !record.status.is_final() {
                    open.push(record);
                }
            }
        }
        Ok(open)
    }

    /// Adds a resident and its credential hash atomically, unless the id or
    /// the credential is taken. Fsyncs.
    pub fn add_resident(
        &self,
        resident: &Resident,
    ) -> Result<Result<(), ResidentConflict>, StoreError> {
        let result =
            (&self.residents, &self.credentials).transaction(|(residents, credentials)| {
                if residents.get(resident.id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(
                        ResidentConflict::IdTaken,
                    ));
                }
                if credentials
                    .get(resident.credential_hash.as_bytes())?
                    .is_some()
                {
                    return Err(ConflictableTransactionError::Abort(
                        ResidentConflict::CredentialTaken,
                    ));
                }
                residents.insert(resident.id.as_bytes(), to_json(resident))?;
                credentials.insert(resident.credential_hash.as_bytes(), resident.id.as_bytes())?;
                Ok(())
            });
        match result {
            Ok(()) => {
                self.db.flush()?;
                Ok(Ok(()))
            }
            Err(TransactionError::Abort(conflict)) => Ok(Err(conflict)),
            Err(TransactionError::Storage(error)) => Err(error.into()),
        }
    }

    pub fn resident(&self, id: &str) -> Result<Option<Resident>, StoreError> {
        get_json(&self.residents, id)
    }

    /// The resident holding the credential with this keyed hash.
    pub fn resident_by_credential(&self, hash: &str) -> Result<Option<Resident>, StoreError> {
        match self.credentials.get(hash)? {
            Some(id) => self.resident(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Sets a resident's blocked flag; `None` when there is no such resident.
    /// Fsyncs.
    pub fn set_resident_blocked(
        &self,
        id: &str,
        blocked: bool,
    ) -> Result<Option<Resident>, StoreError> {
        let Some(mut resident) = self.resident(id)? else {
            return Ok(None);
        };
        resident.blocked = blocked;
        self.residents.insert(id, to_json(&resident))?;
        self.db.flush()?;
        Ok(Some(resident))
    }

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
    /// fsynced); returns the day's new total.
    pub fn add_visits(&self, center: &str, day: NaiveDate, people: u64) -> Result<u64, StoreError> {
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

    /// Writes a booking, its two index entries, its slot's count and its due
    /// times in one atomic batch (not fsynced: the desk flushes once per
    /// batch of jobs). Reads the slot's count and the booking's previous
    /// entry outside the batch: only the booking desk writes bookings.
    pub fn put_booking(
        &self,
        booking: &Booking,
        due: &[(u64, Milestone)],
    ) -> Result<(), StoreError> {
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
        if let Some(old) = self.bookings.get(&slot_key)? {
            let old: IndexEntry = decode(&slot_key, &old)?;
            count.apply(old.status, old.group, false);
        }
        count.apply(booking.status, booking.group, true);
        let entry = to_json(&IndexEntry::of(booking));
        let mut batch = sled::Batch::default();
        batch.insert(count_key, &encode_count(&count)[..]);
        batch.insert(tagged(BOOKING, &booking.id).as_bytes(), to_json(booking));
        batch.insert(slot_key, entry.as_slice());
        batch.insert(resident_key, entry);
        for (at, what) in due {
            batch.insert(due_key(*at, *what, &booking.id), &[][..]);
        }
        self.bookings.apply_batch(batch)?;
        Ok(())
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
        self.bookings.remove(due_key(at, what, id))?;
        Ok(())
    }

    /// Records a no-show strike (not fsynced).
    pub fn add_strike(&self, resident: &str, at: u64, booking: &str) -> Result<(), StoreError> {
        self.strikes
            .insert(time_key(resident, at, booking), to_json(&booking))?;
        Ok(())
    }

    /// Times of `resident`'s strikes at or after `since`.
    pub fn strikes_since(&self, resident: &str, since: u64) -> Result<Vec<u64>, StoreError> {
        Ok(time_range(&self.strikes, resident, since, u64::MAX)?
            .into_iter()
            .map(|(at, _, _): (u64, String, serde::de::IgnoredAny)| at)
            .collect())
    }

    /// Stores a notification for its resident, and in the outbox when a
    /// webhook is to deliver it (not fsynced).
    pub fn add_notification(
        &self,
        notification: &Notification,
        outbox: bool,
    ) -> Result<(), StoreError> {
        let key = time_key(&notification.resident, notification.at, &notification.id);
        let value = to_json(notification);
        if outbox {
            self.outbox
                .insert(notification.id.as_bytes(), value.clone())?;
        }
        self.notifications.insert(key, value)?;
        Ok(())
    }

    /// Records a bound device's outage (not fsynced).
    pub fn put_outage(&self, device: &str, outage: &Outage) -> Result<(), StoreError> {
        self.outages.insert(device, to_json(outage))?;
        Ok(())
    }

    pub fn remove_outage(&self, device: &str) -> Result<(), StoreError> {
        self.outages.remove(device)?;
        Ok(())
    }

    /// Every bound device's outage, as `(device, outage)`.
    pub fn outages(&self) -> Result<Vec<(String, Outage)>, StoreError> {
        self.outages
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    decode(&key, &value)?,
                ))
            })
            .collect()
    }

    /// Keeps a resource added or changed through the API. Fsyncs.
    pub fn put_resource(&self, resource: &ResourceConfig) -> Result<(), StoreError> {
        self.resources
            .insert(resource.id.as_bytes(), to_json(resource))?;
        self.db.flush()?;
        Ok(())
    }

    /// Resources added or changed through the API, in id order.
    pub fn stored_resources(&self) -> Result<Vec<ResourceConfig>, StoreError> {
        scan_json(&self.resources, b"")
    }

    /// A fresh id, increasing across restarts (notification order).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// The oldest notifications waiting for the webhook.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Notification>, StoreError> {
        self.outbox
            .iter()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    /// Forgets a delivered notification (not fsynced: a crash may deliver
    /// it again; receivers deduplicate by id).
    pub fn delivered(&self, id: &str) -> Result<(), StoreError> {
        self.outbox.remove(id)?;
        Ok(())
    }

    /// A resident's notifications, oldest first.
    pub fn notifications_of(&self, resident: &str) -> Result<Vec<Notification>, StoreError> {
        scan_json(&self.notifications, &pair_key(resident, ""))
    }

    /// Fsyncs everything written so far. Returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// The twin count kept in `meta`; a store from before it was kept is
/// counted once.
fn stored_twin_count(twins: &sled::Tree, meta: &sled::Tree) -> Result<u64, StoreError> {
    if let Some(count) = meta.get(TWIN_COUNT_KEY)? {
        return Ok(decode_u64(&count));
    }
    let count = twins.len() as u64;
    meta.insert(TWIN_COUNT_KEY, &count.to_be_bytes())?;
    Ok(count)
}

/// `first \0 second`: keys of per-device (and per-center) records, so a
/// prefix scan finds one owner's records.
fn pair_key(first: &str, second: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + 1 + second.len());
    key.extend_from_slice(first.as_bytes());
    key.push(0);
    key.extend_from_slice(second.as_bytes());
    key
}

/// `owner \0 at(16 hex) \0 id`: records of an owner in time order.
fn time_key(owner: &str, at: u64, id: &str) -> Vec<u8> {
    pair_key(owner, &format!("{at:016x}\0{id}"))
}

/// Entries of `owner` keyed by `time_key` with times in `[from, to)`.
fn time_range<T: DeserializeOwned>(
    tree: &sled::Tree,
    owner: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, String, T)>, StoreError> {
    let (start, end) = (time_key(owner, from, ""), time_key(owner, to, ""));
    let prefix = owner.len() + 1;
    tree.range(start..end)
        .map(|entry| {
            let (key, value) = entry?;
            let bad = || StoreError::BadKey(format!("{key:?}"));
            let rest = key.get(prefix..).ok_or_else(bad)?;
            let at = std::str::from_utf8(rest.get(..16).ok_or_else(bad)?)
                .ok()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(bad)?;
            let id = String::from_utf8_lossy(rest.get(17..).unwrap_or_default()).into_owned();
            Ok((at, id, decode(&key, &value)?))
        })
        .collect()
}

/// Record kinds in the `bookings` tree, the first part of their keys.
const BOOKING: &str = "b";
const SLOT: &str = "s";
const RESIDENT: &str = "r";
const COUNT: &str = "c";
const DUE: &str = "d";

/// `tag\0owner`: one kind of record of one owner in the `bookings` tree.
fn tagged(tag: &str, owner: &str) -> String {
    pair_key_text(tag, owner)
}

fn due_key(at: u64, what: Milestone, id: &str) -> Vec<u8> {
    tagged(DUE, &format!("{at:016x}\0{}\0{id}", what.as_str())).into_bytes()
}

fn parse_due_key(key: &[u8]) -> Option<(u64, Milestone, String)> {
    let text = std::str::from_utf8(key).ok()?;
    let text = text.strip_prefix(&tagged(DUE, ""))?;
    let mut parts = text.splitn(3, '\0');
    let at = u64::from_str_radix(parts.next()?, 16).ok()?;
    let what = Milestone::parse(parts.next()?)?;
    Some((at, what, parts.next()?.to_string()))
}

/// `first\0second` as text, to nest inside another key.
fn pair_key_text(first: &str, second: &str) -> String {
    format!("{first}\0{second}")
}

fn scan_json<T: DeserializeOwned>(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    tree.scan_prefix(prefix)
        .map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
        .collect()
}

fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // invariant: our records are plain structs with string keys; they
    // always serialize.
    serde_json::to_vec(value).expect("record serializes")
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn get_json<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
    tree.get(key)?
        .map(|value| decode(key.as_bytes(), &value))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::DeviceKind;

    fn record(id: &str) -> DeviceRecord {
        DeviceRecord {
            id: id.into(),
            center: "c1".into(),
            room: "r1".into(),
            kind: DeviceKind::Piano,
            password_sha256: "00".into(),
            certificate_sha256: "11".into(),
            not_after: 0,
            provisioned_at: 0,
        }
    }

    /// Opens `dir` again in this process: sled's background flusher of the
    /// dropped handle may still hold the file lock for a moment.
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(error) if std::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "store still locked");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("reopening the store: {error}"),
            }
        }
    }

    #[test]
    fn events_are_stored_once_and_state_survives_reopen() {
        let dir = tempdir();
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.next_boot_epoch().unwrap(), 1);
            let twin = Twin::provisioned(&record("d1"));
            assert!(store.provision(&record("d1"), &twin).unwrap());
            assert!(!store.provision(&record("d1"), &twin).unwrap());
            let event = StoredEvent {
                device: "d1".into(),
                center: "c1".into(),
                kind: DeviceKind::Piano,
                received_at: 5,
                event: serde_json::from_str(r#"{"id":"e1","ts":1,"seq":1,"type":"x"}"#).unwrap(),
            };
            assert!(store.insert_event_once(&event).unwrap());
            assert!(!store.insert_event_once(&event).unwrap());
            store.flush().unwrap();
        }
        let store = reopen(&dir);
        assert_eq!(store.next_boot_epoch().unwrap(), 2);
        assert_eq!(store.events_of("d1").unwrap().len(), 1);
        assert_eq!(store.twin("d1").unwrap().unwrap().kind, DeviceKind::Piano);
        assert!(store.revoke("d1", 9).unwrap());
        assert!(store.is_revoked("d1").unwrap());
        assert!(!store.revoke("nobody", 9).unwrap());
        let twin = Twin::provisioned(&record("d1"));
        assert!(
            store.provision(&record("d1"), &twin).unwrap(),
            "a revoked id can be provisioned again"
        );
        assert!(!store.is_revoked("d1").unwrap());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_twin_count_is_kept_with_new_twins_and_survives_reopen() {
        let dir = tempdir();
        {
            let store = Store::open(&dir).unwrap();
            for id in ["d1", "d2"] {
                let twin = Twin::provisioned(&record(id));
                assert!(store.provision(&record(id), &twin).unwrap());
            }
            let twin = Twin::provisioned(&record("d1"));
            assert!(!store.provision(&record("d1"), &twin).unwrap(), "live id");
            assert!(store.revoke("d1", 9).unwrap());
            assert!(
                store.provision(&record("d1"), &twin).unwrap(),
                "reprovisioned"
            );
            assert_eq!(store.twin_count(), 2);
            store.flush().unwrap();
        }
        assert_eq!(reopen(&dir).twin_count(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "yizhan-store-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
