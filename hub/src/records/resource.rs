//! A bookable resource's entry, as the config file, the API and the store
//! hold it (`settings::Resource` is its checked, compiled form).

use serde::{Deserialize, Serialize};

/// A bookable resource. Give `slot_minutes` with opening hours (`hours =
/// "24h"`, or `open` and `close`), or explicit `[[resources.slots]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub id: String,
    pub center: String,
    /// piano, therapy, gym, class, childcare, seat, ...
    pub kind: String,
    pub room: String,
    /// Devices commanded `unlock`/`lock` at slot start/end, whose events
    /// check bookings in, and whose faults block slots.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Places per slot.
    pub capacity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotConfig>,
    /// Days ahead a slot may be booked.
    #[serde(default = "default_horizon_days")]
    pub horizon_days: u32,
    /// Price per slot, in yuan; must stay below `market_price`.
    pub price: f64,
    /// What the market charges for the same slot.
    pub market_price: f64,
    /// `[min, max]` age in months of the child at the slot (childcare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_age_months: Option<[u32; 2]>,
    /// Bookings per resident per local day / per week (Monday to Sunday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_week: Option<u32>,
    /// Bookings a resident may hold for slots not yet ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active: Option<u32>,
    /// Places held for a group until `release_before_minutes` before the slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareConfig>,
    #[serde(default = "default_release_before_minutes")]
    pub release_before_minutes: u32,
}

fn default_horizon_days() -> u32 {
    7
}

fn default_release_before_minutes() -> u32 {
    120
}

/// Explicit slots: `start`-`end` (local `HH:MM`) on `days` (`mon`..`sun`;
/// empty: every day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    #[serde(default)]
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
}

/// A share of each slot's places held for a group (`child`, `youth`,
/// `adult`, `senior`), in percent of the capacity (rounded up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    pub group: String,
    pub percent: u32,
}

/// Yoga on Monday, Wednesday and Friday 19:00-20:00, 10 places, free (80
/// yuan at market), at most one booking a day and two a week: the entry the
/// rules' tests start from.
#[cfg(test)]
pub(crate) fn yoga() -> ResourceConfig {
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
