//! The centers' calendar: local days, midnights and closing times in the
//! centers' time zone (default Asia/Shanghai).
//!
//! Part of the contract: the hub files what it counts (visits, passages)
//! under the local day of the device's `ts`, and the simulator splits its
//! reports at local midnights the same way. Times written by people (the
//! API's query parameters, the simulator's `--start`, the hub's `fixed:`
//! clock) are read here too, the same way everywhere.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;

use crate::limits::MAX_TS_MS;

/// Why a written time was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not an RFC 3339 time")]
    NotRfc3339(String),
    #[error("`{0}` is before 1970")]
    BeforeEpoch(String),
    #[error("`{0}` is neither an RFC 3339 time nor a YYYY-MM-DD date")]
    NotInstant(String),
    #[error("`{0}` is not a date as YYYY-MM-DD")]
    NotDate(String),
}

/// Unix ms of an RFC 3339 time (`2027-01-04T08:00:00+08:00`).
pub fn parse_rfc3339(text: &str) -> Result<u64, TimeError> {
    let instant =
        DateTime::parse_from_rfc3339(text).map_err(|_| TimeError::NotRfc3339(text.into()))?;
    u64::try_from(instant.timestamp_millis()).map_err(|_| TimeError::BeforeEpoch(text.into()))
}

/// A date written `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, TimeError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| TimeError::NotDate(text.into()))
}

/// The days from `from` to `to` (both `YYYY-MM-DD`, both included) of a
/// query, at most `max_days` of them; the reason names the bad parameter
/// (the hub's and the district's day queries answer it with a 400).
pub fn day_range(from: &str, to: &str, max_days: i64) -> Result<(NaiveDate, NaiveDate), String> {
    let day = |field: &str, text: &str| {
        parse_date(text)
            .map_err(|_| format!("`{field}` must be a date as YYYY-MM-DD, got {text:?}"))
    };
    let (from, to) = (day("from", from)?, day("to", to)?);
    if to < from {
        return Err("`to` is before `from`".into());
    }
    if (to - from).num_days() >= max_days {
        return Err(format!("at most {max_days} days at once"));
    }
    Ok((from, to))
}

/// The centers' time zone unless configured otherwise.
pub const DEFAULT_TZ: Tz = chrono_tz::Asia::Shanghai;

/// The centers' calendar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calendar {
    pub tz: Tz,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar { tz: DEFAULT_TZ }
    }
}

impl Calendar {
    /// The local time of `ms`. Instants past [`MAX_TS_MS`] read as its last
    /// millisecond, so no input makes the calendar panic; the hub rejects
    /// such a `ts` before it gets here.
    pub fn local(&self, ms: u64) -> DateTime<Tz> {
        // In range, the cast is lossless and chrono holds the instant and its
        // local date with room to spare (its range is ±262,000 years).
        let ms = ms.min(MAX_TS_MS) as i64;
        DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
    }

    /// Unix ms of an instant written as an RFC 3339 time or as a local date
    /// `YYYY-MM-DD` (its midnight in this calendar's zone).
    pub fn parse_instant(&self, text: &str) -> Result<u64, TimeError> {
        match parse_rfc3339(text) {
            Err(TimeError::NotRfc3339(_)) => parse_date(text)
                .map(|day| self.midnight(day))
                .map_err(|_| TimeError::NotInstant(text.into())),
            parsed => parsed,
        }
    }

    /// The local date of `ms`.
    pub fn day(&self, ms: u64) -> NaiveDate {
        self.local(ms).date_naive()
    }

    pub fn is_weekend(&self, day: NaiveDate) -> bool {
        matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// Unix ms of `time` on local `day` (the earlier instant if a clock
    /// change makes it ambiguous, the next valid one if it is skipped).
    pub fn at(&self, day: NaiveDate, time: NaiveTime) -> u64 {
        let naive = day.and_time(time);
        let local = self
            .tz
            .from_local_datetime(&naive)
            .earliest()
            .or_else(|| {
                self.tz
                    .from_local_datetime(&(naive + chrono::Duration::hours(1)))
                    .earliest()
            })
            // invariant: no zone skips more than an hour.
            .expect("local time exists");
        local.timestamp_millis().max(0) as u64
    }

    /// Unix ms of the local midnight that starts `day`.
    pub fn midnight(&self, day: NaiveDate) -> u64 {
        self.at(day, NaiveTime::MIN)
    }

    /// The first local midnight strictly after `ms`.
    pub fn next_midnight(&self, ms: u64) -> u64 {
        // invariant: dates this side of year 262,000 have a successor.
        self.midnight(self.day(ms).succ_opt().expect("next day"))
    }

    /// The last time a room closing at `close` closed, at or before `ms`.
    pub fn last_closing(&self, ms: u64, close: NaiveTime) -> u64 {
        let today = self.day(ms);
        let closing = self.at(today, close);
        if closing <= ms {
            return closing;
        }
        today
            .pred_opt()
            .map(|yesterday| self.at(yesterday, close))
            .unwrap_or(0)
    }

    /// Splits `[from, to)` at local midnights, so no piece spans two days.
    /// One piece per day walked: callers bound the span (the hub's piano
    /// sessions last at most `limits::MAX_SESSION_MS`).
    pub fn split_days(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut pieces = Vec::new();
        let mut start = from;
        while start < to {
            let end = self.next_midnight(start).min(to);
            pieces.push((start, end));
            start = end;
        }
        pieces
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn day_ranges_name_the_bad_parameter() {
        let range = |from: &str, to: &str| day_range(from, to, 366);
        let day = |text: &str| parse_date(text).unwrap();
        assert_eq!(
            range("2027-01-04", "2027-01-10"),
            Ok((day("2027-01-04"), day("2027-01-10")))
        );
        for (from, to, reason) in [
            ("2027-13-01", "2027-01-10", "`from`"),
            ("2027-01-04", "x", "`to`"),
            ("2027-01-10", "2027-01-04", "before"),
            ("2020-01-01", "2027-01-04", "at most 366"),
        ] {
            let error = range(from, to).unwrap_err();
            assert!(error.contains(reason), "{error:?} should say {reason}");
        }
    }

    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn shanghai_days_start_at_16_utc() {
        let cal = Calendar::default();
        let midnight = cal.midnight(date(2026, 11, 28));
        assert_eq!(
            midnight, 1_795_795_200_000,
            "2026-11-27T16:00:00Z: Shanghai is UTC+8"
        );
        assert_eq!(cal.day(midnight), date(2026, 11, 28));
        assert_eq!(cal.day(midnight - 1), date(2026, 11, 27));
        assert!(cal.is_weekend(date(2026, 11, 28)));
        assert!(!cal.is_weekend(date(2026, 11, 27)));
    }

    #[test]
    fn windows_are_split_at_midnight_and_keep_their_length() {
        let cal = Calendar::default();
        let midnight = cal.midnight(date(2026, 11, 28));
        let hour = 3_600_000;
        let pieces = cal.split_days(midnight - hour, midnight + 25 * hour);
        assert_eq!(
            pieces,
            [
                (midnight - hour, midnight),
                (midnight, midnight + 24 * hour),
                (midnight + 24 * hour, midnight + 25 * hour)
            ]
        );
        assert!(cal.split_days(5, 5).is_empty());
    }

    #[test]
    fn instants_past_the_calendar_read_as_its_last_day() {
        let cal = Calendar::default();
        let last = date(9999, 12, 31).succ_opt().unwrap();
        for ms in [MAX_TS_MS, MAX_TS_MS + 1, 8_210_266_850_000_000, u64::MAX] {
            assert_eq!(
                cal.day(ms),
                last,
                "{ms}: 9999-12-31 UTC is 10000-01-01 in Shanghai"
            );
            assert!(cal.next_midnight(ms) > MAX_TS_MS);
            let close = NaiveTime::from_hms_opt(21, 30, 0).unwrap();
            assert!(cal.last_closing(ms, close) <= ms);
        }
        assert_eq!(cal.day(0), date(1970, 1, 1));
    }

    #[test]
    fn written_instants_are_rfc_3339_times_or_local_midnights() {
        let cal = Calendar::default();
        let midnight = cal.midnight(date(2026, 11, 28));
        for (text, expect) in [
            ("2026-11-28", Ok(midnight)),
            ("2026-11-27T16:00:00Z", Ok(midnight)),
            ("2026-11-28T00:00:00+08:00", Ok(midnight)),
            (
                "1969-12-31T23:59:59Z",
                Err(TimeError::BeforeEpoch("1969-12-31T23:59:59Z".into())),
            ),
            ("yesterday", Err(TimeError::NotInstant("yesterday".into()))),
            (
                "2026-13-01",
                Err(TimeError::NotInstant("2026-13-01".into())),
            ),
        ] {
            assert_eq!(cal.parse_instant(text), expect, "{text}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-28"),
            Err(TimeError::NotRfc3339("2026-11-28".into()))
        );
        assert_eq!(parse_date("2026-11-28"), Ok(date(2026, 11, 28)));
        assert!(parse_date("28.11.2026").is_err());
    }

    #[test]
    fn the_last_closing_is_today_after_close_and_yesterday_before() {
        let cal = Calendar::default();
        let day = date(2026, 11, 28);
        let close = NaiveTime::from_hms_opt(21, 30, 0).unwrap();
        let closing = cal.at(day, close);
        assert_eq!(cal.last_closing(closing, close), closing);
        assert_eq!(cal.last_closing(closing + 3_600_000, close), closing);
        let yesterday = cal.at(day.pred_opt().unwrap(), close);
        assert_eq!(cal.last_closing(closing - 1, close), yesterday);
        assert_eq!(cal.day(closing), day);
        assert_eq!(closing, 1_795_872_600_000, "21:30 +08:00 is 13:30 UTC");
    }
}
