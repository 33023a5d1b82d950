//! Scheduling rules (pure): where a resource's slots fall in the centers'
//! time zone, who is on duty for a slot, and whether a booking may be
//! taken.
//!
//! An attempt is checked against an ordered rule list; the first failing
//! rule names the refusal (422 with `rule`), and a slot without a free place
//! for the resident's group is `Full` (409, waitlist offered). Places held
//! for a group (fair shares) count as taken for the other groups until
//! `release_before_minutes` before the slot. The facts come in as values:
//! the resident's `History` (built here from their index entries), the
//! slot's load, the times of their strikes. The desk (`bookings`) reads
//! them, owns the writes and asks here; this module only decides.

use chrono::{Datelike, NaiveDate};
use protocol::calendar::Calendar;

use crate::hours::{opening_window, week_of};
use crate::records::{Group, IndexEntry, Milestone, Slot, SlotLoad, Status};
use crate::settings::{Layout, Resource, Roster, ScheduleConfig, Shift};

pub const MINUTE_MS: u64 = 60_000;
pub const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// Where a resource's slots fall.
impl Resource {
    /// The resource's slots on local `day` (slots starting that day).
    pub fn slots_on(&self, calendar: &Calendar, day: NaiveDate) -> Vec<Slot> {
        match &self.layout {
            Layout::Every { hours, minutes } => {
                let (open, close) = opening_window(calendar, day, *hours);
                let length = u64::from(*minutes) * MINUTE_MS;
                (0..)
                    .map(|i| open + i * length)
                    .take_while(|start| start + length <= close)
                    .map(|start| Slot {
                        start,
                        end: start + length,
                    })
                    .collect()
            }
            Layout::Listed(slots) => slots
                .iter()
                .filter(|s| s.on(day.weekday()))
                .map(|s| Slot {
                    start: calendar.at(day, s.start),
                    end: calendar.at(day, s.end),
                })
                .collect(),
        }
    }

    /// The slot starting exactly at `start`, if the resource has one (from
    /// the day before too: opening hours may span midnight).
    pub fn slot_at(&self, calendar: &Calendar, start: u64) -> Option<Slot> {
        let day = calendar.day(start);
        let days = [day.pred_opt(), Some(day)].into_iter().flatten();
        match &self.layout {
            Layout::Every { hours, minutes } => {
                let length = u64::from(*minutes) * MINUTE_MS;
                days.map(|d| opening_window(calendar, d, *hours))
                    .any(|(open, close)| {
                        start >= open
                            && (start - open).is_multiple_of(length)
                            && start.checked_add(length).is_some_and(|end| end <= close)
                    })
                    .then(|| Slot {
                        start,
                        end: start + length,
                    })
            }
            Layout::Listed(_) => days
                .flat_map(|d| self.slots_on(calendar, d))
                .find(|slot| slot.start == start),
        }
    }

    /// Slots starting in `[from, to)`. Walks the days of the span and no
    /// more (instants past the calendar's end all read as its last day, so
    /// the midnights alone would not end the walk).
    pub fn slots_between(&self, calendar: &Calendar, from: u64, to: u64) -> Vec<Slot> {
        let mut slots = Vec::new();
        let mut day = calendar.day(from);
        let days = to.saturating_sub(from) / DAY_MS + 2;
        for _ in 0..days {
            if calendar.midnight(day) >= to {
                break;
            }
            slots.extend(
                self.slots_on(calendar, day)
                    .into_iter()
                    .filter(|s| s.start >= from && s.start < to),
            );
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        slots
    }

    /// Whether held places still hold at `now` for a slot starting `start`.
    pub fn shares_hold(&self, start: u64, now: u64) -> bool {
        !self.held.is_empty()
            && now + u64::from(self.config.release_before_minutes) * MINUTE_MS < start
    }
}

/// Who is on duty for a slot of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duty {
    /// The room keeps no roster.
    NoRoster,
    OnDuty(String),
    Unstaffed,
}

/// Whether `shift` covers `slot` whole.
fn covers(shift: &Shift, calendar: &Calendar, slot: Slot) -> bool {
    let day = calendar.day(slot.start);
    shift.window.on(day.weekday())
        && calendar.at(day, shift.window.start) <= slot.start
        && slot.end <= calendar.at(day, shift.window.end)
}

impl Roster {
    /// The manager on duty for `slot` of `resource`; shifts covering a slot
    /// take turns by the slot's start minute, so duty spreads evenly.
    pub fn duty(&self, calendar: &Calendar, resource: &Resource, slot: Slot) -> Duty {
        let config = &resource.config;
        let room: Vec<&Shift> = self
            .shifts
            .iter()
            .filter(|s| s.center == config.center && s.room == config.room)
            .collect();
        if room.is_empty() {
            return Duty::NoRoster;
        }
        let covering: Vec<&&Shift> = room.iter().filter(|s| covers(s, calendar, slot)).collect();
        if covering.is_empty() {
            return Duty::Unstaffed;
        }
        let turn = (slot.start / MINUTE_MS) as usize % covering.len();
        Duty::OnDuty(covering[turn].manager.clone())
    }
}

/// Places free in a slot for `group` (any group: `None`), given the load
/// and whether held shares still hold.
pub fn free_places(resource: &Resource, load: &SlotLoad, group: Option<Group>, held: bool) -> u32 {
    let capacity = resource.config.capacity;
    let reserved_for_others: u32 = if held {
        resource
            .held
            .iter()
            .filter(|(g, _)| Some(*g) != group)
            .map(|(g, n)| n.saturating_sub(load.of(*g)))
            .sum()
    } else {
        0
    };
    capacity.saturating_sub(load.taken() + reserved_for_others)
}

/// What the desk knows of the resident's other bookings of this resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Bookings (booked, checked in or no-show) on the slot's local day.
    pub on_day: u32,
    /// ... in the slot's week (Monday to Sunday).
    pub in_week: u32,
    /// Booked slots not yet ended.
    pub active: u32,
    /// Already holds (or waits for) this very slot.
    pub holds_slot: bool,
    /// Blocked by strikes until then.
    pub blocked_until: Option<u64>,
}

/// An attempt to book a place, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub slot: Slot,
    pub group: Group,
    pub child_birthdate: Option<NaiveDate>,
    pub now: u64,
}

/// Why a booking was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A rule: 422 naming it.
    Rule { rule: &'static str, reason: String },
    /// No free place for the group: 409, with the waitlist offered.
    Full { reason: String },
}

fn broken(rule: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal::Rule {
        rule,
        reason: reason.into(),
    }
}

/// Checks an attempt against the rules in order, then the places.
pub fn decide(
    resource: &Resource,
    calendar: &Calendar,
    attempt: &Attempt,
    history: &History,
    load: &SlotLoad,
) -> Result<(), Refusal> {
    check_rules(resource, calendar, attempt, history)?;
    let held = resource.shares_hold(attempt.slot.start, attempt.now);
    if free_places(resource, load, Some(attempt.group), held) == 0 {
        let reason = if held && free_places(resource, load, None, false) > 0 {
            format!(
                "slot full for group {}: the free places are held for other groups until {} min before the start",
                attempt.group.as_str(),
                resource.config.release_before_minutes
            )
        } else {
            "slot full".to_string()
        };
        return Err(Refusal::Full { reason });
    }
    Ok(())
}

/// The rules alone (also checked when joining a waitlist).
pub fn check_rules(
    resource: &Resource,
    calendar: &Calendar,
    attempt: &Attempt,
    history: &History,
) -> Result<(), Refusal> {
    let config = &resource.config;
    if attempt.now >= attempt.slot.start {
        return Err(broken("slot_started", "the slot has started or is over"));
    }
    if attempt.slot.start > attempt.now + u64::from(config.horizon_days) * DAY_MS {
        return Err(broken(
            "horizon",
            format!("slots open for booking {} days ahead", config.horizon_days),
        ));
    }
    if let Some(until) = history.blocked_until.filter(|u| *u > attempt.now) {
        return Err(broken(
            "strikes",
            format!(
                "blocked after repeated no-shows until {}",
                calendar.local(until).to_rfc3339()
            ),
        ));
    }
    if let Some([min, max]) = config.child_age_months {
        check_child_age(calendar, attempt, min, max)?;
    }
    if history.holds_slot {
        return Err(broken(
            "one_per_slot",
            "the resident already holds this slot",
        ));
    }
    let quotas = [
        ("quota_per_day", config.per_day, history.on_day, "a day"),
        ("quota_per_week", config.per_week, history.in_week, "a week"),
        ("max_active", config.max_active, history.active, "at once"),
    ];
    for (rule, limit, used, per) in quotas {
        if let Some(limit) = limit.filter(|l| used >= *l) {
            return Err(broken(rule, format!("at most {limit} booking(s) {per}")));
        }
    }
    Ok(())
}

fn check_child_age(
    calendar: &Calendar,
    attempt: &Attempt,
    min: u32,
    max: u32,
) -> Result<(), Refusal> {
    let Some(birth) = attempt.child_birthdate else {
        return Err(broken(
            "child_age",
            "`child_birthdate` is required for this resource",
        ));
    };
    let on = calendar.day(attempt.slot.start);
    let months = age_in_months(birth, on);
    if months < i64::from(min) || months > i64::from(max) {
        return Err(broken(
            "child_age",
            format!("the child is {months} months old at the slot; this resource takes {min}-{max} months"),
        ));
    }
    Ok(())
}

/// Whole months from `birth` to `on` (negative before birth).
pub fn age_in_months(birth: NaiveDate, on: NaiveDate) -> i64 {
    let months =
        i64::from(on.year() - birth.year()) * 12 + i64::from(on.month()) - i64::from(birth.month());
    if on.day() < birth.day() {
        months - 1
    } else {
        months
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Rule { rule, reason } => write!(f, "rule {rule}: {reason}"),
            Refusal::Full { reason } => f.write_str(reason),
        }
    }
}

/// From when a resident's bookings count for `History` of an attempt at
/// `slot` at `now`: the slot's week, or the day before now if earlier.
pub fn history_from(calendar: &Calendar, slot: Slot, now: u64) -> u64 {
    week_of(calendar, slot.start)
        .0
        .min(now.saturating_sub(DAY_MS))
}

/// The resident's standing with `resource` around `slot`, from the index
/// entries `(slot start, entry)` of their bookings starting at or after
/// `history_from`, and until when strikes block them.
pub fn history_of<'a>(
    calendar: &Calendar,
    resource: &str,
    entries: impl IntoIterator<Item = (u64, &'a IndexEntry)>,
    slot: Slot,
    now: u64,
    blocked_until: Option<u64>,
) -> History {
    let (week_start, week_end) = week_of(calendar, slot.start);
    let day = calendar.day(slot.start);
    let mut history = History {
        blocked_until,
        ..History::default()
    };
    for (start, entry) in entries {
        if entry.resource != resource {
            continue;
        }
        if entry.status.counts_for_quota() {
            history.on_day += u32::from(calendar.day(start) == day);
            history.in_week += u32::from(start >= week_start && start < week_end);
        }
        history.active += u32::from(entry.status == Status::Booked && entry.end > now);
        history.holds_slot |= start == slot.start
            && (entry.status.holds_place() || entry.status == Status::Waitlisted);
    }
    history
}

/// From when strikes count at `now`.
pub fn strikes_from(now: u64, rules: &ScheduleConfig) -> u64 {
    now.saturating_sub(rules.strike_days * DAY_MS)
}

/// Until when repeated no-shows block new bookings, given the times of the
/// resident's strikes since `strikes_from` (oldest first): `block_days`
/// after the last one once there are `strikes_to_block`.
pub fn blocked_by_strikes(strikes: &[u64], rules: &ScheduleConfig) -> Option<u64> {
    let blocked = strikes.len() >= rules.strikes_to_block as usize;
    strikes
        .last()
        .filter(|_| blocked)
        .map(|last| last + rules.block_days * DAY_MS)
}

/// Whether cancelling a place starting at `slot_start` at `now` is late.
pub fn is_late_cancel(now: u64, slot_start: u64, rules: &ScheduleConfig) -> bool {
    now + rules.late_cancel_minutes * MINUTE_MS >= slot_start
}

/// When a booked place of `slot` can be checked in: from `grace_minutes`
/// before its start to its end.
pub fn check_in_window(slot: Slot, rules: &ScheduleConfig) -> (u64, u64) {
    let opens = slot.start.saturating_sub(rules.grace_minutes * MINUTE_MS);
    (opens, slot.end)
}

/// The milestones of a place booked at `now`: unlock at the start (bound
/// devices only), release at the grace end, lock and count at the end.
pub fn milestones_of_booked(
    resource: &Resource,
    slot: Slot,
    now: u64,
    rules: &ScheduleConfig,
) -> Vec<(u64, Milestone)> {
    let mut milestones = Vec::with_capacity(3);
    if !resource.config.devices.is_empty() {
        milestones.push((slot.start.max(now), Milestone::Start));
    }
    let grace = rules.grace_minutes * MINUTE_MS;
    milestones.push((slot.start.max(now) + grace, Milestone::Grace));
    milestones.push((slot.end, Milestone::End));
    milestones
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ResourceConfig, ShareConfig};

    fn config() -> ResourceConfig {
        crate::records::resource::yoga()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    const HOUR_MS: u64 = 60 * MINUTE_MS;

    #[test]
    fn listed_slots_fall_on_their_weekdays_in_local_time() {
        let cal = Calendar::default();
        let yoga = Resource::from_config(&config()).unwrap();
        // 2027-01-04 is a Monday.
        let monday = yoga.slots_on(&cal, date(2027, 1, 4));
        assert_eq!(monday.len(), 1);
        assert_eq!(
            cal.local(monday[0].start).to_rfc3339(),
            "2027-01-04T19:00:00+08:00"
        );
        assert!(yoga.slots_on(&cal, date(2027, 1, 5)).is_empty());
        let week = yoga.slots_between(
            &cal,
            cal.midnight(date(2027, 1, 4)),
            cal.midnight(date(2027, 1, 11)),
        );
        assert_eq!(week.len(), 3);
        assert_eq!(yoga.slot_at(&cal, monday[0].start), Some(monday[0]));
        assert_eq!(yoga.slot_at(&cal, monday[0].start + 1), None);
    }

    /// A gym open round the clock with slots of `minutes`.
    fn gym(minutes: u32) -> Resource {
        let mut gym = config();
        gym.slots.clear();
        gym.slot_minutes = Some(minutes);
        gym.hours = Some("24h".into());
        Resource::from_config(&gym).unwrap()
    }

    #[test]
    fn a_24h_resource_has_back_to_back_slots_all_day() {
        let cal = Calendar::default();
        assert_eq!(gym(120).slots_on(&cal, date(2027, 1, 4)).len(), 12);
    }

    /// Issue 13: a `slot_start` of `u64::MAX` overflowed `slot_at` (and
    /// panicked the desk thread, which stopped the hub); a window near
    /// `u64::MAX` walked ~95 million days.
    #[test]
    fn instants_past_the_calendar_find_no_slot_and_walk_no_days() {
        let cal = Calendar::default();
        let gym = gym(60);
        for start in [u64::MAX, u64::MAX - 3_600_000, protocol::limits::MAX_TS_MS] {
            assert_eq!(gym.slot_at(&cal, start), None, "{start}");
        }
        let started = std::time::Instant::now();
        assert!(gym
            .slots_between(&cal, u64::MAX - 1_000, u64::MAX)
            .is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let monday = cal.midnight(date(2027, 1, 4));
        assert_eq!(gym.slots_between(&cal, monday, monday + DAY_MS).len(), 24);
    }

    #[test]
    fn slots_after_midnight_belong_to_the_evening_they_started() {
        let cal = Calendar::default();
        let mut night = config();
        night.slots.clear();
        night.slot_minutes = Some(60);
        night.open = Some("22:00".into());
        night.close = Some("02:00".into());
        let night = Resource::from_config(&night).unwrap();
        let monday = night.slots_on(&cal, date(2027, 1, 4));
        assert_eq!(monday.len(), 4);
        let after_midnight = monday[3];
        assert_eq!(cal.day(after_midnight.start), date(2027, 1, 5));
        assert_eq!(
            night.slot_at(&cal, after_midnight.start),
            Some(after_midnight)
        );
        assert_eq!(night.slot_at(&cal, after_midnight.start + 60_000), None);
    }

    #[test]
    fn rules_are_checked_in_order_and_named() {
        let cal = Calendar::default();
        let mut childcare = config();
        childcare.child_age_months = Some([18, 36]);
        let resource = Resource::from_config(&childcare).unwrap();
        let slot = resource.slots_on(&cal, date(2027, 1, 4))[0];
        let attempt = Attempt {
            slot,
            group: Group::Child,
            child_birthdate: Some(date(2026, 1, 1)),
            now: slot.start - DAY_MS,
        };
        let rule = |attempt: &Attempt, history: &History| match decide(
            &resource,
            &cal,
            attempt,
            history,
            &SlotLoad::default(),
        ) {
            Err(Refusal::Rule { rule, .. }) => rule,
            Err(Refusal::Full { .. }) => "full",
            Ok(()) => "ok",
        };
        assert_eq!(
            rule(&attempt, &History::default()),
            "child_age",
            "12 months old"
        );
        let attempt = Attempt {
            child_birthdate: Some(date(2025, 1, 4)),
            ..attempt
        };
        assert_eq!(rule(&attempt, &History::default()), "ok", "24 months old");
        let busy = History {
            on_day: 1,
            ..History::default()
        };
        assert_eq!(rule(&attempt, &busy), "quota_per_day");
        let week = History {
            in_week: 2,
            ..History::default()
        };
        assert_eq!(rule(&attempt, &week), "quota_per_week");
        let late = Attempt {
            now: slot.start,
            ..attempt
        };
        assert_eq!(rule(&late, &History::default()), "slot_started");
        let early = Attempt {
            now: slot.start - 8 * DAY_MS,
            ..attempt
        };
        assert_eq!(rule(&early, &History::default()), "horizon");
    }

    #[test]
    fn held_shares_close_the_slot_to_others_until_release() {
        let cal = Calendar::default();
        let mut seats = config();
        seats.capacity = 5;
        seats.shares = vec![ShareConfig {
            group: "senior".into(),
            percent: 20,
        }];
        let resource = Resource::from_config(&seats).unwrap();
        let slot = resource.slots_on(&cal, date(2027, 1, 4))[0];
        let mut load = SlotLoad::default();
        for _ in 0..4 {
            load.add(Group::Adult);
        }
        let early = slot.start - 3 * 3_600_000;
        assert!(resource.shares_hold(slot.start, early));
        assert_eq!(free_places(&resource, &load, Some(Group::Adult), true), 0);
        assert_eq!(free_places(&resource, &load, Some(Group::Senior), true), 1);
        assert!(!resource.shares_hold(slot.start, slot.start - 3_600_000));
        assert_eq!(free_places(&resource, &load, Some(Group::Adult), false), 1);
    }

    #[test]
    fn months_of_age_count_whole_months() {
        assert_eq!(age_in_months(date(2025, 1, 15), date(2026, 7, 15)), 18);
        assert_eq!(age_in_months(date(2025, 1, 15), date(2026, 7, 14)), 17);
    }
    /// The Monday 2027-01-04 19:00 yoga slot of `resource`.
    fn monday_slot(cal: &Calendar, resource: &Resource) -> Slot {
        resource.slots_on(cal, date(2027, 1, 4))[0]
    }

    /// The rule an attempt at the Monday slot, `before_ms` before it, with
    /// `history` and an empty slot breaks ("ok" when none, "full" when the
    /// slot is full).
    fn rule_of(
        resource: &Resource,
        before_ms: u64,
        history: History,
        birth: Option<NaiveDate>,
    ) -> &'static str {
        let cal = Calendar::default();
        let slot = monday_slot(&cal, resource);
        let attempt = Attempt {
            slot,
            group: Group::Adult,
            child_birthdate: birth,
            now: slot.start.saturating_sub(before_ms),
        };
        match decide(resource, &cal, &attempt, &history, &SlotLoad::default()) {
            Err(Refusal::Rule { rule, .. }) => rule,
            Err(Refusal::Full { .. }) => "full",
            Ok(()) => "ok",
        }
    }

    #[test]
    fn quotas_count_per_day_per_week_and_at_once() {
        let mut limited = config();
        limited.max_active = Some(3);
        let yoga = Resource::from_config(&limited).unwrap();
        let history = |on_day, in_week, active| History {
            on_day,
            in_week,
            active,
            ..History::default()
        };
        for (on_day, in_week, active, expect) in [
            (0, 0, 0, "ok"),
            (0, 1, 2, "ok"),
            (1, 1, 0, "quota_per_day"),
            (0, 2, 0, "quota_per_week"),
            (0, 1, 3, "max_active"),
            (1, 2, 3, "quota_per_day"),
            (0, 2, 3, "quota_per_week"),
        ] {
            let got = rule_of(&yoga, HOUR_MS, history(on_day, in_week, active), None);
            assert_eq!(
                got, expect,
                "{on_day} today, {in_week} this week, {active} active"
            );
        }
        let unlimited = Resource::from_config(&ResourceConfig {
            per_day: None,
            per_week: None,
            ..config()
        })
        .unwrap();
        assert_eq!(rule_of(&unlimited, HOUR_MS, history(5, 9, 9), None), "ok");
    }

    #[test]
    fn the_horizon_and_the_start_bound_when_a_slot_may_be_booked() {
        let yoga = Resource::from_config(&config()).unwrap();
        for (before_ms, expect) in [
            (8 * DAY_MS, "horizon"),
            (7 * DAY_MS + 1, "horizon"),
            (7 * DAY_MS, "ok"),
            (HOUR_MS, "ok"),
            (1, "ok"),
            (0, "slot_started"),
        ] {
            assert_eq!(
                rule_of(&yoga, before_ms, History::default(), None),
                expect,
                "{before_ms} ms before"
            );
        }
    }

    #[test]
    fn a_child_must_be_within_the_ages_on_the_slot_day() {
        let childcare = Resource::from_config(&ResourceConfig {
            child_age_months: Some([18, 36]),
            ..config()
        })
        .unwrap();
        // The slot is on 2027-01-04.
        for (birth, expect) in [
            (None, "child_age"),
            (Some(date(2026, 1, 1)), "child_age"),
            (Some(date(2025, 7, 5)), "child_age"),
            (Some(date(2025, 7, 4)), "ok"),
            (Some(date(2024, 1, 4)), "ok"),
            (Some(date(2023, 12, 5)), "ok"),
            (Some(date(2023, 12, 4)), "child_age"),
        ] {
            assert_eq!(
                rule_of(&childcare, HOUR_MS, History::default(), birth),
                expect,
                "{birth:?}"
            );
        }
        let yoga = Resource::from_config(&config()).unwrap();
        assert_eq!(
            rule_of(&yoga, HOUR_MS, History::default(), None),
            "ok",
            "no age rule"
        );
    }

    #[test]
    fn the_first_failing_rule_in_order_names_the_refusal() {
        let childcare = Resource::from_config(&ResourceConfig {
            child_age_months: Some([18, 36]),
            ..config()
        })
        .unwrap();
        let blocked = Some(u64::MAX);
        let everything = History {
            on_day: 9,
            in_week: 9,
            active: 9,
            holds_slot: true,
            blocked_until: blocked,
        };
        for (before_ms, history, expect) in [
            (0, everything, "slot_started"),
            (8 * DAY_MS, everything, "horizon"),
            (HOUR_MS, everything, "strikes"),
            (
                HOUR_MS,
                History {
                    blocked_until: None,
                    ..everything
                },
                "child_age",
            ),
        ] {
            assert_eq!(rule_of(&childcare, before_ms, history, None), expect);
        }
        let yoga = Resource::from_config(&config()).unwrap();
        let holds = History {
            blocked_until: None,
            ..everything
        };
        assert_eq!(rule_of(&yoga, HOUR_MS, holds, None), "one_per_slot");
    }

    #[test]
    fn held_shares_leave_free_places_by_group_until_release() {
        let mut seats = config();
        seats.capacity = 5;
        seats.shares = vec![
            ShareConfig {
                group: "senior".into(),
                percent: 20,
            },
            ShareConfig {
                group: "child".into(),
                percent: 20,
            },
        ];
        let resource = Resource::from_config(&seats).unwrap();
        let load = |adults: u32, seniors: u32| {
            let mut load = SlotLoad::default();
            (0..adults).for_each(|_| load.add(Group::Adult));
            (0..seniors).for_each(|_| load.add(Group::Senior));
            load
        };
        // (adults, seniors booked, group asking, shares hold, free places)
        for (adults, seniors, group, held, expect) in [
            (0, 0, Some(Group::Adult), true, 3),
            (3, 0, Some(Group::Adult), true, 0),
            (3, 0, Some(Group::Senior), true, 1),
            (3, 0, Some(Group::Child), true, 1),
            (3, 1, Some(Group::Senior), true, 0),
            (3, 1, Some(Group::Child), true, 1),
            (3, 1, None, true, 0),
            (3, 1, Some(Group::Adult), false, 1),
            (3, 0, None, false, 2),
            (5, 0, Some(Group::Senior), true, 0),
        ] {
            let got = free_places(&resource, &load(adults, seniors), group, held);
            assert_eq!(
                got, expect,
                "{adults} adults, {seniors} seniors, {group:?}, held {held}"
            );
        }
        let start = 10 * HOUR_MS;
        for (now, expect) in [
            (start - 3 * HOUR_MS, true),
            (start - 2 * HOUR_MS - 1, true),
            (start - 2 * HOUR_MS, false),
            (start, false),
        ] {
            assert_eq!(resource.shares_hold(start, now), expect, "{now}");
        }
        let none = Resource::from_config(&config()).unwrap();
        assert!(!none.shares_hold(start, 0), "no shares, nothing held");
    }

    #[test]
    fn a_full_slot_says_whether_places_are_held_for_others() {
        let cal = Calendar::default();
        let mut seats = config();
        seats.capacity = 2;
        seats.shares = vec![ShareConfig {
            group: "senior".into(),
            percent: 50,
        }];
        let resource = Resource::from_config(&seats).unwrap();
        let slot = monday_slot(&cal, &resource);
        let mut load = SlotLoad::default();
        load.add(Group::Adult);
        let attempt = |group, now| Attempt {
            slot,
            group,
            child_birthdate: None,
            now,
        };
        let full = |group, now, load: &SlotLoad| match decide(
            &resource,
            &cal,
            &attempt(group, now),
            &History::default(),
            load,
        ) {
            Err(Refusal::Full { reason }) => reason,
            other => format!("{other:?}"),
        };
        let early = slot.start - 3 * HOUR_MS;
        assert!(full(Group::Adult, early, &load).contains("held for other groups"));
        assert_eq!(
            decide(
                &resource,
                &cal,
                &attempt(Group::Senior, early),
                &History::default(),
                &load
            ),
            Ok(())
        );
        load.add(Group::Senior);
        assert_eq!(full(Group::Senior, early, &load), "slot full");
    }

    fn entry(resource: &str, status: Status, end: u64) -> IndexEntry {
        IndexEntry {
            resource: resource.into(),
            status,
            group: Group::Adult,
            end,
            waitlisted_at: None,
        }
    }

    #[test]
    fn history_counts_the_residents_bookings_of_the_resource() {
        let cal = Calendar::default();
        let yoga = Resource::from_config(&config()).unwrap();
        let slot = monday_slot(&cal, &yoga);
        let now = slot.start - DAY_MS;
        let wednesday = slot.start + 2 * DAY_MS;
        let next_monday = slot.start + 7 * DAY_MS;
        let morning = slot.start - 10 * HOUR_MS;
        // (slot start, entry, expected (on_day, in_week, active, holds_slot))
        for (start, entry, expect) in [
            (
                morning,
                entry("yoga", Status::Booked, morning + HOUR_MS),
                (1, 1, 1, false),
            ),
            (
                morning,
                entry("yoga", Status::NoShow, morning + HOUR_MS),
                (1, 1, 0, false),
            ),
            (
                morning,
                entry("yoga", Status::CheckedIn, morning + HOUR_MS),
                (1, 1, 0, false),
            ),
            (
                morning,
                entry("yoga", Status::Cancelled, morning + HOUR_MS),
                (0, 0, 0, false),
            ),
            (
                morning,
                entry("gym", Status::Booked, morning + HOUR_MS),
                (0, 0, 0, false),
            ),
            (
                wednesday,
                entry("yoga", Status::Booked, wednesday + HOUR_MS),
                (0, 1, 1, false),
            ),
            (
                next_monday,
                entry("yoga", Status::Booked, next_monday + HOUR_MS),
                (0, 0, 1, false),
            ),
            (
                slot.start,
                entry("yoga", Status::Booked, slot.end),
                (1, 1, 1, true),
            ),
            (
                slot.start,
                entry("yoga", Status::Waitlisted, slot.end),
                (0, 0, 0, true),
            ),
            (
                slot.start,
                entry("yoga", Status::Offered, slot.end),
                (0, 0, 0, false),
            ),
            (
                now - HOUR_MS,
                entry("yoga", Status::Booked, now - 1),
                (0, 0, 0, false),
            ),
        ] {
            let got = history_of(&cal, "yoga", [(start, &entry)], slot, now, None);
            let got = (got.on_day, got.in_week, got.active, got.holds_slot);
            assert_eq!(got, expect, "{:?} at {start}", entry.status);
        }
        assert_eq!(
            history_from(&cal, slot, now),
            now - DAY_MS,
            "the day before now"
        );
        let friday = Slot {
            start: slot.start + 4 * DAY_MS,
            end: slot.end + 4 * DAY_MS,
        };
        assert_eq!(
            history_from(&cal, friday, friday.start - DAY_MS),
            cal.midnight(date(2027, 1, 4)),
            "the slot's Monday"
        );
    }

    fn rules() -> ScheduleConfig {
        ScheduleConfig::default()
    }

    #[test]
    fn strikes_block_after_three_in_90_days_for_14_days() {
        let rules = rules();
        assert_eq!(
            (rules.strikes_to_block, rules.strike_days, rules.block_days),
            (3, 90, 14)
        );
        let day = |d: u64| d * DAY_MS;
        for (strikes, expect) in [
            (vec![], None),
            (vec![day(1)], None),
            (vec![day(1), day(2)], None),
            (vec![day(1), day(2), day(3)], Some(day(17))),
            (vec![day(1), day(2), day(3), day(40)], Some(day(54))),
        ] {
            assert_eq!(blocked_by_strikes(&strikes, &rules), expect, "{strikes:?}");
        }
        assert_eq!(strikes_from(day(100), &rules), day(10));
        assert_eq!(strikes_from(day(1), &rules), 0);
    }

    #[test]
    fn a_cancel_within_the_hour_before_the_start_is_late() {
        let rules = rules();
        assert_eq!(rules.late_cancel_minutes, 60);
        let start = 10 * HOUR_MS;
        for (now, expect) in [
            (start - 2 * HOUR_MS, false),
            (start - HOUR_MS - 1, false),
            (start - HOUR_MS, true),
            (start - 30 * MINUTE_MS, true),
            (start + 1, true),
        ] {
            assert_eq!(
                is_late_cancel(now, start, &rules),
                expect,
                "{} min before",
                (start as i64 - now as i64) / 60_000
            );
        }
    }

    #[test]
    fn a_booked_place_has_its_milestones_and_check_in_window() {
        let rules = rules();
        let mut piano = config();
        let slot = Slot {
            start: 10 * HOUR_MS,
            end: 11 * HOUR_MS,
        };
        let grace = 10 * MINUTE_MS;
        let unbound = Resource::from_config(&piano).unwrap();
        assert_eq!(
            milestones_of_booked(&unbound, slot, 0, &rules),
            [
                (slot.start + grace, Milestone::Grace),
                (slot.end, Milestone::End)
            ]
        );
        piano.devices = vec!["piano1".into()];
        let bound = Resource::from_config(&piano).unwrap();
        let late = slot.start + 5 * MINUTE_MS;
        assert_eq!(
            milestones_of_booked(&bound, slot, late, &rules),
            [
                (late, Milestone::Start),
                (late + grace, Milestone::Grace),
                (slot.end, Milestone::End)
            ],
            "booked after the start: unlocked at once, grace from then"
        );
        assert_eq!(
            check_in_window(slot, &rules),
            (slot.start - grace, slot.end)
        );
    }
}
