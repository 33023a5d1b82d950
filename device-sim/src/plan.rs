//! The fleet plan: which devices exist, their ids, centers, rooms and seeds.
//!
//! Pure and deterministic: the same centers, mix and seed always give the
//! same plan, so runs can be compared and credentials reused across runs.

use protocol::{is_valid_device_id, DeviceKind, ENTRANCE_ROOM};

use crate::crowd::ROOMS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How many devices of each kind one center has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMix {
    pub pianos: usize,
    pub therapy_robots: usize,
    pub gates: usize,
    pub counters: usize,
}

impl Default for DeviceMix {
    /// A center like Lianhua Yicun: 8 pianos, 2 therapy robots, 2 gym gates
    /// and 6 people counters.
    fn default() -> Self {
        DeviceMix {
            pianos: 8,
            therapy_robots: 2,
            gates: 2,
            counters: 6,
        }
    }
}

impl DeviceMix {
    /// Number of devices of `kind` per center.
    pub fn count(&self, kind: DeviceKind) -> usize {
        match kind {
            DeviceKind::Piano => self.pianos,
            DeviceKind::TherapyRobot => self.therapy_robots,
            DeviceKind::Gate => self.gates,
            DeviceKind::Counter => self.counters,
        }
    }

    /// Devices per center, all kinds together.
    pub fn per_center(&self) -> usize {
        DeviceKind::ALL.iter().map(|&k| self.count(k)).sum()
    }
}

/// One device of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub id: String,
    pub center: String,
    pub room: String,
    pub kind: DeviceKind,
    /// Its number among the center's devices of its kind, from 1.
    pub number: usize,
    /// Seed of this device's own random generator.
    pub seed: u64,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("device id `{0}` is not 1–48 ASCII letters or digits")]
    InvalidId(String),
    #[error("the plan has no devices (no centers or an empty mix)")]
    Empty,
}

/// `center01`, `center02`, … with at least two digits.
pub fn default_center_names(count: usize) -> Vec<String> {
    center_names(1, count)
}

/// `count` centers numbered from `first` (`center03`, `center04`, …), so
/// simulators of different hubs of one district name different centers.
pub fn center_names(first: usize, count: usize) -> Vec<String> {
    let width = digits(first + count.saturating_sub(1)).max(2);
    (first..first + count)
        .map(|n| format!("center{n:0width$}"))
        .collect()
}

/// Short tag of a kind inside device ids.
fn kind_tag(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Piano => "piano",
        DeviceKind::TherapyRobot => "robot",
        DeviceKind::Gate => "gate",
        DeviceKind::Counter => "counter",
    }
}

fn digits(n: usize) -> usize {
    n.max(1).ilog10() as usize + 1
}

/// Id of the `number`th (from 1) device of `kind` in the `center`th (from 1)
/// center, e.g. `c01piano01`. Widths grow with the counts so ids sort well.
pub fn device_id(
    center: usize,
    center_width: usize,
    kind: DeviceKind,
    number: usize,
    number_width: usize,
) -> String {
    format!(
        "c{center:0center_width$}{}{number:0number_width$}",
        kind_tag(kind)
    )
}

/// Room of the `number`th (from 1) device of `kind`.
pub fn room_for(kind: DeviceKind, number: usize) -> &'static str {
    match kind {
        DeviceKind::Piano => "music",
        DeviceKind::TherapyRobot => "therapy",
        DeviceKind::Gate => "gym",
        DeviceKind::Counter if number <= 1 => ENTRANCE_ROOM,
        DeviceKind::Counter => ROOMS[(number - 2) % ROOMS.len()].0,
    }
}

/// Plans every device of every center. Device seeds come from one
/// `StdRng` seeded with `seed`, in plan order.
pub fn plan_fleet(
    centers: &[String],
    mix: &DeviceMix,
    seed: u64,
) -> Result<Vec<DeviceSpec>, PlanError> {
    if centers.is_empty() || mix.per_center() == 0 {
        return Err(PlanError::Empty);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let center_width = digits(centers.len()).max(2);
    let number_width = DeviceKind::ALL
        .iter()
        .map(|&k| digits(mix.count(k)))
        .max()
        .unwrap_or(1)
        .max(2);
    let mut specs = Vec::with_capacity(centers.len() * mix.per_center());
    for (c, center) in centers.iter().enumerate() {
        for kind in DeviceKind::ALL {
            for number in 1..=mix.count(kind) {
                let id = device_id(c + 1, center_width, kind, number, number_width);
                if !is_valid_device_id(&id) {
                    return Err(PlanError::InvalidId(id));
                }
                specs.push(DeviceSpec {
                    id,
                    center: center.clone(),
                    room: room_for(kind, number).to_owned(),
                    kind,
                    number,
                    seed: rng.gen(),
                });
            }
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_names_are_zero_padded() {
        assert_eq!(
            default_center_names(3),
            ["center01", "center02", "center03"]
        );
        assert_eq!(center_names(3, 2), ["center03", "center04"]);
        assert_eq!(center_names(99, 2), ["center099", "center100"]);
        assert!(center_names(5, 0).is_empty());
        let many = default_center_names(101);
        assert_eq!(many[0], "center001");
        assert_eq!(many[100], "center101");
    }

    #[test]
    fn default_plan_has_18_devices_per_center_with_expected_ids_and_rooms() {
        let plan = plan_fleet(&default_center_names(2), &DeviceMix::default(), 1).unwrap();
        assert_eq!(plan.len(), 36);
        assert_eq!(plan[0].id, "c01piano01");
        assert_eq!(plan[0].room, "music");
        assert_eq!(plan[0].center, "center01");
        assert_eq!(plan[8].id, "c01robot01");
        assert_eq!(plan[8].room, "therapy");
        assert_eq!(plan[10].id, "c01gate01");
        assert_eq!(plan[10].room, "gym");
        assert_eq!(plan[12].id, "c01counter01");
        assert_eq!(plan[12].room, "entrance");
        assert_eq!(plan[13].room, "music");
        assert_eq!(plan[17].id, "c01counter06");
        assert_eq!(plan[17].room, "study");
        assert_eq!(plan[18].id, "c02piano01");
        assert_eq!(plan[18].center, "center02");
        let mut ids: Vec<_> = plan.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 36, "ids are unique");
        assert!(plan.iter().all(|d| is_valid_device_id(&d.id)));
    }

    #[test]
    fn widths_grow_with_counts() {
        let mix = DeviceMix {
            pianos: 120,
            therapy_robots: 0,
            gates: 0,
            counters: 0,
        };
        let plan = plan_fleet(&default_center_names(101), &mix, 7).unwrap();
        assert_eq!(plan[0].id, "c001piano001");
        assert_eq!(plan.last().unwrap().id, "c101piano120");
    }

    #[test]
    fn seeds_are_deterministic_and_differ_between_devices() {
        let centers = default_center_names(1);
        let a = plan_fleet(&centers, &DeviceMix::default(), 42).unwrap();
        let b = plan_fleet(&centers, &DeviceMix::default(), 42).unwrap();
        let c = plan_fleet(&centers, &DeviceMix::default(), 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a[0].seed, c[0].seed);
        assert_ne!(a[0].seed, a[1].seed);
    }

    #[test]
    fn empty_plans_are_refused() {
        let none = DeviceMix {
            pianos: 0,
            therapy_robots: 0,
            gates: 0,
            counters: 0,
        };
        assert_eq!(
            plan_fleet(&default_center_names(1), &none, 1),
            Err(PlanError::Empty)
        );
        assert_eq!(
            plan_fleet(&[], &DeviceMix::default(), 1),
            Err(PlanError::Empty)
        );
    }
}
