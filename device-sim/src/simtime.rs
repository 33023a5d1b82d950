//! Simulated time: a clock that runs `speed` times faster than the real one
//! from a chosen start, and the local calendar of the centers (days,
//! midnights, times of day in their time zone).
//!
//! Every timestamp a device reports (`ts` of telemetry and events) is
//! simulated time, so a run at `--speed 600` covers ten simulated hours per
//! real minute and the hub buckets what it counts by the devices' own days.

use std::time::{Duration, Instant};

pub use protocol::calendar::{Calendar, DEFAULT_TZ};

/// Simulated Unix milliseconds, `speed` times as fast as real time.
#[derive(Debug, Clone)]
pub struct SimClock {
    real_origin: Instant,
    sim_origin_ms: u64,
    speed: f64,
}

impl SimClock {
    /// A clock reading `sim_origin_ms` now and advancing `speed`× real time.
    pub fn new(sim_origin_ms: u64, speed: f64) -> Self {
        SimClock {
            real_origin: Instant::now(),
            sim_origin_ms,
            speed,
        }
    }

    pub fn start_ms(&self) -> u64 {
        self.sim_origin_ms
    }

    pub fn now_ms(&self) -> u64 {
        self.sim_origin_ms + self.sim_span(self.real_origin.elapsed()).as_millis() as u64
    }

    /// Simulated time that passes in `real` real time.
    pub fn sim_span(&self, real: Duration) -> Duration {
        real.mul_f64(self.speed)
    }

    /// Real time that `sim` simulated time takes.
    pub fn real_span(&self, sim: Duration) -> Duration {
        sim.div_f64(self.speed)
    }
}

/// Parses a start given as an RFC 3339 instant or a local date (midnight
/// in `calendar`'s zone), as the hub reads such times.
pub fn parse_start(text: &str, calendar: &Calendar) -> Result<u64, String> {
    calendar.parse_instant(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn starts_are_instants_or_local_midnights() {
        let cal = Calendar::default();
        let midnight = cal.midnight(date(2026, 11, 28));
        assert_eq!(parse_start("2026-11-28", &cal).unwrap(), midnight);
        assert_eq!(
            parse_start("2026-11-27T16:00:00Z", &cal).unwrap(),
            midnight,
            "Shanghai is UTC+8"
        );
    }

    #[test]
    fn the_clock_runs_speed_times_faster() {
        let clock = SimClock::new(1_000, 600.0);
        assert_eq!(
            clock.sim_span(Duration::from_secs(1)),
            Duration::from_secs(600)
        );
        assert_eq!(
            clock.real_span(Duration::from_secs(3_600)),
            Duration::from_secs(6)
        );
        assert!(clock.now_ms() >= 1_000);
    }

    #[test]
    fn bad_starts_say_what_is_accepted() {
        let err = parse_start("yesterday", &Calendar::default()).unwrap_err();
        assert!(err.contains("YYYY-MM-DD"), "{err}");
    }
}
