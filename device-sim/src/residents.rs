//! The residents' bookings of one center on one local day, planned from the
//! seed (pure): who books which slot and when, and what becomes of it —
//! they come, do not come (a no-show), or cancel, in good time or late —
//! and whether they join the waitlist when the slot is full.
//!
//! Grounded in the field (`BRIEF.md`): childcare mornings and afternoons
//! for children of 1.5 to 3 (some parents of younger or older children try
//! anyway and are refused by the age rule), three yoga classes a week that
//! fill up, study seats that run out in the weekend's 10:30 rush, pianos
//! and therapy robots booked by the hour and half hour. `frontdesk` carries
//! the plan out through the hub's API; `Attendance` tells a device whether
//! the resident of the booking it was unlocked for is there.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{Datelike, Months, NaiveDate, NaiveTime};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

use crate::crowd::fnv1a;
use crate::district::{Bookable, CheckIn, Service};
use crate::simtime::Calendar;

pub const MINUTE_MS: u64 = 60_000;
/// Nobody books a slot less than this long before it starts (so a
/// waitlisted resident can still look before the slot, see below).
pub const MIN_LEAD_MS: u64 = 40 * MINUTE_MS;
/// Residents of a center that book (ids `<center>r00000` …).
const POOL: usize = 5_000;
/// Shares of booked places whose resident does not come, cancels late
/// (15 to 45 min before) and cancels in good time (2 h or more before).
const P_NO_SHOW: f64 = 0.08;
const P_LATE_CANCEL: f64 = 0.06;
const P_EARLY_CANCEL: f64 = 0.08;
/// Share of those who find a slot full and join its waitlist.
const P_WAITS: f64 = 0.75;
/// Share of parents whose child is outside the childcare's ages.
const P_INELIGIBLE: f64 = 0.15;
/// Mixed into the seed so the plan draws apart from the crowd's.
const SALT: u64 = 0x7265_7369_6465_6e74;

/// What becomes of a booked place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The resident comes and checks in.
    Attend,
    /// The resident does not come (the hub releases the place).
    NoShow,
    /// The resident cancels at `at`: late when within 15 to 45 min of the
    /// start, else 2 h or more before it.
    Cancel { at: u64, late: bool },
}

/// One resident's attempt to book one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub center: String,
    pub resource: String,
    pub service: Service,
    pub resident: String,
    /// `child`, `youth`, `adult` or `senior`.
    pub group: &'static str,
    /// The child's (childcare).
    pub child_birthdate: Option<NaiveDate>,
    /// The child is outside the childcare's ages: the hub refuses.
    pub ineligible: bool,
    /// `(start, end)`, unix ms.
    pub slot: (u64, u64),
    /// When they book (never before the run's start).
    pub book_at: u64,
    /// When they come to the kiosk, if they come: from 8 min before the
    /// start to 5 min after it. (At a device they come when it unlocks.)
    pub arrive_at: u64,
    pub fate: Fate,
    /// Joins the waitlist when the slot is full; if no place came free by
    /// `LOOK_BEFORE_MS` before the start, leaves it.
    pub waits: bool,
}

impl Intent {
    /// The slot's local day, under which it is counted.
    pub fn day(&self, calendar: &Calendar) -> NaiveDate {
        calendar.day(self.slot.0)
    }

    pub fn check_in(&self) -> CheckIn {
        self.service.check_in()
    }
}

/// People who try to book one slot.
fn bookers(service: Service, calendar: &Calendar, start: u64, rng: &mut StdRng) -> usize {
    let local = calendar.local(start);
    let weekend = calendar.is_weekend(local.date_naive());
    let minute = local
        .time()
        .signed_duration_since(NaiveTime::MIN)
        .num_minutes();
    // The slots starting 10:30 and 11:30.
    let rush = (10 * 60 + 30..=11 * 60 + 30).contains(&minute);
    match service {
        Service::Childcare => rng.gen_range(7..=13),
        Service::Yoga => rng.gen_range(15..=26),
        Service::Study if weekend && rush => rng.gen_range(44..=55),
        Service::Study if weekend => rng.gen_range(8..=16),
        Service::Study => rng.gen_range(4..=12),
        Service::Piano => usize::from(rng.gen_bool(0.3)),
        Service::Therapy => usize::from(rng.gen_bool(0.25)),
    }
}

/// How long before the slot they book, in minutes.
fn lead_minutes(service: Service, rng: &mut StdRng) -> u64 {
    match service {
        Service::Childcare => rng.gen_range(180..=2_160),
        Service::Yoga => rng.gen_range(120..=2_880),
        Service::Study => rng.gen_range(40..=1_200),
        Service::Piano => rng.gen_range(40..=1_440),
        Service::Therapy => rng.gen_range(60..=1_800),
    }
}

fn group(service: Service, rng: &mut StdRng) -> &'static str {
    let choices: &[&'static str] = match service {
        Service::Childcare => &["child"],
        Service::Yoga | Service::Therapy => &["adult", "senior"],
        Service::Study => &["youth", "adult"],
        Service::Piano => &["child", "youth", "adult"],
    };
    choices[rng.gen_range(0..choices.len())]
}

/// A child's birthdate for a childcare slot on `day`, and whether it is
/// outside the ages taken (well inside or well outside 18 to 36 months,
/// so that no day-of-month rounding decides).
fn child(day: NaiveDate, rng: &mut StdRng) -> (Option<NaiveDate>, bool) {
    let ineligible = rng.gen_bool(P_INELIGIBLE);
    let months = match (ineligible, rng.gen_bool(0.5)) {
        (false, _) => rng.gen_range(20..=34),
        (true, true) => rng.gen_range(6..=15),
        (true, false) => rng.gen_range(40..=48),
    };
    (day.checked_sub_months(Months::new(months)), ineligible)
}

/// A fate for a place booked at `book_at` of a slot starting at `start`.
/// `may_miss`: the resident has no no-show yet that day (the hub's strikes
/// block after repeated ones; one a day keeps a short run clear of them).
fn fate(book_at: u64, start: u64, may_miss: bool, rng: &mut StdRng) -> Fate {
    let roll: f64 = rng.gen();
    let lead = start - book_at;
    if roll < P_NO_SHOW {
        return if may_miss { Fate::NoShow } else { Fate::Attend };
    }
    if roll < P_NO_SHOW + P_LATE_CANCEL && lead >= 20 * MINUTE_MS {
        let latest = (45 * MINUTE_MS).min(lead - 5 * MINUTE_MS);
        let before = rng.gen_range(15 * MINUTE_MS..=latest);
        return Fate::Cancel {
            at: start - before,
            late: true,
        };
    }
    if roll < P_NO_SHOW + P_LATE_CANCEL + P_EARLY_CANCEL && lead >= 4 * 60 * MINUTE_MS {
        let at = rng.gen_range(book_at + 5 * MINUTE_MS..=start - 2 * 60 * MINUTE_MS);
        return Fate::Cancel { at, late: false };
    }
    Fate::Attend
}

/// The seed of `center`'s plan for `day`.
fn day_seed(seed: u64, center: &str, day: NaiveDate) -> u64 {
    let day = u64::from(day.num_days_from_ce().unsigned_abs()).rotate_left(32);
    seed ^ fnv1a(center.as_bytes()) ^ day ^ SALT
}

/// Every attempt to book a slot of `bookables` (one center's) starting on
/// local `day`, in the order they are made. Nobody books before
/// `not_before` (the run's start: whoever would have booked earlier books
/// then), nor a slot starting less than `MIN_LEAD_MS` after it.
pub fn plan_day(
    seed: u64,
    bookables: &[Bookable],
    day: NaiveDate,
    calendar: &Calendar,
    not_before: u64,
) -> Vec<Intent> {
    let Some(center) = bookables.first().map(|b| b.center.clone()) else {
        return Vec::new();
    };
    let mut rng = StdRng::seed_from_u64(day_seed(seed, &center, day));
    let mut missed_today = HashSet::new();
    let mut intents = Vec::new();
    for bookable in bookables {
        for (start, end) in bookable.slots_on(calendar, day) {
            let wanted = bookers(bookable.service, calendar, start, &mut rng);
            for n in sample(&mut rng, POOL, wanted.min(POOL)) {
                let resident = format!("{center}r{n:05}");
                let lead = lead_minutes(bookable.service, &mut rng) * MINUTE_MS;
                let book_at = start.saturating_sub(lead).max(not_before);
                let (child_birthdate, ineligible) = match bookable.service {
                    Service::Childcare => child(day, &mut rng),
                    _ => (None, false),
                };
                let group = group(bookable.service, &mut rng);
                let arrive_at = start - 8 * MINUTE_MS + rng.gen_range(0..=13) * MINUTE_MS;
                let waits = rng.gen_bool(P_WAITS);
                let may_miss = !missed_today.contains(&resident);
                let fate = fate(book_at.min(start), start, may_miss, &mut rng);
                if start < not_before + MIN_LEAD_MS {
                    continue;
                }
                if fate == Fate::NoShow {
                    missed_today.insert(resident.clone());
                }
                intents.push(Intent {
                    center: center.clone(),
                    resource: bookable.id.clone(),
                    service: bookable.service,
                    resident,
                    group,
                    child_birthdate,
                    ineligible,
                    slot: (start, end),
                    book_at,
                    arrive_at,
                    fate,
                    waits,
                });
            }
        }
    }
    intents.sort_by_key(|intent| intent.book_at);
    intents
}

/// One booked place a device may be unlocked for.
#[derive(Debug, Clone)]
struct Visit {
    center: String,
    day: NaiveDate,
    comes: bool,
    arrived: bool,
}

/// Which booked places their residents come to: written by the front desk
/// when a place is booked (or waited for), read by the piano or robot the
/// hub unlocks for it. Shared by a run's devices and its front desk.
#[derive(Debug, Default)]
pub struct Attendance {
    /// booking id → visit. std Mutex: held only to read or change an entry.
    visits: Mutex<HashMap<String, Visit>>,
}

impl Attendance {
    fn visits(&self) -> std::sync::MutexGuard<'_, HashMap<String, Visit>> {
        // invariant: no code panics while holding the lock.
        self.visits.lock().expect("attendance lock")
    }

    /// `booking`'s resident will (or will not) come when its slot starts.
    pub fn expect(&self, booking: &str, center: &str, day: NaiveDate, comes: bool) {
        let visit = Visit {
            center: center.to_owned(),
            day,
            comes,
            arrived: false,
        };
        self.visits().insert(booking.to_owned(), visit);
    }

    /// A device was unlocked for `booking`: `Some(true)` the first time
    /// its resident comes (they start their session now), `Some(false)`
    /// when they do not (or already came), `None` for a booking not of
    /// this run.
    pub fn arrive(&self, booking: &str) -> Option<bool> {
        let mut visits = self.visits();
        let visit = visits.get_mut(booking)?;
        let comes = visit.comes && !visit.arrived;
        visit.arrived |= comes;
        Some(comes)
    }

    /// Whether `booking`'s resident came to their device.
    pub fn arrived(&self, booking: &str) -> bool {
        self.visits().get(booking).is_some_and(|v| v.arrived)
    }

    /// Residents who came to a device, per center and local day.
    pub fn arrivals(&self) -> HashMap<(String, NaiveDate), u64> {
        let mut arrivals = HashMap::new();
        for visit in self.visits().values().filter(|v| v.arrived) {
            *arrivals
                .entry((visit.center.clone(), visit.day))
                .or_default() += 1;
        }
        arrivals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::district::default_district;

    fn center() -> Vec<Bookable> {
        default_district(1)
    }

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    /// 28 days from Monday 2026-11-02, each planned on its own.
    fn month(seed: u64) -> Vec<Intent> {
        let cal = Calendar::default();
        (2..30)
            .flat_map(|d| plan_day(seed, &center(), date(d), &cal, 0))
            .collect()
    }

    fn share(intents: &[Intent], pick: impl Fn(&Intent) -> bool) -> f64 {
        intents.iter().filter(|i| pick(i)).count() as f64 / intents.len() as f64
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let cal = Calendar::default();
        let plan = |seed| plan_day(seed, &center(), date(7), &cal, 0);
        assert_eq!(plan(3), plan(3));
        assert_ne!(plan(3), plan(4));
        assert_ne!(plan(3), plan_day(3, &center(), date(8), &cal, 0));
    }

    #[test]
    fn bookings_come_before_their_slots_and_cancels_and_arrivals_in_their_windows() {
        let cal = Calendar::default();
        let start = cal.at(date(7), NaiveTime::from_hms_opt(10, 0, 0).unwrap());
        let plan = plan_day(9, &center(), date(7), &cal, start);
        assert!(plan.windows(2).all(|w| w[0].book_at <= w[1].book_at));
        for i in &plan {
            assert!(i.slot.0 >= start + MIN_LEAD_MS, "{i:?}");
            assert!(i.book_at >= start && i.book_at + MIN_LEAD_MS <= i.slot.0);
            let before = |at: u64| (i.slot.0 - at) / MINUTE_MS;
            assert!((i.slot.0 - 8 * MINUTE_MS..=i.slot.0 + 5 * MINUTE_MS).contains(&i.arrive_at));
            match i.fate {
                Fate::Cancel { at, late: true } => {
                    assert!(at > i.book_at && (15..=45).contains(&before(at)), "{i:?}")
                }
                Fate::Cancel { at, late: false } => {
                    assert!(at > i.book_at && before(at) >= 120, "{i:?}")
                }
                Fate::Attend | Fate::NoShow => {}
            }
        }
        let morning = plan
            .iter()
            .filter(|i| i.slot.0 < start + MIN_LEAD_MS)
            .count();
        assert_eq!(morning, 0, "slots too close to the start are left out");
    }

    #[test]
    fn fates_and_ages_come_in_their_shares() {
        let month = month(11);
        let no_show = share(&month, |i| i.fate == Fate::NoShow);
        let late = share(&month, |i| {
            matches!(i.fate, Fate::Cancel { late: true, .. })
        });
        let early = share(&month, |i| {
            matches!(i.fate, Fate::Cancel { late: false, .. })
        });
        assert!((0.06..0.09).contains(&no_show), "{no_show}");
        assert!((0.05..0.07).contains(&late), "{late}");
        assert!((0.05..0.09).contains(&early), "{early}");
        let childcare: Vec<Intent> = month
            .into_iter()
            .filter(|i| i.service == Service::Childcare)
            .collect();
        let ineligible = share(&childcare, |i| i.ineligible);
        assert!((0.11..0.19).contains(&ineligible), "{ineligible}");
        for i in &childcare {
            let birth = i.child_birthdate.unwrap();
            let months = (i.day(&Calendar::default()).year() - birth.year()) * 12
                + i.day(&Calendar::default()).month() as i32
                - birth.month() as i32;
            let inside = (19..=35).contains(&months);
            assert_eq!(inside, !i.ineligible, "{months} months: {i:?}");
        }
    }

    #[test]
    fn the_weekend_rush_overbooks_study_seats_and_yoga_fills_three_times_a_week() {
        let cal = Calendar::default();
        let per_slot = |day: u32, service| {
            let mut counts: HashMap<u64, usize> = HashMap::new();
            for i in plan_day(5, &center(), date(day), &cal, 0) {
                if i.service == service {
                    *counts.entry(i.slot.0).or_default() += 1;
                }
            }
            counts
        };
        let at = |day, h, m| cal.at(date(day), NaiveTime::from_hms_opt(h, m, 0).unwrap());
        let saturday = per_slot(7, Service::Study);
        assert!(saturday[&at(7, 10, 30)] > 40 && saturday[&at(7, 11, 30)] > 40);
        assert!(saturday[&at(7, 15, 30)] < 40);
        assert!(
            per_slot(4, Service::Study).values().all(|&n| n < 40),
            "a Wednesday"
        );
        let yoga_days = (2..9)
            .filter(|&d| !per_slot(d, Service::Yoga).is_empty())
            .count();
        assert_eq!(yoga_days, 3);
    }

    #[test]
    fn nobody_holds_a_slot_twice_or_misses_twice_a_day() {
        let cal = Calendar::default();
        for d in 2..16 {
            let plan = plan_day(7, &center(), date(d), &cal, 0);
            let places: HashSet<(&str, u64, &str)> = plan
                .iter()
                .map(|i| (i.resource.as_str(), i.slot.0, i.resident.as_str()))
                .collect();
            assert_eq!(places.len(), plan.len());
            let missing: Vec<&str> = plan
                .iter()
                .filter(|i| i.fate == Fate::NoShow)
                .map(|i| i.resident.as_str())
                .collect();
            let distinct: HashSet<&&str> = missing.iter().collect();
            assert_eq!(distinct.len(), missing.len());
        }
    }

    #[test]
    fn a_device_learns_once_whether_the_resident_came() {
        let attendance = Attendance::default();
        attendance.expect("b1", "center01", date(7), true);
        attendance.expect("b2", "center01", date(7), false);
        assert_eq!(attendance.arrive("b1"), Some(true));
        assert_eq!(attendance.arrive("b1"), Some(false), "once");
        assert_eq!(attendance.arrive("b2"), Some(false));
        assert_eq!(attendance.arrive("elsewhere"), None);
        assert!(attendance.arrived("b1") && !attendance.arrived("b2"));
        let arrivals = attendance.arrivals();
        assert_eq!(arrivals[&("center01".to_string(), date(7))], 1);
    }
}
