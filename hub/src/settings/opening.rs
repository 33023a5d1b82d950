//! Times of day and opening hours as the configuration writes them
//! (`HH:MM`, `hours = "24h"`, `open`/`close`, weekday lists), parsed into
//! typed values. What they mean over a calendar is `hours`'s.

use chrono::{NaiveTime, Weekday};

use crate::records::ResourceConfig;
use crate::settings::RoomConfig;

/// When a room or a resource is open, in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningHours {
    /// Day and night (the 24-hour gym).
    Always,
    /// From `open` (inclusive) to `close` (exclusive); `close` before `open`
    /// spans midnight.
    Between { open: NaiveTime, close: NaiveTime },
}

impl OpeningHours {
    /// Reads a room entry's hours; an error names the field and the reason.
    pub fn from_room(room: &RoomConfig) -> Result<OpeningHours, (&'static str, String)> {
        OpeningHours::parse(room.hours.as_deref(), &room.open, &room.close)
    }

    /// Reads a resource entry's hours; an error names the field.
    pub fn from_resource(
        resource: &ResourceConfig,
    ) -> Result<OpeningHours, (&'static str, String)> {
        OpeningHours::parse(resource.hours.as_deref(), &resource.open, &resource.close)
    }

    /// Reads `hours` or `open` and `close`; an error names the field.
    pub fn parse(
        hours: Option<&str>,
        open: &Option<String>,
        close: &Option<String>,
    ) -> Result<OpeningHours, (&'static str, String)> {
        match (hours, open, close) {
            (Some("24h"), None, None) => Ok(OpeningHours::Always),
            (Some(other), None, None) => Err((
                "hours",
                format!("{other:?}: the only value is \"24h\"; otherwise give open and close"),
            )),
            (Some(_), _, _) => Err(("hours", "give either hours or open and close".into())),
            (None, Some(open), Some(close)) => {
                let open = parse_hhmm(open).map_err(|e| ("open", e))?;
                let close = parse_hhmm(close).map_err(|e| ("close", e))?;
                if open == close {
                    return Err(("close", "equals open; use hours = \"24h\"".into()));
                }
                Ok(OpeningHours::Between { open, close })
            }
            (None, None, _) => Err((
                "hours",
                "missing: give hours = \"24h\" or open and close".into(),
            )),
            (None, Some(_), None) => Err(("close", "missing (open is given)".into())),
        }
    }
}

/// A time of day written `HH:MM`.
pub fn parse_hhmm(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day as HH:MM"))
}

/// A same-day window on some weekdays (empty: every day).
#[derive(Debug, Clone, PartialEq)]
pub struct DayWindow {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl DayWindow {
    /// Weekdays (`mon`..`sun`) and a same-day `start`-`end`, checked; an
    /// error names the field.
    pub fn parse(
        days: &[String],
        start: &str,
        end: &str,
    ) -> Result<DayWindow, (&'static str, String)> {
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
        Ok(DayWindow { days, start, end })
    }

    /// Whether the window is open on `day`.
    pub fn on(&self, day: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_config(hours: Option<&str>, open: Option<&str>, close: Option<&str>) -> RoomConfig {
        RoomConfig {
            center: "c".into(),
            id: "r".into(),
            capacity: 1,
            hours: hours.map(Into::into),
            open: open.map(Into::into),
            close: close.map(Into::into),
        }
    }

    #[test]
    fn bad_hours_name_their_field() {
        let field = |h, o, c| OpeningHours::from_room(&room_config(h, o, c)).map_err(|e| e.0);
        assert_eq!(field(Some("24h"), None, None), Ok(OpeningHours::Always));
        assert!(field(None, Some("07:00"), Some("22:00")).is_ok());
        assert_eq!(field(Some("allday"), None, None), Err("hours"));
        assert_eq!(field(Some("24h"), Some("07:00"), None), Err("hours"));
        assert_eq!(field(None, None, None), Err("hours"));
        assert_eq!(field(None, Some("7am"), Some("22:00")), Err("open"));
        assert_eq!(field(None, Some("07:00"), Some("24:00")), Err("close"));
        assert_eq!(field(None, Some("07:00"), None), Err("close"));
        assert_eq!(field(None, Some("07:00"), Some("07:00")), Err("close"));
    }

    #[test]
    fn day_windows_name_their_field() {
        let field = |days: &[&str], start, end| {
            let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
            DayWindow::parse(&days, start, end)
                .map(|_| ())
                .map_err(|e| e.0)
        };
        assert_eq!(field(&["mon", "fri"], "19:00", "20:00"), Ok(()));
        assert_eq!(field(&[], "08:30", "12:00"), Ok(()));
        assert_eq!(
            field(&["monday"], "19:00", "20:00"),
            Ok(()),
            "chrono reads long names"
        );
        assert_eq!(field(&["someday"], "19:00", "20:00"), Err("days"));
        assert_eq!(field(&[], "19:00", "19:00"), Err("end"));
        assert_eq!(field(&[], "7pm", "20:00"), Err("start"));
    }
}
