//! Gauges no single thread owns: the fleet's census (devices provisioned
//! and not revoked per center and kind, the certificates' expiry), kept by
//! provisioning, renewal and revocation and counted from the store once at
//! start;
//! and the store's size on disk, refreshed by a background task
//! (`gauges` component) every `STORE_SIZE_EVERY`, never per scrape.
//! A provisioned device's center and kind also get their counters of rare
//! events (seq gaps, interlock trips) at 0, so a first occurrence is an
//! increase Prometheus can see rather than a new series at 1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{Channel, DeviceKind};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::records::{DeviceRecord, TripReason};
use crate::store::Store;

/// How often the store's size on disk is read.
pub const STORE_SIZE_EVERY: Duration = Duration::from_secs(30);

/// `yizhan_devices{center,kind}` and
/// `yizhan_certificate_expiry_timestamp_seconds{certificate}`.
pub struct Census {
    metrics: Metrics,
    /// Live devices' certificate expiry (unix ms) → how many expire then.
    expiries: Mutex<BTreeMap<u64, u32>>,
}

impl Census {
    /// Counts `live`, the store's live devices (read once, at start).
    pub fn load(live: &[DeviceRecord], metrics: Metrics) -> Census {
        let census = Census {
            metrics,
            expiries: Mutex::default(),
        };
        for record in live {
            census.provisioned(record);
        }
        census
    }

    /// The CA's and the edge's server certificate's expiry (unix ms).
    pub fn hub_certificates(&self, ca_not_after_ms: u64, server_not_after_ms: u64) {
        let gauge = &self.metrics.certificate_expiry;
        gauge
            .with_label_values(&["ca"])
            .set(seconds(ca_not_after_ms));
        gauge
            .with_label_values(&["server"])
            .set(seconds(server_not_after_ms));
    }

    pub fn provisioned(&self, record: &DeviceRecord) {
        self.count(record, 1);
        self.zero_rare_counters(record);
        let mut expiries = self.lock();
        *expiries.entry(record.not_after).or_default() += 1;
        self.show_earliest(&expiries);
    }

    /// A live device was revoked (once per revocation).
    pub fn revoked(&self, record: &DeviceRecord) {
        self.count(record, -1);
        let mut expiries = self.lock();
        forget(&mut expiries, record.not_after);
        self.show_earliest(&expiries);
    }

    /// A device's certificate was renewed: its new expiry counts, the
    /// replaced one's no longer (it connects only until its grace ends).
    pub fn renewed(&self, before: &DeviceRecord, after: &DeviceRecord) {
        let mut expiries = self.lock();
        forget(&mut expiries, before.not_after);
        *expiries.entry(after.not_after).or_default() += 1;
        self.show_earliest(&expiries);
    }

    /// Creates at 0 the counters of rare events `record`'s center and
    /// kind may raise (a no-op for series that exist).
    fn zero_rare_counters(&self, record: &DeviceRecord) {
        let (center, kind) = (record.center.as_str(), record.kind.as_str());
        for channel in [Channel::Telemetry, Channel::Event] {
            self.metrics
                .seq_gaps
                .with_label_values(&[center, kind, channel.label()]);
        }
        if record.kind == DeviceKind::TherapyRobot {
            for reason in TripReason::ALL {
                self.metrics
                    .interlock_trips
                    .with_label_values(&[center, reason.as_str()]);
            }
        }
    }

    fn count(&self, record: &DeviceRecord, by: i64) {
        self.metrics
            .devices
            .with_label_values(&[&record.center, record.kind.as_str()])
            .add(by);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        // invariant: no code panics while holding the lock.
        self.expiries.lock().expect("census lock")
    }

    /// The earliest live device certificate's expiry; absent without one.
    fn show_earliest(&self, expiries: &BTreeMap<u64, u32>) {
        let gauge = &self.metrics.certificate_expiry;
        match expiries.keys().next() {
            Some(ms) => gauge
                .with_label_values(&["device_earliest"])
                .set(seconds(*ms)),
            None => {
                let _ = gauge.remove_label_values(&["device_earliest"]);
            }
        }
    }
}

/// One certificate less expiring at `not_after`.
fn forget(expiries: &mut BTreeMap<u64, u32>, not_after: u64) {
    if let Some(count) = expiries.get_mut(&not_after) {
        *count -= 1;
        if *count == 0 {
            expiries.remove(&not_after);
        }
    }
}

fn seconds(ms: u64) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}

/// Sets `yizhan_store_size_bytes` now and every `STORE_SIZE_EVERY` until
/// `stop` (on a blocking thread: sled lists its files). A failed read is
/// logged and tried again next time: the size is worth no outage.
pub async fn refresh_store_size(store: Arc<Store>, metrics: Metrics, stop: CancellationToken) {
    loop {
        let reader = store.clone();
        match tokio::task::spawn_blocking(move || reader.size_on_disk()).await {
            Ok(Ok(bytes)) => metrics
                .store_size
                .set(i64::try_from(bytes).unwrap_or(i64::MAX)),
            Ok(Err(error)) => tracing::warn!(%error, "store size not read"),
            Err(error) => tracing::warn!(%error, "store size not read"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STORE_SIZE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::DeviceKind;

    fn record(id: &str, kind: DeviceKind, not_after: u64) -> DeviceRecord {
        DeviceRecord {
            not_after,
            ..crate::records::device::record(id, "c1", "r", kind)
        }
    }

    #[test]
    fn the_census_follows_provisioning_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let metrics = Metrics::new();
        let census = Census::load(&store.live_devices().unwrap(), metrics.clone());
        let devices = |kind: DeviceKind| {
            metrics
                .devices
                .with_label_values(&["c1", kind.as_str()])
                .get()
        };
        let earliest = || {
            let line =
                "yizhan_certificate_expiry_timestamp_seconds{certificate=\"device_earliest\"} ";
            let text = metrics.render();
            text.lines()
                .find_map(|l| l.strip_prefix(line))
                .map(str::to_string)
        };
        let (a, b) = (
            record("a", DeviceKind::Gate, 9_000_000),
            record("b", DeviceKind::Gate, 5_000_000),
        );
        census.provisioned(&a);
        census.provisioned(&b);
        assert_eq!(devices(DeviceKind::Gate), 2);
        assert_eq!(earliest().as_deref(), Some("5000"));
        let renewed_b = record("b", DeviceKind::Gate, 12_000_000);
        census.renewed(&b, &renewed_b);
        assert_eq!(
            earliest().as_deref(),
            Some("9000"),
            "b's old certificate is not counted"
        );
        assert_eq!(devices(DeviceKind::Gate), 2);
        census.revoked(&renewed_b);
        assert_eq!(devices(DeviceKind::Gate), 1);
        assert_eq!(earliest().as_deref(), Some("9000"));
        census.revoked(&a);
        assert_eq!(devices(DeviceKind::Gate), 0);
        assert_eq!(earliest(), None);
    }
}
