//! What the devices are doing now, as gauges owned by the ingest thread:
//! interlock alarms not yet acknowledged (`yizhan_alarms_active`), pianos
//! in a session (`yizhan_pianos_in_use`), and the hottest online therapy
//! robot of each room (`yizhan_therapy_temperature_max_celsius`).
//!
//! Ingest calls `observe` after anything that may change a twin or its
//! presence (a message, a control, a watchdog trip, going offline). The
//! device's facet — alarm raised, session open, temperature while online —
//! is compared with the one seen last, and only a change moves a gauge, so
//! a scrape reads memory and a message costs one map lookup (gates and
//! counters none). Counted from the stored twins once at start, when every
//! device is offline (no temperatures until they report).

use std::collections::{BTreeMap, HashMap, HashSet};

use protocol::{DeviceKind, FieldValue};

use crate::metrics::Metrics;
use crate::records::Twin;
use crate::store::{Store, StoreError};

/// The telemetry field holding a therapy robot's temperature.
const TEMPERATURE_FIELD: &str = "temp_c";

/// What the gauges take from one device.
#[derive(Debug, Clone, Default, PartialEq)]
struct Facet {
    alarm: bool,
    in_session: bool,
    /// The last temperature of an online therapy robot.
    temp_c: Option<f64>,
}

impl Facet {
    fn of(twin: &Twin, online: bool) -> Facet {
        let temp_c = match twin.fields.get(TEMPERATURE_FIELD) {
            Some(last) if online && twin.kind == DeviceKind::TherapyRobot => match last.value {
                FieldValue::Number(temp_c) => Some(temp_c),
                _ => None,
            },
            _ => None,
        };
        Facet {
            alarm: twin.alarm.is_some(),
            in_session: twin.kind == DeviceKind::Piano && twin.session_since.is_some(),
            temp_c,
        }
    }
}

/// A device's facet as last seen, and the labels it was counted under.
#[derive(Debug)]
struct Seen {
    facet: Facet,
    center: String,
    room: String,
    kind: DeviceKind,
}

pub struct Activity {
    metrics: Metrics,
    /// Devices with a facet other than the default.
    seen: HashMap<String, Seen>,
    /// `(center, room)` → online robot → its last temperature.
    temperatures: HashMap<(String, String), BTreeMap<String, f64>>,
}

impl Activity {
    /// Counts the stored twins of the devices not `revoked`; each gauge
    /// family gets a series for every center and kind it can count.
    pub fn load(
        store: &Store,
        metrics: Metrics,
        revoked: &HashSet<String>,
    ) -> Result<Activity, StoreError> {
        let mut activity = Activity {
            metrics,
            seen: HashMap::new(),
            temperatures: HashMap::new(),
        };
        for twin in store.twins() {
            let twin = twin?;
            if !revoked.contains(&twin.id) {
                activity.show_zero(&twin);
                activity.observe(&twin, false);
            }
        }
        Ok(activity)
    }

    /// `twin` may have changed, or its presence (`online`).
    pub fn observe(&mut self, twin: &Twin, online: bool) {
        if !matches!(twin.kind, DeviceKind::Piano | DeviceKind::TherapyRobot) {
            return;
        }
        let facet = Facet::of(twin, online);
        let unchanged = match self.seen.get(&twin.id) {
            Some(seen) => seen.facet == facet,
            None => facet == Facet::default(),
        };
        if unchanged {
            return;
        }
        self.forget(&twin.id);
        self.count(&twin.id, &facet, (&twin.center, &twin.room, twin.kind), 1);
        if facet != Facet::default() {
            let seen = Seen {
                facet,
                center: twin.center.clone(),
                room: twin.room.clone(),
                kind: twin.kind,
            };
            self.seen.insert(twin.id.clone(), seen);
        }
    }

    /// The device is gone (revoked, or provisioned anew): what it counted
    /// is taken back.
    pub fn forget(&mut self, device: &str) {
        if let Some(seen) = self.seen.remove(device) {
            let labels = (seen.center.as_str(), seen.room.as_str(), seen.kind);
            self.count(device, &seen.facet, labels, -1);
        }
    }

    /// Adds (`by` 1) or takes back (-1) what `facet` counts.
    fn count(&mut self, device: &str, facet: &Facet, labels: (&str, &str, DeviceKind), by: i64) {
        let (center, room, kind) = labels;
        if facet.alarm {
            self.metrics
                .alarms_active
                .with_label_values(&[center, kind.as_str()])
                .add(by);
        }
        if facet.in_session {
            self.metrics
                .pianos_in_use
                .with_label_values(&[center])
                .add(by);
        }
        if let Some(temp_c) = facet.temp_c {
            let key = (center.to_string(), room.to_string());
            let robots = self.temperatures.entry(key).or_default();
            if by > 0 {
                robots.insert(device.to_string(), temp_c);
            } else {
                robots.remove(device);
            }
            self.show_temperature(center, room);
        }
    }

    fn show_temperature(&mut self, center: &str, room: &str) {
        let key = (center.to_string(), room.to_string());
        let gauge = &self.metrics.therapy_temperature_max;
        let hottest = self
            .temperatures
            .get(&key)
            .and_then(|robots| robots.values().copied().reduce(f64::max));
        match hottest {
            Some(temp_c) => gauge.with_label_values(&[center, room]).set(temp_c),
            None => {
                self.temperatures.remove(&key);
                let _ = gauge.remove_label_values(&[center, room]);
            }
        }
    }

    /// A device provisioned (anew): what an earlier one under its id
    /// counted is taken back, and its center's series exist from now on.
    pub fn provisioned(&mut self, twin: &Twin) {
        self.forget(&twin.id);
        self.show_zero(twin);
    }

    /// A zero for the center's alarms (robots) or pianos in use (pianos),
    /// so the series exist before anything happens.
    fn show_zero(&self, twin: &Twin) {
        match twin.kind {
            DeviceKind::TherapyRobot => {
                self.metrics
                    .alarms_active
                    .with_label_values(&[&twin.center, twin.kind.as_str()]);
            }
            DeviceKind::Piano => {
                self.metrics
                    .pianos_in_use
                    .with_label_values(&[&twin.center]);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Alarm, LastValue, TripReason};

    fn twin(id: &str, kind: DeviceKind, room: &str) -> Twin {
        Twin::provisioned(&crate::records::device::record(id, "c1", room, kind))
    }

    fn reading(twin: &mut Twin, temp_c: f64) {
        let last = LastValue {
            value: FieldValue::Number(temp_c),
            ts: 0,
        };
        twin.fields.insert(TEMPERATURE_FIELD.into(), last);
    }

    #[test]
    fn the_gauges_follow_alarms_sessions_and_online_robots_temperatures() {
        let metrics = Metrics::new();
        let mut activity = Activity {
            metrics: metrics.clone(),
            seen: HashMap::new(),
            temperatures: HashMap::new(),
        };
        let hottest = || {
            metrics
                .render()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "yizhan_therapy_temperature_max_celsius{center=\"c1\",room=\"therapy\"} ",
                    )
                })
                .map(str::to_string)
        };
        let alarms = || {
            metrics
                .alarms_active
                .with_label_values(&["c1", "therapy_robot"])
                .get()
        };
        let (mut r1, mut r2) = (
            twin("r1", DeviceKind::TherapyRobot, "therapy"),
            twin("r2", DeviceKind::TherapyRobot, "therapy"),
        );
        reading(&mut r1, 41.5);
        reading(&mut r2, 44.0);
        activity.observe(&r1, false);
        assert_eq!(hottest(), None, "offline robots show nothing");
        activity.observe(&r1, true);
        activity.observe(&r2, true);
        assert_eq!(hottest().as_deref(), Some("44"));
        r2.alarm = Some(Alarm {
            reason: TripReason::OverTemperature,
            at: 0,
            temp_c: Some(44.0),
            command: "c".into(),
        });
        activity.observe(&r2, true);
        activity.observe(&r2, true);
        assert_eq!(alarms(), 1);
        activity.observe(&r2, false);
        assert_eq!((hottest().as_deref(), alarms()), (Some("41.5"), 1));
        r2.alarm = None;
        activity.observe(&r2, false);
        assert_eq!(alarms(), 0, "acknowledged");
        activity.forget("r1");
        assert_eq!(hottest(), None, "the room's last robot revoked");

        let mut piano = twin("p1", DeviceKind::Piano, "music");
        piano.session_since = Some(5);
        activity.observe(&piano, true);
        let in_use = || metrics.pianos_in_use.with_label_values(&["c1"]).get();
        assert_eq!(in_use(), 1);
        activity.provisioned(&twin("p1", DeviceKind::Piano, "music"));
        assert_eq!(in_use(), 0, "provisioned anew");
    }
}
