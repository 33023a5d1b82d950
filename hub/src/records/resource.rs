//! A bookable resource's entry, as the config file, the API and the store
//! hold it (`settings::Resource` is its checked, compiled form). The shape
//! is the API's (`protocol::api`), shared with device-sim and the tests.

pub use protocol::api::{ResourceConfig, ShareConfig, SlotConfig};

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
