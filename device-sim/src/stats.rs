//! The fleet's ground truth: what every device did, summed per center, per
//! kind and overall, to compare with what the hub says it saw.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::AddAssign;

use protocol::DeviceKind;
use serde::{Deserialize, Serialize};

use crate::plan::DeviceSpec;

/// What one device (or a group of devices) did during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Telemetry messages handed to the client (one per telemetry `seq`).
    pub telemetry_sent: u64,
    /// Distinct events published at least once (one per event `seq`).
    pub events_sent: u64,
    /// Distinct events the hub acknowledged (duplicate acks not counted).
    pub events_acked: u64,
    /// Events still unacknowledged when the device stopped.
    pub events_unacked: u64,
    /// Publishes of an event after its first.
    pub resends: u64,
    /// Acks for events that were not waiting (already acked or unknown).
    pub duplicate_acks: u64,
    /// Well-formed commands received on `/tenants/D/cmd`.
    pub commands_received: u64,
    /// Commands answered `ok: false` (expired or unknown op).
    pub commands_refused: u64,
    /// Payloads on `/tenants/D/cmd` that were not a command.
    pub commands_malformed: u64,
    /// Rejections the hub reported on `/tenants/D/error`.
    pub errors_reported: u64,
    /// Successful connections (CONNACKs).
    pub connects: u64,
    /// People counted in and out, as reported in counter telemetry.
    pub people_in: u64,
    pub people_out: u64,
}

impl AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        self.telemetry_sent += o.telemetry_sent;
        self.events_sent += o.events_sent;
        self.events_acked += o.events_acked;
        self.events_unacked += o.events_unacked;
        self.resends += o.resends;
        self.duplicate_acks += o.duplicate_acks;
        self.commands_received += o.commands_received;
        self.commands_refused += o.commands_refused;
        self.commands_malformed += o.commands_malformed;
        self.errors_reported += o.errors_reported;
        self.connects += o.connects;
        self.people_in += o.people_in;
        self.people_out += o.people_out;
    }
}

/// One device's part of the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTruth {
    pub id: String,
    pub center: String,
    pub room: String,
    pub kind: DeviceKind,
    /// Whether it said goodbye (`offline` + DISCONNECT) before stopping.
    pub clean_goodbye: bool,
    #[serde(flatten)]
    pub counters: Counters,
}

impl DeviceTruth {
    pub fn new(spec: &DeviceSpec, counters: Counters, clean_goodbye: bool) -> Self {
        DeviceTruth {
            id: spec.id.clone(),
            center: spec.center.clone(),
            room: spec.room.clone(),
            kind: spec.kind,
            clean_goodbye,
            counters,
        }
    }
}

/// What the whole fleet did during one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub seed: u64,
    /// Unix milliseconds when devices started connecting and when the last
    /// one stopped.
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub devices: Vec<DeviceTruth>,
    /// Sums per center name.
    pub centers: BTreeMap<String, Counters>,
    /// Sums per device kind (`piano`, `therapy_robot`, …).
    pub kinds: BTreeMap<String, Counters>,
    pub totals: Counters,
}

impl GroundTruth {
    /// Sums `devices` per center, per kind and overall.
    pub fn new(
        seed: u64,
        started_at_ms: u64,
        finished_at_ms: u64,
        devices: Vec<DeviceTruth>,
    ) -> Self {
        let mut centers: BTreeMap<String, Counters> = BTreeMap::new();
        let mut kinds: BTreeMap<String, Counters> = BTreeMap::new();
        let mut totals = Counters::default();
        for d in &devices {
            *centers.entry(d.center.clone()).or_default() += &d.counters;
            *kinds.entry(d.kind.as_str().to_owned()).or_default() += &d.counters;
            totals += &d.counters;
        }
        GroundTruth {
            seed,
            started_at_ms,
            finished_at_ms,
            devices,
            centers,
            kinds,
            totals,
        }
    }

    /// Devices that stopped without a clean goodbye.
    pub fn unclean_devices(&self) -> impl Iterator<Item = &DeviceTruth> {
        self.devices.iter().filter(|d| !d.clean_goodbye)
    }
}

fn write_row(f: &mut fmt::Formatter<'_>, name: &str, c: &Counters) -> fmt::Result {
    writeln!(
        f,
        "{name:<14} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        c.telemetry_sent,
        c.events_sent,
        c.events_acked,
        c.events_unacked,
        c.resends,
        c.commands_received,
        c.people_in,
        c.connects
    )
}

/// A human summary: one row per center and kind, then the totals.
impl fmt::Display for GroundTruth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.finished_at_ms.saturating_sub(self.started_at_ms) as f64 / 1000.0;
        writeln!(
            f,
            "ground truth: {} devices in {} centers, {secs:.1} s, seed {}",
            self.devices.len(),
            self.centers.len(),
            self.seed
        )?;
        writeln!(
            f,
            "{:<14} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
            "",
            "telemetry",
            "events",
            "acked",
            "unacked",
            "resends",
            "commands",
            "people_in",
            "connects"
        )?;
        for (name, c) in self.centers.iter().chain(&self.kinds) {
            write_row(f, name, c)?;
        }
        write_row(f, "total", &self.totals)?;
        let unclean: Vec<&str> = self.unclean_devices().map(|d| d.id.as_str()).collect();
        if !unclean.is_empty() {
            writeln!(f, "no clean goodbye: {}", unclean.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, center: &str, kind: DeviceKind) -> DeviceSpec {
        DeviceSpec {
            id: id.into(),
            center: center.into(),
            room: "r".into(),
            kind,
            seed: 0,
        }
    }

    fn counters(telemetry: u64, events: u64, acked: u64) -> Counters {
        Counters {
            telemetry_sent: telemetry,
            events_sent: events,
            events_acked: acked,
            events_unacked: events - acked,
            ..Counters::default()
        }
    }

    #[test]
    fn totals_sum_per_center_and_kind() {
        let truth = GroundTruth::new(
            1,
            1_000,
            3_000,
            vec![
                DeviceTruth::new(
                    &spec("a", "center01", DeviceKind::Piano),
                    counters(10, 2, 2),
                    true,
                ),
                DeviceTruth::new(
                    &spec("b", "center01", DeviceKind::Gate),
                    counters(5, 3, 1),
                    true,
                ),
                DeviceTruth::new(
                    &spec("c", "center02", DeviceKind::Piano),
                    counters(7, 1, 0),
                    false,
                ),
            ],
        );
        assert_eq!(truth.centers["center01"], counters(15, 5, 3));
        assert_eq!(truth.centers["center02"], counters(7, 1, 0));
        assert_eq!(truth.kinds["piano"], counters(17, 3, 2));
        assert_eq!(truth.kinds["gate"], counters(5, 3, 1));
        assert_eq!(truth.totals, counters(22, 6, 3));
        let unclean: Vec<_> = truth.unclean_devices().map(|d| d.id.as_str()).collect();
        assert_eq!(unclean, ["c"]);
        let text = truth.to_string();
        assert!(text.contains("3 devices in 2 centers, 2.0 s"), "{text}");
        assert!(text.contains("no clean goodbye: c"), "{text}");
    }

    #[test]
    fn device_counters_are_flattened_in_json() {
        let d = DeviceTruth::new(
            &spec("a", "center01", DeviceKind::TherapyRobot),
            counters(1, 1, 1),
            true,
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["kind"], "therapy_robot");
        assert_eq!(json["telemetry_sent"], 1);
        assert_eq!(json["events_acked"], 1);
        let back: DeviceTruth = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
    }
}
