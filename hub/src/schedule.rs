//! Time-slot scheduling rules (pure): the scheduling clock, a resource's
//! slots in the center's time zone, and whether a booking may be taken.
//!
//! A request is checked against an ordered rule list; the first failing
//! rule names the refusal (422 with `rule`), and a slot without a free place
//! for the resident's group is `Full` (409, waitlist offered). Places held
//! for a group (fair shares) count as taken for the other groups until
//! `release_before_minutes` before the slot. The desk (`bookings.rs`) owns
//! the writes; this module only decides.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Weekday};
use protocol::calendar::Calendar;
use serde::Serialize;

use crate::access::{parse_hhmm, OpeningHours};
use crate::config::{is_label, DutyConfig};
use crate::records::{Group, ResourceConfig, SlotLoad};

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// The clock the schedule runs on: the system's, or one standing still at a
/// configured instant that only moves when told (tests, demos).
#[derive(Debug)]
pub enum Clock {
    System,
    Fixed(AtomicU64),
}

impl Clock {
    /// `system` or `fixed:<RFC 3339>`.
    pub fn parse(text: &str) -> Result<Clock, String> {
        if text == "system" {
            return Ok(Clock::System);
        }
        let Some(instant) = text.strip_prefix("fixed:") else {
            return Err(format!(
                "{text:?}: give \"system\" or \"fixed:<RFC 3339 time>\""
            ));
        };
        let at = DateTime::parse_from_rfc3339(instant)
            .map_err(|e| format!("{instant:?} is not an RFC 3339 time: {e}"))?;
        Ok(Clock::Fixed(AtomicU64::new(
            at.timestamp_millis().max(0) as u64
        )))
    }

    /// Now, in unix ms.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => crate::clock::unix_ms(),
            Clock::Fixed(at) => at.load(Ordering::SeqCst),
        }
    }

    /// Moves a fixed clock forward to `ms`. A system clock cannot be moved;
    /// nor can any clock go back.
    pub fn advance_to(&self, ms: u64) -> Result<u64, &'static str> {
        match self {
            Clock::System => Err("the schedule runs on the system clock"),
            Clock::Fixed(at) => {
                let previous = at.fetch_max(ms, Ordering::SeqCst);
                if ms < previous {
                    return Err("the clock never goes back");
                }
                Ok(ms)
            }
        }
    }
}

/// One slot of a resource, in unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Layout {
    /// Back-to-back slots of `minutes` while the resource is open.
    Every { hours: OpeningHours, minutes: u32 },
    /// Explicit slots on some weekdays.
    Listed(Vec<ListedSlot>),
}

#[derive(Debug, Clone, PartialEq)]
struct ListedSlot {
    days: Vec<Weekday>,
    start: NaiveTime,
    end: NaiveTime,
}

/// A resource, checked and compiled from its config entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub config: ResourceConfig,
    layout: Layout,
    /// Places held per group (rounded up from the percent).
    held: Vec<(Group, u32)>,
}

type FieldError = (String, String);

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    (field.to_string(), reason.into())
}

impl Resource {
    /// Checks an entry; an error names the field (relative to the entry).
    pub fn from_config(config: &ResourceConfig) -> Result<Resource, FieldError> {
        for (field, value) in [
            ("id", &config.id),
            ("center", &config.center),
            ("kind", &config.kind),
            ("room", &config.room),
        ] {
            if !is_label(value) {
                return Err(field_error(field, "1-64 letters, digits, '-' or '_'"));
            }
        }
        if config
            .devices
            .iter()
            .any(|d| !protocol::is_valid_device_id(d))
        {
            return Err(field_error(
                "devices",
                "device ids are 1-48 ASCII letters or digits",
            ));
        }
        if config.capacity == 0 {
            return Err(field_error("capacity", "must be at least 1"));
        }
        if config.horizon_days == 0 {
            return Err(field_error("horizon_days", "must be at least 1"));
        }
        check_prices(config)?;
        if let Some([min, max]) = config.child_age_months {
            if min > max {
                return Err(field_error(
                    "child_age_months",
                    "[min, max] with min <= max",
                ));
            }
        }
        let held = compile_shares(config)?;
        let layout = compile_layout(config)?;
        Ok(Resource {
            config: config.clone(),
            layout,
            held,
        })
    }

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
                .filter(|s| s.days.is_empty() || s.days.contains(&day.weekday()))
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
                            && start + length <= close
                    })
                    .then_some(Slot {
                        start,
                        end: start + length,
                    })
            }
            Layout::Listed(_) => days
                .flat_map(|d| self.slots_on(calendar, d))
                .find(|slot| slot.start == start),
        }
    }

    /// Slots starting in `[from, to)`.
    pub fn slots_between(&self, calendar: &Calendar, from: u64, to: u64) -> Vec<Slot> {
        let mut slots = Vec::new();
        let mut day = calendar.day(from);
        while calendar.midnight(day) < to {
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

    /// Places held for `group` in a slot (before release).
    pub fn held_for(&self, group: Group) -> u32 {
        self.held
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0, |(_, n)| *n)
    }

    /// Whether held places still hold at `now` for a slot starting `start`.
    pub fn shares_hold(&self, start: u64, now: u64) -> bool {
        !self.held.is_empty()
            && now + u64::from(self.config.release_before_minutes) * MINUTE_MS < start
    }
}

fn check_prices(config: &ResourceConfig) -> Result<(), FieldError> {
    if !config.market_price.is_finite() || config.market_price <= 0.0 {
        return Err(field_error("market_price", "must be a price above 0"));
    }
    if !config.price.is_finite() || config.price < 0.0 {
        return Err(field_error("price", "must be a price of 0 or more"));
    }
    if config.price >= config.market_price {
        return Err(field_error(
            "price",
            format!(
                "{} is not below the market price {}: the centers stay below market",
                config.price, config.market_price
            ),
        ));
    }
    Ok(())
}

fn compile_shares(config: &ResourceConfig) -> Result<Vec<(Group, u32)>, FieldError> {
    let mut held = Vec::new();
    for share in &config.shares {
        let group = Group::parse(&share.group)
            .ok_or_else(|| field_error("shares", format!("unknown group {:?}", share.group)))?;
        if held.iter().any(|(g, _)| *g == group) {
            return Err(field_error(
                "shares",
                format!("group {:?} twice", share.group),
            ));
        }
        held.push((group, (config.capacity * share.percent).div_ceil(100)));
    }
    if held.iter().map(|(_, n)| n).sum::<u32>() > config.capacity {
        return Err(field_error("shares", "the held places exceed the capacity"));
    }
    Ok(held)
}

fn compile_layout(config: &ResourceConfig) -> Result<Layout, FieldError> {
    match (config.slot_minutes, config.slots.is_empty()) {
        (Some(_), false) => Err(field_error("slots", "give slot_minutes or slots, not both")),
        (None, true) => Err(field_error(
            "slot_minutes",
            "missing: give slot_minutes or slots",
        )),
        (Some(0), true) => Err(field_error("slot_minutes", "must be at least 1")),
        (Some(minutes), true) => {
            let hours = OpeningHours::parse(config.hours.as_deref(), &config.open, &config.close)
                .map_err(|(field, reason)| field_error(field, reason))?;
            Ok(Layout::Every { hours, minutes })
        }
        (None, false) => config
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let at = |field: &str, reason: String| {
                    field_error(&format!("slots[{i}].{field}"), reason)
                };
                let (days, start, end) = day_window(&slot.days, &slot.start, &slot.end)
                    .map_err(|(field, reason)| at(field, reason))?;
                Ok(ListedSlot { days, start, end })
            })
            .collect::<Result<_, _>>()
            .map(Layout::Listed),
    }
}

/// Weekdays and a same-day `start`-`end` window, checked.
fn day_window(
    days: &[String],
    start: &str,
    end: &str,
) -> Result<(Vec<Weekday>, NaiveTime, NaiveTime), (&'static str, String)> {
    let start = parse_hhmm(start).map_err(|e| ("start", e))?;
    let end = parse_hhmm(end).map_err(|e| ("end", e))?;
    if end <= start {
        return Err(("end", "must be after start (same day)".into()));
    }
    let days = days
        .iter()
        .map(|d| {
            d.parse::<Weekday>()
                .map_err(|_| ("days", format!("{d:?} is not mon..sun")))
        })
        .collect::<Result<_, _>>()?;
    Ok((days, start, end))
}

/// A manager's duty shift in a room.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub center: String,
    pub room: String,
    pub manager: String,
    days: Vec<Weekday>,
    start: NaiveTime,
    end: NaiveTime,
}

impl Shift {
    pub fn from_config(config: &DutyConfig) -> Result<Shift, FieldError> {
        for (field, value) in [
            ("center", &config.center),
            ("room", &config.room),
            ("manager", &config.manager),
        ] {
            if !is_label(value) {
                return Err(field_error(field, "1-64 letters, digits, '-' or '_'"));
            }
        }
        let (days, start, end) = day_window(&config.days, &config.start, &config.end)
            .map_err(|(field, reason)| field_error(field, reason))?;
        Ok(Shift {
            center: config.center.clone(),
            room: config.room.clone(),
            manager: config.manager.clone(),
            days,
            start,
            end,
        })
    }

    fn covers(&self, calendar: &Calendar, slot: Slot) -> bool {
        let day = calendar.day(slot.start);
        (self.days.is_empty() || self.days.contains(&day.weekday()))
            && calendar.at(day, self.start) <= slot.start
            && slot.end <= calendar.at(day, self.end)
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

/// The duty roster of every room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    shifts: Vec<Shift>,
}

impl Roster {
    /// From validated config entries.
    pub fn from_config(duty: &[DutyConfig]) -> Roster {
        Roster {
            // invariant: `Config::validate` checked every entry.
            shifts: duty
                .iter()
                .filter_map(|d| Shift::from_config(d).ok())
                .collect(),
        }
    }

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
        let covering: Vec<&&Shift> = room.iter().filter(|s| s.covers(calendar, slot)).collect();
        if covering.is_empty() {
            return Duty::Unstaffed;
        }
        let turn = (slot.start / MINUTE_MS) as usize % covering.len();
        Duty::OnDuty(covering[turn].manager.clone())
    }
}

/// When a resource open `hours` opens and closes for slots starting on `day`.
fn opening_window(calendar: &Calendar, day: NaiveDate, hours: OpeningHours) -> (u64, u64) {
    match hours {
        OpeningHours::Always => (calendar.midnight(day), calendar.midnight(day) + DAY_MS),
        OpeningHours::Between { open, close } => {
            let start = calendar.at(day, open);
            let close_day = if close > open {
                day
            } else {
                day.succ_opt().unwrap_or(day)
            };
            (start, calendar.at(close_day, close))
        }
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

/// A booking request, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Request {
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

/// Checks a request against the rules in order, then the places.
pub fn decide(
    resource: &Resource,
    calendar: &Calendar,
    request: &Request,
    history: &History,
    load: &SlotLoad,
) -> Result<(), Refusal> {
    check_rules(resource, calendar, request, history)?;
    let held = resource.shares_hold(request.slot.start, request.now);
    if free_places(resource, load, Some(request.group), held) == 0 {
        let reason = if held && free_places(resource, load, None, false) > 0 {
            format!(
                "slot full for group {}: the free places are held for other groups until {} min before the start",
                request.group.as_str(),
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
    request: &Request,
    history: &History,
) -> Result<(), Refusal> {
    let config = &resource.config;
    if request.now >= request.slot.start {
        return Err(broken("slot_started", "the slot has started or is over"));
    }
    if request.slot.start > request.now + u64::from(config.horizon_days) * DAY_MS {
        return Err(broken(
            "horizon",
            format!("slots open for booking {} days ahead", config.horizon_days),
        ));
    }
    if let Some(until) = history.blocked_until.filter(|u| *u > request.now) {
        return Err(broken(
            "strikes",
            format!(
                "blocked after repeated no-shows until {}",
                calendar.local(until).to_rfc3339()
            ),
        ));
    }
    if let Some([min, max]) = config.child_age_months {
        check_child_age(calendar, request, min, max)?;
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
    request: &Request,
    min: u32,
    max: u32,
) -> Result<(), Refusal> {
    let Some(birth) = request.child_birthdate else {
        return Err(broken(
            "child_age",
            "`child_birthdate` is required for this resource",
        ));
    };
    let on = calendar.day(request.slot.start);
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

/// The local Monday midnight starting the week of `ms`, and the next one.
pub fn week_of(calendar: &Calendar, ms: u64) -> (u64, u64) {
    let day = calendar.day(ms);
    let monday = day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()));
    let start = calendar.midnight(monday);
    (start, calendar.midnight(monday + chrono::Duration::days(7)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ShareConfig, SlotConfig};

    fn config() -> ResourceConfig {
        ResourceConfig {
            id: "yoga".into(),
            center: "c1".into(),
            kind: "class".into(),
            room: "hall".into(),
            devices: vec![],
            capacity: 10,
            slot_minutes: None,
            hours: None,
            open: None,
            close: None,
            slots: vec![SlotConfig {
                days: vec!["mon".into(), "wed".into(), "fri".into()],
                start: "19:00".into(),
                end: "20:00".into(),
            }],
            horizon_days: 7,
            price: 0.0,
            market_price: 80.0,
            child_age_months: None,
            per_day: Some(1),
            per_week: Some(2),
            max_active: None,
            shares: vec![],
            release_before_minutes: 120,
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

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

    #[test]
    fn a_24h_resource_has_back_to_back_slots_all_day() {
        let cal = Calendar::default();
        let mut gym = config();
        gym.slots.clear();
        gym.slot_minutes = Some(120);
        gym.hours = Some("24h".into());
        let gym = Resource::from_config(&gym).unwrap();
        assert_eq!(gym.slots_on(&cal, date(2027, 1, 4)).len(), 12);
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
    fn a_price_not_below_market_is_refused_naming_the_field() {
        let mut dear = config();
        dear.price = 80.0;
        assert_eq!(Resource::from_config(&dear).unwrap_err().0, "price");
        let mut both = config();
        both.slot_minutes = Some(30);
        assert_eq!(Resource::from_config(&both).unwrap_err().0, "slots");
    }

    #[test]
    fn rules_are_checked_in_order_and_named() {
        let cal = Calendar::default();
        let mut childcare = config();
        childcare.child_age_months = Some([18, 36]);
        let resource = Resource::from_config(&childcare).unwrap();
        let slot = resource.slots_on(&cal, date(2027, 1, 4))[0];
        let request = Request {
            slot,
            group: Group::Child,
            child_birthdate: Some(date(2026, 1, 1)),
            now: slot.start - DAY_MS,
        };
        let rule = |request: &Request, history: &History| match decide(
            &resource,
            &cal,
            request,
            history,
            &SlotLoad::default(),
        ) {
            Err(Refusal::Rule { rule, .. }) => rule,
            Err(Refusal::Full { .. }) => "full",
            Ok(()) => "ok",
        };
        assert_eq!(
            rule(&request, &History::default()),
            "child_age",
            "12 months old"
        );
        let request = Request {
            child_birthdate: Some(date(2025, 1, 4)),
            ..request
        };
        assert_eq!(rule(&request, &History::default()), "ok", "24 months old");
        let busy = History {
            on_day: 1,
            ..History::default()
        };
        assert_eq!(rule(&request, &busy), "quota_per_day");
        let week = History {
            in_week: 2,
            ..History::default()
        };
        assert_eq!(rule(&request, &week), "quota_per_week");
        let late = Request {
            now: slot.start,
            ..request
        };
        assert_eq!(rule(&late, &History::default()), "slot_started");
        let early = Request {
            now: slot.start - 8 * DAY_MS,
            ..request
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
}
