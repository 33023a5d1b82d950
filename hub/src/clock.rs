//! Time as the hub keeps it: the wall clock in unix milliseconds, and the
//! clock scheduling runs on (the system's, or one standing still at a
//! configured instant that only moves when told: tests, demos).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The clock the schedule runs on: the system's, or one standing still at a
/// configured instant that only moves when told (tests, demos).
#[derive(Debug)]
pub enum Clock {
    System,
    Fixed(AtomicU64),
}

impl Clock {
    /// `system` or `fixed:<RFC 3339>`.
    pub fn parse(text: &str) -> Result<Clock, String> {
        if text == "system" {
            return Ok(Clock::System);
        }
        let Some(instant) = text.strip_prefix("fixed:") else {
            return Err(format!(
                "{text:?}: give \"system\" or \"fixed:<RFC 3339 time>\""
            ));
        };
        let at = protocol::calendar::parse_rfc3339(instant).map_err(|e| e.to_string())?;
        Ok(Clock::Fixed(AtomicU64::new(at)))
    }

    /// Now, in unix ms.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => unix_ms(),
            Clock::Fixed(at) => at.load(Ordering::SeqCst),
        }
    }

    /// Moves a fixed clock forward to `ms`. A system clock cannot be moved;
    /// nor can any clock go back.
    pub fn advance_to(&self, ms: u64) -> Result<u64, &'static str> {
        match self {
            Clock::System => Err("the schedule runs on the system clock"),
            Clock::Fixed(at) => {
                let previous = at.fetch_max(ms, Ordering::SeqCst);
                if ms < previous {
                    return Err("the clock never goes back");
                }
                Ok(ms)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_forward_and_the_system_clock_not_at_all() {
        let clock = Clock::parse("fixed:2027-01-04T08:00:00+08:00").unwrap();
        let start = clock.now_ms();
        assert_eq!(start, 1_799_020_800_000);
        assert_eq!(clock.advance_to(start + 1), Ok(start + 1));
        assert_eq!(clock.advance_to(start), Err("the clock never goes back"));
        assert_eq!(clock.now_ms(), start + 1);
        let system = Clock::parse("system").unwrap();
        assert!(system.advance_to(start).is_err());
        for bad in ["fixed:yesterday", "fixed", "wall"] {
            assert!(Clock::parse(bad).is_err(), "{bad}");
        }
    }
}
