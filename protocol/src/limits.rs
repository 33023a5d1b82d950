//! The ranges of the numbers a device sends (contract v1).
//!
//! The hub decodes every device number into a checked value before it
//! reaches the calendar, a loop or the store; a number outside its range
//! rejects the message. `ts` also has to fall in the hub's window around its
//! own clock (`[ingest] max_ts_behind_secs`, `max_ts_ahead_secs`), which is
//! the hub's setting, not the contract's.

/// The last instant the calendar handles (9999-12-31T23:59:59.999Z): every
/// `ts` lies in `0..=MAX_TS_MS`.
pub const MAX_TS_MS: u64 = 253_402_300_799_999;

/// The largest `seq` (2^53 − 1, the largest integer every JSON stack
/// carries exactly). `seq` starts at 1.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// The most people a counter may report through its door in one message
/// (`in`, `out`): far above a busy center's day.
pub const MAX_PEOPLE_PER_MESSAGE: u64 = 100_000;

/// The longest piano session the hub counts: a day.
pub const MAX_SESSION_MS: u64 = 24 * 3_600_000;

/// The longest walk-in a piano's `session_start` may announce (`minutes`).
pub const MAX_WALK_IN_MINUTES: u64 = 24 * 60;

/// Absolute zero: no temperature reading (`temp_c`) lies below it.
pub const MIN_TEMP_C: f64 = -273.15;
