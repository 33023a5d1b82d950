//! The ranges of the times and counts the API takes, checked before a
//! handler hands them to the calendar, the desk or the store, so no request
//! can overflow the schedule's arithmetic or walk an unbounded number of
//! days.
//!
//! - Instants (`from`, `to`, `slot_start`, the clock's `now`) lie in the
//!   years 2000–2199 (UTC): far inside what `protocol::calendar` handles
//!   (to 9999), and far enough from `u64::MAX` that adding any configured
//!   duration (a horizon of 366 days, a grace, a lookahead) cannot overflow.
//! - Days (a center's `from`/`to`) lie in the same years; a child's birth
//!   date from 1900.
//! - Windows: 31 days for availability and booking lists (`MAX_WINDOW_MS`),
//!   366 days for a center's days.
//! - Page sizes: 1 to `MAX_PAGE` (each list's default: `DEFAULT_PAGE`, the
//!   device list's 1,000); a page's `next`, passed back as `after`, is the
//!   last record's key in hex (opaque to the caller), at most `MAX_AFTER`
//!   characters.
//!
//! A query parameter out of range is a 400 naming it; a body field a 422
//! (how the API answers every body field).

use axum::http::StatusCode;
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{error, HttpError};

/// 2000-01-01T00:00:00Z, the earliest instant the API takes.
pub const EARLIEST_MS: u64 = 946_684_800_000;
/// 2200-01-01T00:00:00Z: every instant the API takes lies before it.
pub const END_MS: u64 = 7_258_118_400_000;
/// The years of the days the API takes.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=2199;
/// A child's birth date may be this early.
const FIRST_BIRTH_YEAR: i32 = 1900;
/// Longest window an availability or booking list answers at once.
pub const MAX_WINDOW_MS: u64 = 31 * 24 * 3_600_000;
/// Most items a list answers at once.
pub const MAX_PAGE: usize = 10_000;
/// Items a list answers when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// Longest `after` taken (hex of a store key: ids are short).
const MAX_AFTER: usize = 512;

/// `ms` if it lies in the API's years, else a 400 naming `field`.
pub fn instant(field: &str, ms: u64) -> Result<u64, HttpError> {
    if (EARLIEST_MS..END_MS).contains(&ms) {
        return Ok(ms);
    }
    Err(error(
        StatusCode::BAD_REQUEST,
        format!(
            "`{field}` must lie in the years 2000-2199 (unix ms {EARLIEST_MS}..{END_MS}), got {ms}"
        ),
    ))
}

/// `day` if it lies in the API's years, else a 400 naming `field`.
pub fn day(field: &str, day: NaiveDate) -> Result<NaiveDate, HttpError> {
    if YEARS.contains(&day.year()) {
        return Ok(day);
    }
    Err(error(
        StatusCode::BAD_REQUEST,
        format!("`{field}` must be a day in the years 2000-2199, got {day}"),
    ))
}

/// A child's birth date: from 1900 to the end of the API's years, else a
/// 422 naming `field`.
pub fn birth_date(field: &str, day: NaiveDate) -> Result<NaiveDate, HttpError> {
    if (FIRST_BIRTH_YEAR..=*YEARS.end()).contains(&day.year()) {
        return Ok(day);
    }
    Err(error(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("`{field}` must be a date from {FIRST_BIRTH_YEAR} to 2199, got {day}"),
    ))
}

/// A page size: `default` when not given, else 1 to `MAX_PAGE`.
pub fn page(field: &str, given: Option<usize>, default: usize) -> Result<usize, HttpError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("`{field}` must be 1-{MAX_PAGE}, got {n}"),
        )),
    }
}

/// A paged list's query: `after` (the `next` of the page before) and
/// `limit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next` of the page before, as it was answered.
    #[param(pattern = "^[0-9a-f]{0,512}$")]
    pub after: Option<String>,
    /// 1-10000; 100 when not given.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// Where a page starts and how long it is, checked.
pub struct PageAt {
    pub after: Option<Vec<u8>>,
    pub limit: usize,
}

impl PageQuery {
    /// `after` decoded and `limit` in range (`DEFAULT_PAGE` when absent),
    /// else a 400 naming the field.
    pub fn checked(&self) -> Result<PageAt, HttpError> {
        let limit = page("limit", self.limit, DEFAULT_PAGE)?;
        let after = match &self.after {
            None => None,
            Some(text) => Some(
                (text.len() <= MAX_AFTER)
                    .then(|| hex::decode(text).ok())
                    .flatten()
                    .ok_or_else(|| {
                        error(
                            StatusCode::BAD_REQUEST,
                            "`after` must be a page's `next` as it was answered",
                        )
                    })?,
            ),
        };
        Ok(PageAt { after, limit })
    }
}

/// What a list answers as `next`: the store's cursor in hex.
pub fn next_of(cursor: Option<Vec<u8>>) -> Option<String> {
    cursor.map(hex::encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn instants_and_days_lie_in_2000_to_2199() {
        for (ms, ok) in [
            (0, false),
            (EARLIEST_MS - 1, false),
            (EARLIEST_MS, true),
            (1_799_020_800_000, true),
            (END_MS - 1, true),
            (END_MS, false),
            (u64::MAX, false),
        ] {
            assert_eq!(instant("from", ms).is_ok(), ok, "{ms}");
        }
        let refused = instant("slot_start", u64::MAX).err().unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refused.detail().contains("`slot_start`"), "{refused:?}");
        for (day_, ok) in [
            (date(1999, 12, 31), false),
            (date(2000, 1, 1), true),
            (date(2199, 12, 31), true),
            (date(2200, 1, 1), false),
        ] {
            assert_eq!(day("to", day_).is_ok(), ok, "{day_}");
        }
        assert!(birth_date("child_birthdate", date(1900, 1, 1)).is_ok());
        assert!(birth_date("child_birthdate", date(1, 1, 1)).is_err());
    }

    #[test]
    fn pages_hold_1_to_the_maximum() {
        assert_eq!(page("limit", None, 1_000).ok(), Some(1_000));
        assert_eq!(page("limit", Some(1), 1_000).ok(), Some(1));
        assert_eq!(page("limit", Some(MAX_PAGE), 1_000).ok(), Some(MAX_PAGE));
        for bad in [0, MAX_PAGE + 1, usize::MAX] {
            let refused = page("limit", Some(bad), 1_000).err().unwrap();
            assert!(refused.detail().contains("`limit`"), "{refused:?}");
        }
    }

    #[test]
    fn after_is_a_page_next_in_hex() {
        let at = |after: &str| {
            PageQuery {
                after: Some(after.into()),
                limit: None,
            }
            .checked()
        };
        let checked = at(&next_of(Some(b"d1\0e7".to_vec())).unwrap())
            .ok()
            .unwrap();
        assert_eq!(checked.after.as_deref(), Some(&b"d1\0e7"[..]));
        assert_eq!(checked.limit, DEFAULT_PAGE);
        for bad in ["zz", "abc", &"00".repeat(MAX_AFTER)] {
            let refused = at(bad).err().unwrap();
            assert!(refused.detail().contains("`after`"), "{refused:?}");
        }
    }
}
