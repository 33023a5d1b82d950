//! Durable state: the only module that touches sled, one submodule per
//! area, each an `impl Store` over its trees.
//!
//! - `devices`: `devices` (provisioning records), `revoked` (ids cut off),
//!   `twins` (device twins, counted in `meta` with every new one)
//! - `events`: `events` (each `(device, event id)` once)
//! - `commands`: `commands` (every command record, keyed `device\0id`) and
//!   `open_commands` (the keys of commands without an outcome yet, so a
//!   restart reloads only those)
//! - `people`: `residents`, `credentials` (keyed credential hash → resident id)
//! - `counts`: `occupancy` (live people per `center\0room`), `visits`
//!   (people through a center's entrance per local day,
//!   `center\0YYYY-MM-DD`), `usage` (milliseconds a piano played per local
//!   day, `center\0YYYY-MM-DD\0piano`)
//! - `bookings`: one tree `bookings`, so a booking and everything kept in
//!   step with it is one atomic batch, and `strikes`
//! - `notices`: `notifications` (`resident\0at id`), `outbox` (notification
//!   id → notification, until the webhook took it)
//! - `catalog`: `resources` (resources added or changed through the API, id
//!   → entry), `rooms` (rooms set through the API, `center/id` → entry),
//!   `outages` (bound device → outage)
//! - `access`: `api_tokens` (tokens created through the API, their SHA-256
//!   only) and `audit` (the API's audit log, in write order)
//! - `retention`: `aging` (a time index of events, command records and
//!   notifications) and pruning, the audit log's too
//! - `downlink`: `downlink` and `downlink_expiry`, the district commands
//!   taken (by id, until their expiry), written with their command records
//! - `uplink`: the uplink outbox (`uplink`, `uplink_telemetry`,
//!   `uplink_index`): what waits for the upstream's acknowledgement,
//!   written with the events, bookings and visits it describes
//! - `meta`: boot epoch, the hub's id, generated admin-token hash, the
//!   credential key's check value (the key itself is kept outside the
//!   store; a store from before keeps it here until the hub moves it
//!   out), the number of twins
//! - `codec`: key layouts and the JSON values
//! - `undo`: the desk's batch put back when its fsync failed
//!
//! `flush` fsyncs; the ingest loop calls it once per batch holding events
//! before it acknowledges them, the booking desk once per batch of jobs.

mod access;
mod bookings;
mod catalog;
mod codec;
mod commands;
mod counts;
mod devices;
mod downlink;
mod events;
mod meta;
mod notices;
mod people;
mod retention;
mod undo;
mod uplink;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::sync::OnceLock;

pub use codec::Page;
pub use devices::{NewCertificate, Renewal, Revocation};
use meta::stored_twin_count;
pub use people::ResidentConflict;
pub use retention::{Aged, Pruned};
pub use uplink::{OutboxConfig, OutboxMeters};

use crate::supervise::{FaultSwitch, InjectedFault};

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
    /// The test-only fault switch (`store_flush:error`) failed an fsync.
    #[error(transparent)]
    Injected(#[from] InjectedFault),
}

/// Why a task doing store work on blocking threads (`Store::in_background`)
/// ended early.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the runtime is shutting down")]
    Cancelled,
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
    rooms: sled::Tree,
    api_tokens: sled::Tree,
    audit: sled::Tree,
    aging: sled::Tree,
    downlink: sled::Tree,
    downlink_expiry: sled::Tree,
    meta: sled::Tree,
    /// Twins stored (as in `meta`), for `/metrics` without a scan.
    twin_count: AtomicU64,
    /// Test-only: fails `flush` once fired (`supervise::fault_point`).
    flush_fault: OnceLock<FaultSwitch>,
    /// The uplink outbox, once enabled (a hub with an upstream).
    uplink: Option<uplink::Outbox>,
}

/// sled's page cache. It fills with whatever was written until it reaches
/// this, so it sets much of a long-running hub's memory; what is read again
/// (twins, open commands, slot counts, residents) fits in far less. 64 MiB
/// (was 256): a district of 1,818 devices must stay under 250 MB RSS.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
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
            rooms: db.open_tree("rooms")?,
            api_tokens: db.open_tree("api_tokens")?,
            audit: db.open_tree("audit")?,
            aging: db.open_tree("aging")?,
            downlink: db.open_tree("downlink")?,
            downlink_expiry: db.open_tree("downlink_expiry")?,
            meta,
            twin_count,
            flush_fault: OnceLock::new(),
            uplink: None,
            db,
        })
    }

    /// A fresh id, increasing across restarts (notification order).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Fsyncs everything written so far. Returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        if let Some(fault) = self.flush_fault.get() {
            fault.check()?;
        }
        Ok(self.db.flush()?)
    }

    /// Test-only: every `flush` fails once `fault` has fired.
    pub fn inject_flush_fault(&self, fault: FaultSwitch) {
        let _ = self.flush_fault.set(fault);
    }

    /// Runs `work` on a blocking thread (sled may wait for the disk) and
    /// waits for it. A panic in `work` is resumed here, so the supervisor
    /// names the task it struck.
    pub async fn in_background<T: Send + 'static>(
        self: &Arc<Store>,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, BackgroundError> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => Ok(result?),
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(BackgroundError::Cancelled),
            },
        }
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
impl Store {
    /// Opens `dir` again in this process: sled's background flusher of the
    /// dropped handle may still hold the file lock for a moment.
    pub(crate) fn reopen(dir: &Path) -> Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{DeviceRecord, StoredEvent, Twin};
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
            previous_certificate: None,
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
        let store = Store::reopen(&dir);
        assert_eq!(store.next_boot_epoch().unwrap(), 2);
        assert_eq!(store.events_of("d1").unwrap().len(), 1);
        assert_eq!(store.twin("d1").unwrap().unwrap().kind, DeviceKind::Piano);
        assert_eq!(store.live_devices().unwrap(), vec![record("d1")]);
        assert_eq!(
            store.revoke("d1", 9).unwrap(),
            Revocation::Revoked(record("d1"))
        );
        assert!(store.is_revoked("d1").unwrap());
        assert_eq!(store.revoke("d1", 10).unwrap(), Revocation::AlreadyRevoked);
        assert_eq!(store.revoke("nobody", 9).unwrap(), Revocation::Unknown);
        assert!(store.live_devices().unwrap().is_empty());
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
            assert_eq!(
                store.revoke("d1", 9).unwrap(),
                Revocation::Revoked(record("d1"))
            );
            assert!(
                store.provision(&record("d1"), &twin).unwrap(),
                "reprovisioned"
            );
            assert_eq!(store.twin_count(), 2);
            store.flush().unwrap();
        }
        assert_eq!(Store::reopen(&dir).twin_count(), 2);
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
