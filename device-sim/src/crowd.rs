//! The people of one center over a simulated span: who arrives when, which
//! room they sit in, when they leave, and who uses the 24-hour gym.
//!
//! Grounded in the field (`BRIEF.md`): about 64,000 visits a month at a busy
//! center, more on weekends; weekend mornings surge from about 10:30 and the
//! rooms are nearly full within the hour; the gym is open around the clock
//! with about 47 uses a day. Pure and deterministic: the same seed, span and
//! profile give the same crowd, so counters and gates read their doors from
//! it and the ground truth is exact.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Days, NaiveDate, NaiveTime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::simtime::Calendar;

const MINUTE_MS: u64 = 60_000;
/// Arrivals are drawn per slot of this length.
const SLOT_MS: u64 = 15 * MINUTE_MS;
/// A weekday's share of an average day's visits; weekends get the rest
/// (5 × 0.86 + 2 × 1.35 = 7).
const WEEKDAY_FACTOR: f64 = 0.86;
const WEEKEND_FACTOR: f64 = 1.35;
/// Share of visitors who sit in a room (the others use the lobby, the
/// service desk, the canteen…).
const P_ROOM: f64 = 0.6;
/// Nobody comes in during the last 20 minutes before closing.
const LAST_ENTRY_MS: u64 = 20 * MINUTE_MS;

/// A room of the center and its seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    pub seats: u32,
}

/// The rooms of a default center, with their seats. Counters watch the
/// first few (see `plan::room_for`); the others are visited unmetered.
pub const ROOMS: [(&str, u32); 9] = [
    ("music", 12),
    ("yoga", 20),
    ("dance", 25),
    ("crafts", 16),
    ("study", 40),
    ("childcare", 10),
    ("reading", 30),
    ("pingpong", 16),
    ("canteen", 60),
];

/// People the 24-hour gym holds at once.
pub const GYM_CAPACITY: u32 = 40;

/// How busy a center is.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Visits through the entrance in an average 30-day month.
    pub visits_per_month: f64,
    /// Uses of the 24-hour gym per day.
    pub gym_visits_per_day: f64,
    /// Distinct gym members (residents with a gate credential).
    pub gym_members: u32,
    pub opens: NaiveTime,
    pub closes: NaiveTime,
    pub rooms: Vec<Room>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            visits_per_month: 64_000.0,
            gym_visits_per_day: 47.0,
            gym_members: 300,
            // invariant: literal times are valid.
            opens: NaiveTime::from_hms_opt(8, 30, 0).expect("time"),
            closes: NaiveTime::from_hms_opt(21, 30, 0).expect("time"),
            rooms: ROOMS
                .iter()
                .map(|&(name, seats)| Room {
                    name: name.to_owned(),
                    seats,
                })
                .collect(),
        }
    }
}

/// When people went in and out through one door, sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DoorLog {
    pub ins: Vec<u64>,
    pub outs: Vec<u64>,
}

impl DoorLog {
    /// People in and out during `[from, to)`.
    pub fn flow(&self, from: u64, to: u64) -> (u64, u64) {
        (
            count_in(&self.ins, from, to),
            count_in(&self.outs, from, to),
        )
    }

    fn sort(&mut self) {
        self.ins.sort_unstable();
        self.outs.sort_unstable();
    }
}

fn count_in(sorted: &[u64], from: u64, to: u64) -> u64 {
    (sorted.partition_point(|&t| t < to) - sorted.partition_point(|&t| t < from)) as u64
}

/// One use of the gym.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GymVisit {
    pub arrive_ms: u64,
    pub leave_ms: u64,
    /// Index of the member (see [`member_credential`]).
    pub member: u32,
}

/// A center's crowd on one local day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Crowd {
    pub entrance: DoorLog,
    pub rooms: BTreeMap<String, DoorLog>,
    /// Sorted by arrival.
    pub gym: Vec<GymVisit>,
}

impl Crowd {
    /// The crowd of local `day`: everyone arriving that day, except those
    /// arriving before `not_before` (the simulation's start: nobody is in
    /// the building before it). Departures may fall on the next day (the
    /// gym's).
    pub fn day(
        seed: u64,
        day: NaiveDate,
        not_before: u64,
        calendar: &Calendar,
        profile: &Profile,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(
            seed ^ u64::from(day.num_days_from_ce().unsigned_abs()).rotate_left(32),
        );
        let mut crowd = Crowd::default();
        crowd.add_center_day(&mut rng, calendar, profile, day, not_before);
        crowd.add_gym_day(&mut rng, calendar, profile, day, not_before);
        crowd.entrance.sort();
        crowd.rooms.values_mut().for_each(DoorLog::sort);
        crowd.gym.sort_by_key(|v| v.arrive_ms);
        crowd
    }

    /// The opening hours of `day`: visitors arrive in 15-minute slots
    /// weighted by the day's curve, stay 20 min to 3 h, and 60% of them
    /// sit in a room that has a free seat when they come.
    fn add_center_day(
        &mut self,
        rng: &mut StdRng,
        calendar: &Calendar,
        profile: &Profile,
        day: NaiveDate,
        not_before: u64,
    ) {
        let opens = calendar.at(day, profile.opens);
        let closes = calendar.at(day, profile.closes);
        let weekend = calendar.is_weekend(day);
        let factor = if weekend {
            WEEKEND_FACTOR
        } else {
            WEEKDAY_FACTOR
        };
        let expected = profile.visits_per_month / 30.0 * factor * rng.gen_range(0.9..1.1);
        let slots: Vec<u64> = (opens..closes).step_by(SLOT_MS as usize).collect();
        let weights: Vec<f64> = slots
            .iter()
            .map(|&s| visit_weight(calendar, s, weekend))
            .collect();
        let total_weight: f64 = weights.iter().sum();
        let mut seats = RoomSeats::new(&profile.rooms);
        for (&slot, weight) in slots.iter().zip(weights) {
            let arrivals = stochastic_round(rng, expected * weight / total_weight);
            let mut times: Vec<u64> = (0..arrivals)
                .map(|_| slot + rng.gen_range(0..SLOT_MS))
                .filter(|&t| t < closes - LAST_ENTRY_MS)
                .collect();
            times.sort_unstable();
            for arrive in times {
                let leave = (arrive + rng.gen_range(20..180) * MINUTE_MS).min(closes - MINUTE_MS);
                let room = (rng.gen_bool(P_ROOM) && leave > arrive + 10 * MINUTE_MS)
                    .then(|| seats.take(rng, arrive, leave))
                    .flatten();
                if arrive < not_before {
                    continue;
                }
                self.entrance.ins.push(arrive);
                self.entrance.outs.push(leave);
                if let Some(index) = room {
                    let log = self
                        .rooms
                        .entry(profile.rooms[index].name.clone())
                        .or_default();
                    log.ins.push(arrive + MINUTE_MS);
                    log.outs.push(leave - MINUTE_MS);
                }
            }
        }
    }

    /// The gym's day: uses around the clock, busiest early morning and
    /// evening, 30 to 90 minutes each.
    fn add_gym_day(
        &mut self,
        rng: &mut StdRng,
        calendar: &Calendar,
        profile: &Profile,
        day: NaiveDate,
        not_before: u64,
    ) {
        let midnight = calendar.midnight(day);
        let hours: Vec<f64> = (0..24).map(gym_weight).collect();
        let total_weight: f64 = hours.iter().sum();
        for (hour, weight) in hours.iter().enumerate() {
            let start = midnight + hour as u64 * 60 * MINUTE_MS;
            let uses = stochastic_round(rng, profile.gym_visits_per_day * weight / total_weight);
            for _ in 0..uses {
                let arrive = start + rng.gen_range(0..60 * MINUTE_MS);
                let leave = arrive + rng.gen_range(30..90) * MINUTE_MS;
                let member = rng.gen_range(0..profile.gym_members.max(1));
                if arrive >= not_before {
                    self.gym.push(GymVisit {
                        arrive_ms: arrive,
                        leave_ms: leave,
                        member,
                    });
                }
            }
        }
    }
}

/// A center's crowd day by day, made when first asked for and forgotten
/// once the devices moved on. Shared by the center's devices.
#[derive(Debug)]
pub struct CenterCrowd {
    seed: u64,
    not_before: u64,
    pub calendar: Calendar,
    pub profile: Profile,
    days: Mutex<BTreeMap<NaiveDate, Arc<Crowd>>>,
}

/// Days kept before the one asked for (the gym's visitors leave after
/// midnight, and devices lag each other by a few seconds).
const DAYS_KEPT: u64 = 2;

impl CenterCrowd {
    pub fn new(seed: u64, not_before: u64, calendar: Calendar, profile: Profile) -> Self {
        CenterCrowd {
            seed,
            not_before,
            calendar,
            profile,
            days: Mutex::new(BTreeMap::new()),
        }
    }

    /// The crowd of local `day`.
    pub fn day(&self, day: NaiveDate) -> Arc<Crowd> {
        // invariant: no code panics while holding the lock.
        let mut days = self.days.lock().expect("crowd lock");
        if let Some(oldest) = day.checked_sub_days(Days::new(DAYS_KEPT)) {
            days.retain(|&d, _| d >= oldest);
        }
        days.entry(day)
            .or_insert_with(|| {
                Arc::new(Crowd::day(
                    self.seed,
                    day,
                    self.not_before,
                    &self.calendar,
                    &self.profile,
                ))
            })
            .clone()
    }

    /// Whether the center is open at `ms`.
    pub fn is_open(&self, ms: u64) -> bool {
        let time = self.calendar.local(ms).time();
        (self.profile.opens..self.profile.closes).contains(&time)
    }
}

/// Free seats over time: each room's departures in a min-heap.
struct RoomSeats<'a> {
    rooms: &'a [Room],
    leaving: Vec<BinaryHeap<Reverse<u64>>>,
}

impl<'a> RoomSeats<'a> {
    fn new(rooms: &'a [Room]) -> Self {
        RoomSeats {
            rooms,
            leaving: rooms.iter().map(|_| BinaryHeap::new()).collect(),
        }
    }

    /// Seats someone arriving at `at` until `until` in a random room with a
    /// free seat; `None` if every room is full.
    fn take(&mut self, rng: &mut StdRng, at: u64, until: u64) -> Option<usize> {
        let free: Vec<usize> = (0..self.rooms.len())
            .filter(|&i| {
                let heap = &mut self.leaving[i];
                while heap.peek().is_some_and(|Reverse(t)| *t <= at) {
                    heap.pop();
                }
                (heap.len() as u32) < self.rooms[i].seats
            })
            .collect();
        if free.is_empty() {
            return None;
        }
        let index = free[rng.gen_range(0..free.len())];
        self.leaving[index].push(Reverse(until - MINUTE_MS));
        Some(index)
    }
}

/// Relative arrival rate at `slot` (a slot's start, in ms). Weekdays:
/// morning and afternoon activities, a lunch dip, an evening wave.
/// Weekends: a quiet early morning, then the surge from 10:30 that fills
/// the rooms within the hour.
fn visit_weight(calendar: &Calendar, slot: u64, weekend: bool) -> f64 {
    let local = calendar.local(slot).time();
    let minutes = local.signed_duration_since(NaiveTime::MIN).num_minutes();
    let hour = minutes as f64 / 60.0;
    if weekend {
        match hour {
            h if h < 10.5 => 0.5,
            h if h < 11.5 => 5.0,
            h if h < 13.0 => 1.2,
            h if h < 17.0 => 1.0,
            _ => 0.6,
        }
    } else {
        match hour {
            h if h < 12.0 => 1.0,
            h if h < 14.0 => 0.5,
            h if h < 17.5 => 1.0,
            h if h < 19.0 => 0.6,
            _ => 0.9,
        }
    }
}

/// Relative gym use in `hour` of the day.
fn gym_weight(hour: u32) -> f64 {
    match hour {
        0..=5 => 0.2,
        6..=8 => 2.0,
        9..=16 => 0.8,
        17..=21 => 2.5,
        _ => 0.6,
    }
}

/// `x` rounded down or up at random so that the mean is `x`.
fn stochastic_round(rng: &mut StdRng, x: f64) -> u64 {
    let floor = x.floor();
    floor as u64 + u64::from(rng.gen_bool((x - floor).clamp(0.0, 1.0)))
}

/// The gate credential of gym member `member` of `center` (what their QR
/// code carries). Derived from the seed so the same run registers and
/// presents the same credentials.
pub fn member_credential(seed: u64, center: &str, member: u32) -> String {
    let mut rng = StdRng::seed_from_u64(seed ^ fnv1a(center.as_bytes()) ^ u64::from(member));
    format!("qr-{:016x}", rng.gen::<u64>())
}

/// The resident id of gym member `member` of `center`.
pub fn member_id(center: &str, member: u32) -> String {
    format!("{center}m{member:05}")
}

/// FNV-1a: a stable hash of a name, to mix into seeds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

    /// 30 days from Monday 2026-11-02 (4 full weeks + 2 weekdays).
    fn month() -> (Calendar, u64, Vec<Crowd>) {
        let cal = Calendar::default();
        let first = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        let days = (0..30)
            .map(|n| Crowd::day(7, first + Days::new(n), 0, &cal, &Profile::default()))
            .collect();
        (cal, cal.midnight(first), days)
    }

    /// People in `room` at `at`.
    fn occupancy(log: &DoorLog, at: u64) -> u64 {
        let (ins, outs) = log.flow(0, at);
        ins - outs
    }

    #[test]
    fn a_month_totals_about_64000_visits() {
        let (_, _, days) = month();
        let visits: usize = days.iter().map(|d| d.entrance.ins.len()).sum();
        assert!((60_000..68_000).contains(&visits), "{visits}");
        let gym: usize = days.iter().map(|d| d.gym.len()).sum();
        assert!((1_200..1_620).contains(&gym), "{gym}");
    }

    #[test]
    fn weekend_rooms_are_nearly_full_within_an_hour_of_the_surge() {
        let (cal, _, days) = month();
        let saturday = NaiveDate::from_ymd_opt(2026, 11, 7).unwrap();
        let crowd = &days[5];
        let at = |h, m| cal.at(saturday, NaiveTime::from_hms_opt(h, m, 0).unwrap());
        let rooms = Profile::default().rooms;
        let seats: u32 = rooms.iter().map(|r| r.seats).sum();
        let seated = |at| -> u64 {
            rooms
                .iter()
                .map(|r| occupancy(&crowd.rooms[&r.name], at))
                .sum()
        };
        let before = seated(at(10, 15)) as f64 / f64::from(seats);
        assert!(before < 0.7, "rooms at 10:15: {before}");
        for room in &rooms {
            let after = occupancy(&crowd.rooms[&room.name], at(11, 30));
            let share = after as f64 / f64::from(room.seats);
            assert!(share >= 0.9, "{} at 11:30: {share}", room.name);
        }
    }

    #[test]
    fn rooms_never_hold_more_than_their_seats_and_empty_by_closing() {
        let (cal, from, days) = month();
        let profile = Profile::default();
        for (n, crowd) in days.iter().enumerate() {
            let closing = cal.at(cal.day(from + n as u64 * DAY_MS), profile.closes);
            for room in &profile.rooms {
                let log = &crowd.rooms[&room.name];
                for &t in &log.ins {
                    assert!(
                        occupancy(log, t + 1) <= u64::from(room.seats),
                        "{}",
                        room.name
                    );
                }
                assert_eq!(occupancy(log, closing), 0);
            }
            assert_eq!(occupancy(&crowd.entrance, closing), 0);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_day_and_the_start_cuts_arrivals() {
        let cal = Calendar::default();
        let day = NaiveDate::from_ymd_opt(2026, 11, 7).unwrap();
        let p = Profile::default();
        let a = Crowd::day(1, day, 0, &cal, &p);
        assert_eq!(a, Crowd::day(1, day, 0, &cal, &p));
        assert_ne!(a, Crowd::day(2, day, 0, &cal, &p));
        assert_ne!(a, Crowd::day(1, day.succ_opt().unwrap(), 0, &cal, &p));
        let noon = cal.midnight(day) + DAY_MS / 2;
        let half = Crowd::day(1, day, noon, &cal, &p);
        assert_eq!(
            half.entrance.ins,
            a.entrance
                .ins
                .iter()
                .copied()
                .filter(|&t| t >= noon)
                .collect::<Vec<_>>()
        );
        let shared = CenterCrowd::new(1, 0, cal, p);
        assert_eq!(*shared.day(day), a);
        assert!(Arc::ptr_eq(&shared.day(day), &shared.day(day)));
    }

    #[test]
    fn credentials_are_stable_and_distinct() {
        assert_eq!(member_credential(1, "c", 3), member_credential(1, "c", 3));
        assert_ne!(member_credential(1, "c", 3), member_credential(1, "c", 4));
        assert_ne!(member_credential(1, "c", 3), member_credential(1, "d", 3));
        assert_eq!(member_id("center01", 7), "center01m00007");
    }
}
