//! Opening hours and local days over the centers' calendar (pure): whether
//! a room is open at a time of day, when a resource open certain hours
//! opens and closes for slots starting on a day, an instant's time of day,
//! the week an instant falls in. The hours themselves are parsed once, in
//! `settings::opening`.

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};
use protocol::calendar::Calendar;

use crate::settings::OpeningHours;

const DAY_MS: u64 = 24 * 3_600_000;

impl OpeningHours {
    /// Whether the hours are open at local time `local`.
    pub fn is_open(self, local: NaiveTime) -> bool {
        match self {
            OpeningHours::Always => true,
            OpeningHours::Between { open, close } if open < close => local >= open && local < close,
            OpeningHours::Between { open, close } => local >= open || local < close,
        }
    }
}

/// When a resource open `hours` opens and closes for slots starting on
/// local `day` (the close may fall on the next day).
pub fn opening_window(calendar: &Calendar, day: NaiveDate, hours: OpeningHours) -> (u64, u64) {
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

/// The local time of day of `ms`, to the second (opening hours are
/// written to the minute).
pub fn time_of_day(calendar: &Calendar, ms: u64) -> NaiveTime {
    let local = calendar.local(ms);
    NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second()).unwrap_or(NaiveTime::MIN)
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
    use crate::settings::parse_hhmm;

    fn time(text: &str) -> NaiveTime {
        parse_hhmm(text).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn hours_may_span_midnight() {
        let night = OpeningHours::Between {
            open: time("20:00"),
            close: time("02:00"),
        };
        assert!(night.is_open(time("23:59")));
        assert!(night.is_open(time("01:59")));
        assert!(!night.is_open(time("02:00")));
        assert!(!night.is_open(time("12:00")));
    }

    #[test]
    fn opening_windows_in_local_time() {
        let cal = Calendar::default();
        let monday = date(2027, 1, 4);
        let midnight = cal.midnight(monday);
        let hour = 3_600_000;
        let between = |open, close| OpeningHours::Between {
            open: time(open),
            close: time(close),
        };
        for (hours, expect) in [
            (OpeningHours::Always, (midnight, midnight + 24 * hour)),
            (
                between("08:00", "22:00"),
                (midnight + 8 * hour, midnight + 22 * hour),
            ),
            (
                between("22:00", "02:00"),
                (midnight + 22 * hour, midnight + 26 * hour),
            ),
        ] {
            assert_eq!(opening_window(&cal, monday, hours), expect, "{hours:?}");
        }
    }

    #[test]
    fn times_of_day_and_weeks_are_local() {
        let cal = Calendar::default();
        let monday = cal.midnight(date(2027, 1, 4));
        let hour = 3_600_000;
        assert_eq!(
            time_of_day(&cal, monday + 19 * hour + 30_500),
            time("19:00") + chrono::Duration::seconds(30)
        );
        for (ms, expect) in [
            (monday, (monday, monday + 7 * 24 * hour)),
            (
                monday + 6 * 24 * hour + 23 * hour,
                (monday, monday + 7 * 24 * hour),
            ),
            (monday - 1, (monday - 7 * 24 * hour, monday)),
        ] {
            assert_eq!(week_of(&cal, ms), expect, "{ms}");
        }
    }
}
