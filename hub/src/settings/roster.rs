//! The duty roster: volunteer managers' shifts per room (`[[duty]]`),
//! checked. Who is on duty for a slot is `schedule`'s.

use super::opening::DayWindow;
use super::{is_label, DutyConfig, FieldError};

/// A manager's duty shift in a room.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub center: String,
    pub room: String,
    pub manager: String,
    pub window: DayWindow,
}

impl Shift {
    /// Checks an entry; an error names the field (relative to the entry).
    pub fn from_config(config: &DutyConfig) -> Result<Shift, FieldError> {
        for (field, value) in [
            ("center", &config.center),
            ("room", &config.room),
            ("manager", &config.manager),
        ] {
            if !is_label(value) {
                return Err((field.into(), "1-64 letters, digits, '-' or '_'".into()));
            }
        }
        let window = DayWindow::parse(&config.days, &config.start, &config.end)
            .map_err(|(field, reason)| (field.to_string(), reason))?;
        Ok(Shift {
            center: config.center.clone(),
            room: config.room.clone(),
            manager: config.manager.clone(),
            window,
        })
    }
}

/// The duty roster of every room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    pub shifts: Vec<Shift>,
}
