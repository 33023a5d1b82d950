//! The fleet's ground truth: what every device did, summed per center, per
//! kind and overall, and what the residents did with their bookings per
//! center and local day, to compare with what the hub says it saw.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::AddAssign;

use chrono::NaiveDate;
use protocol::{DeviceKind, ENTRANCE_ROOM};
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
    /// Piano and therapy sessions started (walk-in or unlocked).
    pub sessions: u64,
    /// Therapy sessions that ran into an overheat fault.
    pub faults_injected: u64,
    /// `stop` commands a therapy robot obeyed.
    pub stops_received: u64,
    /// Gate: credentials presented, answered `open`, answered `deny`, and
    /// given up on without an answer.
    pub access_requests: u64,
    pub access_opened: u64,
    pub access_denied: u64,
    pub access_unanswered: u64,
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
        self.sessions += o.sessions;
        self.faults_injected += o.faults_injected;
        self.stops_received += o.stops_received;
        self.access_requests += o.access_requests;
        self.access_opened += o.access_opened;
        self.access_denied += o.access_denied;
        self.access_unanswered += o.access_unanswered;
    }
}

/// What one device reported for one local day (by the `ts` it put on
/// the telemetry and events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// People counted in and out (counters).
    pub people_in: u64,
    pub people_out: u64,
    /// Passages through a gate.
    pub passages_in: u64,
    pub passages_out: u64,
}

impl AddAssign<&DayCounts> for DayCounts {
    fn add_assign(&mut self, o: &DayCounts) {
        self.people_in += o.people_in;
        self.people_out += o.people_out;
        self.passages_in += o.passages_in;
        self.passages_out += o.passages_out;
    }
}

/// One center's day: visits through the entrance, gym passages, and
/// people counted at each room's door.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenterDay {
    /// People the entrance counter counted in: the center's visits.
    pub visits: u64,
    /// People the entrance counter counted out.
    pub left: u64,
    pub gym_in: u64,
    pub gym_out: u64,
    /// People counted into each metered room.
    pub rooms: BTreeMap<String, u64>,
}

/// What a center's residents did with their bookings of one local day
/// (the day their slots start), as they saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingDay {
    /// Places booked (the hub answered 201).
    pub booked: u64,
    /// Attempts at a full slot (409, a waitlist place offered).
    pub full: u64,
    /// Offers taken: joined the waitlist.
    pub waitlisted: u64,
    /// Waitlisted residents who found they had a place when they looked.
    pub promoted: u64,
    /// Waitlisted residents without a place by then, who left the list.
    pub left_waitlist: u64,
    /// Places cancelled 2 h or more before the start, and 15 to 45 min
    /// before it (late).
    pub cancelled: u64,
    pub late_cancels: u64,
    /// Residents checked in: at their piano or robot (its `session_start`
    /// named the booking) or at the kiosk (the check-in API said yes).
    pub checked_in: u64,
    /// Booked places whose slot started without their resident.
    pub no_shows: u64,
    /// Attempts a rule refused (422), and those for a child outside the
    /// childcare's ages (the one rule the plan breaks on purpose).
    pub refused: u64,
    pub ineligible: u64,
    /// Answers and waits the plan did not expect (logged when they happen).
    pub unexpected: u64,
}

impl AddAssign<&BookingDay> for BookingDay {
    fn add_assign(&mut self, o: &BookingDay) {
        self.booked += o.booked;
        self.full += o.full;
        self.waitlisted += o.waitlisted;
        self.promoted += o.promoted;
        self.left_waitlist += o.left_waitlist;
        self.cancelled += o.cancelled;
        self.late_cancels += o.late_cancels;
        self.checked_in += o.checked_in;
        self.no_shows += o.no_shows;
        self.refused += o.refused;
        self.ineligible += o.ineligible;
        self.unexpected += o.unexpected;
    }
}

/// Residents' bookings per center, per local day.
pub type BookingDays = BTreeMap<String, BTreeMap<NaiveDate, BookingDay>>;

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
    /// What it reported per local day (only days it counted something).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub daily: BTreeMap<NaiveDate, DayCounts>,
}

impl DeviceTruth {
    pub fn new(
        spec: &DeviceSpec,
        counters: Counters,
        daily: BTreeMap<NaiveDate, DayCounts>,
        clean_goodbye: bool,
    ) -> Self {
        DeviceTruth {
            id: spec.id.clone(),
            center: spec.center.clone(),
            room: spec.room.clone(),
            kind: spec.kind,
            clean_goodbye,
            counters,
            daily,
        }
    }
}

/// When a run happened, in real and in simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunSpan {
    pub seed: u64,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Unix milliseconds when devices started connecting and when the last
    /// one stopped.
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// The same instants on the simulated clock.
    pub sim_started_at_ms: u64,
    pub sim_finished_at_ms: u64,
}

/// What the whole fleet did during one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    #[serde(flatten)]
    pub span: RunSpan,
    pub devices: Vec<DeviceTruth>,
    /// Sums per center name.
    pub centers: BTreeMap<String, Counters>,
    /// Sums per device kind (`piano`, `therapy_robot`, …).
    pub kinds: BTreeMap<String, Counters>,
    pub totals: Counters,
    /// Per center, per local day (in the centers' time zone).
    pub days: BTreeMap<String, BTreeMap<NaiveDate, CenterDay>>,
    /// Residents' bookings per center and local day (none when the hub's
    /// schedule clock could not follow the simulated one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bookings: BookingDays,
}

impl GroundTruth {
    /// Sums `devices` per center, per kind, per center and day, and
    /// overall; `bookings` are the residents'.
    pub fn new(span: RunSpan, devices: Vec<DeviceTruth>, bookings: BookingDays) -> Self {
        let mut centers: BTreeMap<String, Counters> = BTreeMap::new();
        let mut kinds: BTreeMap<String, Counters> = BTreeMap::new();
        let mut days: BTreeMap<String, BTreeMap<NaiveDate, CenterDay>> = BTreeMap::new();
        let mut totals = Counters::default();
        for d in &devices {
            *centers.entry(d.center.clone()).or_default() += &d.counters;
            *kinds.entry(d.kind.as_str().to_owned()).or_default() += &d.counters;
            totals += &d.counters;
            let center_days = days.entry(d.center.clone()).or_default();
            for (&date, counts) in &d.daily {
                center_days.entry(date).or_default().add_device(d, counts);
            }
        }
        GroundTruth {
            span,
            devices,
            centers,
            kinds,
            totals,
            days,
            bookings,
        }
    }

    /// Every center's bookings over the run's days.
    pub fn booking_totals(&self) -> BTreeMap<String, BookingDay> {
        self.bookings
            .iter()
            .map(|(center, days)| {
                let mut sum = BookingDay::default();
                days.values().for_each(|d| sum += d);
                (center.clone(), sum)
            })
            .collect()
    }

    /// Devices that stopped without a clean goodbye.
    pub fn unclean_devices(&self) -> impl Iterator<Item = &DeviceTruth> {
        self.devices.iter().filter(|d| !d.clean_goodbye)
    }
}

impl CenterDay {
    fn add_device(&mut self, device: &DeviceTruth, counts: &DayCounts) {
        match device.kind {
            DeviceKind::Counter if device.room == ENTRANCE_ROOM => {
                self.visits += counts.people_in;
                self.left += counts.people_out;
            }
            DeviceKind::Counter => {
                *self.rooms.entry(device.room.clone()).or_default() += counts.people_in;
            }
            DeviceKind::Gate => {
                self.gym_in += counts.passages_in;
                self.gym_out += counts.passages_out;
            }
            DeviceKind::Piano | DeviceKind::TherapyRobot => {}
        }
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

/// The residents' bookings, a row per center and day.
fn write_bookings(f: &mut fmt::Formatter<'_>, bookings: &BookingDays) -> fmt::Result {
    if bookings.is_empty() {
        return Ok(());
    }
    writeln!(
        f,
        "{:<14} {:<10} {:>7} {:>5} {:>9} {:>8} {:>6} {:>5} {:>10} {:>7} {:>7}",
        "bookings",
        "day",
        "booked",
        "full",
        "waitlist",
        "promoted",
        "cancel",
        "late",
        "checked_in",
        "no_show",
        "refused"
    )?;
    for (center, days) in bookings {
        for (day, b) in days {
            writeln!(
                f,
                "{center:<14} {day:<10} {:>7} {:>5} {:>9} {:>8} {:>6} {:>5} {:>10} {:>7} {:>7}",
                b.booked,
                b.full,
                b.waitlisted,
                b.promoted,
                b.cancelled,
                b.late_cancels,
                b.checked_in,
                b.no_shows,
                b.refused
            )?;
        }
    }
    Ok(())
}

/// A human summary: one row per center and kind, the totals, then each
/// center's days and their bookings.
impl fmt::Display for GroundTruth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let span = &self.span;
        let real_secs = span.finished_at_ms.saturating_sub(span.started_at_ms) as f64 / 1000.0;
        let sim_hours = span
            .sim_finished_at_ms
            .saturating_sub(span.sim_started_at_ms) as f64
            / 3_600_000.0;
        writeln!(
            f,
            "ground truth: {} devices in {} centers, {real_secs:.1} s real = {sim_hours:.1} h simulated (speed {}), seed {}",
            self.devices.len(),
            self.centers.len(),
            span.speed,
            span.seed
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
        let t = &self.totals;
        writeln!(
            f,
            "sessions {}, overheat faults {}, stops {}; gate requests {} (open {}, deny {}, unanswered {})",
            t.sessions,
            t.faults_injected,
            t.stops_received,
            t.access_requests,
            t.access_opened,
            t.access_denied,
            t.access_unanswered
        )?;
        writeln!(
            f,
            "{:<14} {:<10} {:>8} {:>8} {:>8}",
            "center", "day", "visits", "gym_in", "gym_out"
        )?;
        for (center, days) in &self.days {
            for (day, d) in days {
                writeln!(
                    f,
                    "{center:<14} {day:<10} {:>8} {:>8} {:>8}",
                    d.visits, d.gym_in, d.gym_out
                )?;
            }
        }
        write_bookings(f, &self.bookings)?;
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
            number: 1,
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

    fn span() -> RunSpan {
        RunSpan {
            seed: 1,
            speed: 600.0,
            started_at_ms: 1_000,
            finished_at_ms: 3_000,
            sim_started_at_ms: 0,
            sim_finished_at_ms: 1_200_000,
        }
    }

    fn device(id: &str, center: &str, kind: DeviceKind, c: Counters, clean: bool) -> DeviceTruth {
        DeviceTruth::new(&spec(id, center, kind), c, BTreeMap::new(), clean)
    }

    #[test]
    fn totals_sum_per_center_and_kind() {
        let truth = GroundTruth::new(
            span(),
            vec![
                device("a", "center01", DeviceKind::Piano, counters(10, 2, 2), true),
                device("b", "center01", DeviceKind::Gate, counters(5, 3, 1), true),
                device("c", "center02", DeviceKind::Piano, counters(7, 1, 0), false),
            ],
            BTreeMap::new(),
        );
        assert_eq!(truth.centers["center01"], counters(15, 5, 3));
        assert_eq!(truth.centers["center02"], counters(7, 1, 0));
        assert_eq!(truth.kinds["piano"], counters(17, 3, 2));
        assert_eq!(truth.kinds["gate"], counters(5, 3, 1));
        assert_eq!(truth.totals, counters(22, 6, 3));
        let unclean: Vec<_> = truth.unclean_devices().map(|d| d.id.as_str()).collect();
        assert_eq!(unclean, ["c"]);
        let text = truth.to_string();
        assert!(
            text.contains("3 devices in 2 centers, 2.0 s real = 0.3 h simulated"),
            "{text}"
        );
        assert!(text.contains("no clean goodbye: c"), "{text}");
    }

    #[test]
    fn days_take_visits_from_the_entrance_and_passages_from_gates() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let counts = DayCounts {
            people_in: 5,
            people_out: 4,
            passages_in: 2,
            passages_out: 1,
        };
        let booked = BookingDay {
            booked: 12,
            full: 2,
            waitlisted: 1,
            promoted: 1,
            checked_in: 9,
            no_shows: 1,
            ..BookingDay::default()
        };
        let with_day = |id: &str, kind, room: &str| {
            let mut s = spec(id, "center01", kind);
            s.room = room.into();
            DeviceTruth::new(
                &s,
                Counters::default(),
                BTreeMap::from([(day, counts)]),
                true,
            )
        };
        let truth = GroundTruth::new(
            span(),
            vec![
                with_day("e", DeviceKind::Counter, ENTRANCE_ROOM),
                with_day("r", DeviceKind::Counter, "yoga"),
                with_day("g", DeviceKind::Gate, "gym"),
            ],
            BTreeMap::from([(
                "center01".to_string(),
                BTreeMap::from([(day, booked), (day.succ_opt().unwrap(), booked)]),
            )]),
        );
        let d = &truth.days["center01"][&day];
        assert_eq!((d.visits, d.left, d.gym_in, d.gym_out), (5, 4, 2, 1));
        assert_eq!(d.rooms["yoga"], 5);
        let text = truth.to_string();
        assert!(text.contains("center01       2026-11-28        5        2        1"));
        assert!(
            text.contains("center01       2026-11-28      12     2         1        1      0     0          9       1       0"),
            "{text}"
        );
        let totals = &truth.booking_totals()["center01"];
        assert_eq!(
            (totals.booked, totals.checked_in, totals.no_shows),
            (24, 18, 2)
        );
    }

    #[test]
    fn device_counters_are_flattened_in_json() {
        let d = device(
            "a",
            "center01",
            DeviceKind::TherapyRobot,
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
