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

    /// Places held for `group` in a slot (before release).
    pub fn held_for(&self, group: Group) -> u32 {
        self.held
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0, |(_, n)| *n)
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
