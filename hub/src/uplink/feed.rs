//! What ingest adds to the uplink outbox itself: twin changes (online,
//! offline, birth) as they happen, and each device's telemetry folded into
//! windows of `[uplink] telemetry_window_secs` on the hub's clock: one
//! entry per device and window with the message count and min/max/last of
//! each numeric field (and every message as received with
//! `raw_telemetry`). Events, bookings and visits need nothing from here:
//! the store writes their entries with them.
//!
//! Owned by the ingest thread. A window still open when the process is
//! killed is lost (telemetry was never acknowledged); a graceful stop
//! closes the open windows early (`to` is then the stop, not the window's
//! end), so a window may arrive in two parts around a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protocol::{FieldValue, Telemetry};

use crate::records::uplink::{self, DeviceRef, FieldStats, TelemetryWindow, TwinChange};
use crate::records::{Twin, UplinkEntry};
use crate::settings::UplinkSettings;
use crate::store::{Store, StoreError};

/// One device's telemetry in the window starting at `from`.
struct Window {
    device: DeviceRef,
    from: u64,
    count: u64,
    fields: BTreeMap<String, FieldStats>,
}

impl Window {
    fn add(&mut self, telemetry: &Telemetry) {
        self.count += 1;
        for (name, value) in &telemetry.fields {
            if let FieldValue::Number(number) = value {
                match self.fields.get_mut(name) {
                    Some(stats) => stats.add(*number),
                    None => {
                        self.fields.insert(name.clone(), FieldStats::new(*number));
                    }
                }
            }
        }
    }
}

pub struct Feed {
    store: Arc<Store>,
    hub: String,
    window_ms: u64,
    raw: bool,
    /// Open windows by device.
    windows: HashMap<String, Window>,
}

impl Feed {
    /// A feed for the hub `hub` (its id in message ids).
    pub fn new(store: Arc<Store>, hub: String, settings: &UplinkSettings) -> Feed {
        Feed {
            store,
            hub,
            window_ms: u64::try_from(settings.telemetry_window.as_millis()).unwrap_or(u64::MAX),
            raw: settings.raw_telemetry,
            windows: HashMap::new(),
        }
    }

    /// Devices online in the previous process (boot epoch `epoch - 1`) are
    /// offline now: its sessions ended with it. Told once, at start (a
    /// scan of the twins); returns how many.
    pub fn offline_after_restart(&self, epoch: u64, now: u64) -> Result<usize, StoreError> {
        let mut told = 0;
        for twin in self.store.twins() {
            let twin = twin?;
            if twin.online && twin.online_epoch.saturating_add(1) == epoch {
                self.twin(&twin, TwinChange::Offline, now);
                told += 1;
            }
        }
        Ok(told)
    }

    /// `twin` came online, went offline or sent its birth at `now`.
    pub fn twin(&self, twin: &Twin, change: TwinChange, now: u64) {
        self.append(&uplink::twin(&self.hub, twin, change, now));
    }

    /// An accepted telemetry message of `twin`, received at `now`.
    pub fn telemetry(&mut self, twin: &Twin, telemetry: &Telemetry, now: u64) {
        if self.raw {
            let device = DeviceRef::of(twin);
            self.append(&uplink::telemetry_raw(&self.hub, &device, telemetry, now));
        }
        let from = now - now % self.window_ms.max(1);
        let open = self.windows.get_mut(&twin.id);
        match open {
            Some(window) if window.from == from => window.add(telemetry),
            Some(_) => {
                self.close(&twin.id, None);
                self.open(twin, from, telemetry);
            }
            None => self.open(twin, from, telemetry),
        }
    }

    fn open(&mut self, twin: &Twin, from: u64, telemetry: &Telemetry) {
        let mut window = Window {
            device: DeviceRef::of(twin),
            from,
            count: 0,
            fields: BTreeMap::new(),
        };
        window.add(telemetry);
        self.windows.insert(twin.id.clone(), window);
    }

    /// Closes the windows that ended by `now`.
    pub fn tick(&mut self, now: u64) {
        let ended: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| w.from.saturating_add(self.window_ms) <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            self.close(&id, None);
        }
    }

    /// The hub stops: every open window is closed at `now`.
    pub fn finish(&mut self, now: u64) {
        let open: Vec<String> = self.windows.keys().cloned().collect();
        for id in open {
            self.close(&id, Some(now));
        }
    }

    /// Writes `device`'s window, ending at its nominal end or at `early`.
    fn close(&mut self, device: &str, early: Option<u64>) {
        let Some(window) = self.windows.remove(device) else {
            return;
        };
        let end = window.from.saturating_add(self.window_ms);
        let entry = uplink::telemetry_window(
            &self.hub,
            &TelemetryWindow {
                device: &window.device,
                from: window.from,
                to: early.map_or(end, |at| at.clamp(window.from, end)),
                count: window.count,
                fields: &window.fields,
            },
        );
        self.append(&entry);
    }

    fn append(&self, entry: &UplinkEntry) {
        // Not acknowledged to anyone, so not worth stopping ingest for: a
        // store that fails here fails the batch's fsync next.
        if let Err(error) = self.store.uplink_append(entry) {
            tracing::error!(%error, topic = %entry.topic, "writing to the uplink outbox failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::OutboxConfig;
    use serde_json::Value;

    fn feed(raw: bool) -> (Feed, Arc<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .enable_uplink(OutboxConfig::for_tests(1 << 30, &metrics))
            .unwrap();
        let store = Arc::new(store);
        let settings = crate::settings::uplink::parse(&crate::settings::UplinkConfig {
            enabled: true,
            urls: vec!["mqtt://district".into()],
            raw_telemetry: raw,
            ..crate::settings::UplinkConfig::default()
        })
        .unwrap()
        .unwrap();
        (
            Feed::new(store.clone(), "hub1".into(), &settings),
            store,
            dir,
        )
    }

    fn reading(seq: u64, temp_c: f64) -> Telemetry {
        Telemetry {
            ts: seq,
            seq,
            fields: vec![
                ("temp_c".into(), FieldValue::Number(temp_c)),
                ("mode".into(), FieldValue::Text("warm".into())),
            ],
        }
    }

    fn payloads(store: &Store) -> Vec<Value> {
        let entries = store.uplink_read(0, 100).unwrap();
        entries
            .iter()
            .map(|(_, e)| serde_json::from_slice(&e.payload).unwrap())
            .collect()
    }

    #[test]
    fn telemetry_is_folded_per_device_and_window() {
        let (mut feed, store, _dir) = feed(false);
        let robot = crate::records::twin::provisioned(protocol::DeviceKind::TherapyRobot);
        feed.telemetry(&robot, &reading(1, 40.0), 120_000);
        feed.telemetry(&robot, &reading(2, 38.5), 150_000);
        feed.telemetry(&robot, &reading(3, 41.0), 179_999);
        feed.tick(179_999);
        assert!(payloads(&store).is_empty(), "the window is still open");
        feed.telemetry(&robot, &reading(4, 39.0), 181_000);
        let sent = payloads(&store);
        assert_eq!(sent.len(), 1, "the next window closed the first");
        let window = &sent[0];
        assert_eq!(
            (window["from"].as_u64(), window["to"].as_u64()),
            (Some(120_000), Some(180_000))
        );
        assert_eq!(window["count"], 3);
        assert_eq!(window["fields"]["temp_c"]["min"], 38.5);
        assert_eq!(window["fields"]["temp_c"]["max"], 41.0);
        assert_eq!(window["fields"]["temp_c"]["last"], 41.0);
        assert!(window["fields"].get("mode").is_none(), "numbers only");
        feed.finish(200_000);
        let last = &payloads(&store)[1];
        assert_eq!(
            (last["from"].as_u64(), last["to"].as_u64()),
            (Some(180_000), Some(200_000))
        );
        assert_ne!(last["id"], window["id"]);
    }

    #[test]
    fn raw_telemetry_adds_every_message() {
        let (mut feed, store, _dir) = feed(true);
        let robot = crate::records::twin::provisioned(protocol::DeviceKind::TherapyRobot);
        feed.telemetry(&robot, &reading(1, 40.0), 1_000);
        feed.telemetry(&robot, &reading(2, 40.5), 2_000);
        feed.tick(60_000);
        let topics: Vec<String> = store
            .uplink_read(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.topic)
            .collect();
        let raw = format!("yz/v1/{}/{}/telemetry/raw", robot.center, robot.id);
        let window = format!("yz/v1/{}/{}/telemetry", robot.center, robot.id);
        assert_eq!(topics, [raw.clone(), raw, window]);
    }
}
