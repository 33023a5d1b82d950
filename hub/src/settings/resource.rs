//! A bookable resource, checked and compiled from its entry (a
//! `[[resources]]` table, or a `PUT /api/v1/resources/{id}` body): where
//! its slots fall and the places held for groups. Where the slots fall on a
//! calendar, and who may book them, is `schedule`'s.

use crate::records::{Group, ResourceConfig};

use super::opening::{DayWindow, OpeningHours};
use super::{is_label, FieldError};

/// How a resource's day is cut into slots.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Back-to-back slots of `minutes` while the resource is open.
    Every { hours: OpeningHours, minutes: u32 },
    /// Explicit slots on some weekdays.
    Listed(Vec<DayWindow>),
}

/// A resource, checked and compiled from its entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The entry as given (listed by the API, kept by the store).
    pub config: ResourceConfig,
    pub layout: Layout,
    /// Places held per group (rounded up from the percent).
    pub held: Vec<(Group, u32)>,
}

/// The ranges of an entry's numbers: room for any center, and small enough
/// that the schedule's arithmetic cannot overflow (places times a percent,
/// a horizon in ms added to an instant) nor walk more than a year of days.
pub const MAX_CAPACITY: u32 = 10_000;
pub const MAX_HORIZON_DAYS: u32 = 366;
const MINUTES_A_DAY: u32 = 24 * 60;
/// Shorter slots would make a month's availability tens of thousands of
/// slots long.
const MIN_SLOT_MINUTES: u32 = 5;
/// Per-resident quotas (`per_day`, `per_week`, `max_active`).
const MAX_QUOTA: u32 = 1_000;
const MAX_DEVICES: usize = 64;
/// Listed slots of an entry (`[[resources.slots]]`).
const MAX_LISTED_SLOTS: usize = 96;
/// A child's age in months: childcare and the like end at 18 years.
const MAX_CHILD_AGE_MONTHS: u32 = 216;
/// Yuan per slot.
const MAX_PRICE: f64 = 1_000_000.0;

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
        check_ranges(config)?;
        check_prices(config)?;
        if let Some([min, max]) = config.child_age_months {
            if min > max || max > MAX_CHILD_AGE_MONTHS {
                return Err(field_error(
                    "child_age_months",
                    format!("[min, max] with min <= max <= {MAX_CHILD_AGE_MONTHS}"),
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

    /// Places held for `group` in a slot (before release).
    pub fn held_for(&self, group: Group) -> u32 {
        self.held
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0, |(_, n)| *n)
    }
}

/// The entry's counts and lengths within their ranges.
fn check_ranges(config: &ResourceConfig) -> Result<(), FieldError> {
    let release_max = MAX_HORIZON_DAYS * MINUTES_A_DAY;
    let numbers = [
        ("capacity", Some(config.capacity), 1, MAX_CAPACITY),
        (
            "horizon_days",
            Some(config.horizon_days),
            1,
            MAX_HORIZON_DAYS,
        ),
        (
            "slot_minutes",
            config.slot_minutes,
            MIN_SLOT_MINUTES,
            MINUTES_A_DAY,
        ),
        ("per_day", config.per_day, 1, MAX_QUOTA),
        ("per_week", config.per_week, 1, MAX_QUOTA),
        ("max_active", config.max_active, 1, MAX_QUOTA),
        (
            "release_before_minutes",
            Some(config.release_before_minutes),
            0,
            release_max,
        ),
    ];
    for (field, value, min, max) in numbers {
        if let Some(value) = value.filter(|v| !(min..=max).contains(v)) {
            return Err(field_error(
                field,
                format!("must be {min}-{max}, got {value}"),
            ));
        }
    }
    for (field, len, max) in [
        ("devices", config.devices.len(), MAX_DEVICES),
        ("slots", config.slots.len(), MAX_LISTED_SLOTS),
    ] {
        if len > max {
            return Err(field_error(field, format!("at most {max} entries")));
        }
    }
    Ok(())
}

fn check_prices(config: &ResourceConfig) -> Result<(), FieldError> {
    if !config.market_price.is_finite() || config.market_price <= 0.0 {
        return Err(field_error("market_price", "must be a price above 0"));
    }
    if config.market_price > MAX_PRICE {
        return Err(field_error(
            "market_price",
            format!("must be at most {MAX_PRICE}"),
        ));
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
        if !(1..=100).contains(&share.percent) {
            return Err(field_error("shares", "a percent is 1-100"));
        }
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
        (Some(minutes), true) => {
            let hours = OpeningHours::from_resource(config)
                .map_err(|(field, reason)| field_error(field, reason))?;
            Ok(Layout::Every { hours, minutes })
        }
        (None, false) => config
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                DayWindow::parse(&slot.days, &slot.start, &slot.end)
                    .map_err(|(field, reason)| field_error(&format!("slots[{i}].{field}"), reason))
            })
            .collect::<Result<_, _>>()
            .map(Layout::Listed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ShareConfig;

    fn config() -> ResourceConfig {
        crate::records::resource::yoga()
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
    fn numbers_out_of_range_are_refused_naming_the_field() {
        let every_minute = |c: &mut ResourceConfig| {
            c.slots.clear();
            c.hours = Some("24h".into());
            c.slot_minutes = Some(1);
        };
        type Change = fn(&mut ResourceConfig);
        let cases: [(Change, &str); 13] = [
            (|c| c.capacity = 0, "capacity"),
            (|c| c.capacity = u32::MAX, "capacity"),
            (|c| c.horizon_days = 0, "horizon_days"),
            (|c| c.horizon_days = 367, "horizon_days"),
            (every_minute, "slot_minutes"),
            (|c| c.per_day = Some(0), "per_day"),
            (|c| c.per_week = Some(u32::MAX), "per_week"),
            (|c| c.max_active = Some(1_001), "max_active"),
            (
                |c| c.release_before_minutes = u32::MAX,
                "release_before_minutes",
            ),
            (
                |c| c.child_age_months = Some([0, u32::MAX]),
                "child_age_months",
            ),
            (|c| c.market_price = 1e300, "market_price"),
            (|c| c.devices = vec!["d1".into(); 65], "devices"),
            (
                |c| {
                    c.capacity = 10_000;
                    c.shares = vec![ShareConfig {
                        group: "senior".into(),
                        percent: u32::MAX,
                    }];
                },
                "shares",
            ),
        ];
        for (change, field) in cases {
            let mut entry = config();
            change(&mut entry);
            assert_eq!(
                Resource::from_config(&entry).map(drop).map_err(|e| e.0),
                Err(field.to_string())
            );
        }
        let mut widest = config();
        widest.capacity = MAX_CAPACITY;
        widest.horizon_days = MAX_HORIZON_DAYS;
        widest.shares = vec![ShareConfig {
            group: "senior".into(),
            percent: 100,
        }];
        assert!(Resource::from_config(&widest).is_ok());
    }

    #[test]
    fn shares_are_rounded_up_and_may_not_exceed_the_capacity() {
        let share = |group: &str, percent| ShareConfig {
            group: group.into(),
            percent,
        };
        for (shares, expect) in [
            (vec![share("senior", 20)], Ok(vec![(Group::Senior, 2)])),
            (vec![share("senior", 15)], Ok(vec![(Group::Senior, 2)])),
            (
                vec![share("senior", 50), share("child", 50)],
                Ok(vec![(Group::Senior, 5), (Group::Child, 5)]),
            ),
            (vec![share("senior", 60), share("child", 50)], Err("shares")),
            (vec![share("aliens", 10)], Err("shares")),
            (vec![share("child", 10), share("child", 10)], Err("shares")),
        ] {
            let got = Resource::from_config(&ResourceConfig {
                shares: shares.clone(),
                ..config()
            });
            let got = got.map(|r| r.held).map_err(|e| e.0);
            assert_eq!(got, expect.map_err(String::from), "{shares:?}");
        }
    }
}
