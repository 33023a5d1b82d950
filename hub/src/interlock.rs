//! The therapy-robot safety interlock: when a moxibustion robot must be
//! stopped, and when it may start again.
//!
//! A robot is tripped when its telemetry reports `temp_c` above
//! `[interlock] max_temp_c`, or when a running session (from a
//! `session_start` event, or telemetry `heating: true`, until `session_end`
//! or `heating: false`) has sent no telemetry for `watchdog_ms`, or is still
//! running when its booked place ends (the desk says so). A trip
//! raises an alarm on the robot's twin; until staff acknowledge it, every
//! `session_start` the robot reports is answered with `stop` again.
//!
//! Readings arrive checked (`input::RobotReading`): telemetry whose `temp_c`
//! is not a number (or is below absolute zero) or whose `heating` is not a
//! bool is rejected, so it does not feed the watchdog either — a robot that
//! only sends such readings is stopped when its session goes silent.
//!
//! Pure state and rules only (times are unix ms passed in). `actions` turns a
//! trip into the `stop` command, the twin's alarm, the stored event and the
//! metrics.

use std::collections::HashMap;

use crate::input::RobotReading;
use crate::records::TripReason;
use crate::settings::InterlockConfig;

/// A trip: the reason and, for over-temperature, the reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    pub reason: TripReason,
    pub temp_c: Option<f64>,
}

/// What a robot's session event means for the interlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A session started while an alarm is unacknowledged: stop it.
    RefuseRestart,
}

/// What the interlock knows of one robot's session.
#[derive(Debug, Clone, Copy, Default)]
struct RobotSession {
    running: bool,
    /// Unix ms of the last telemetry (or of the session's start).
    last_telemetry: u64,
}

pub struct Interlock {
    config: InterlockConfig,
    sessions: HashMap<String, RobotSession>,
}

impl Interlock {
    pub fn new(config: InterlockConfig) -> Interlock {
        Interlock {
            config,
            sessions: HashMap::new(),
        }
    }

    /// The configured temperature limit, °C.
    pub fn max_temp_c(&self) -> f64 {
        self.config.max_temp_c
    }

    /// Telemetry from a robot; `Some` when it must be stopped now.
    pub fn on_telemetry(
        &mut self,
        device: &str,
        reading: &RobotReading,
        alarm_active: bool,
        now_ms: u64,
    ) -> Option<Trip> {
        let session = self.session(device);
        session.last_telemetry = now_ms;
        if let Some(heating) = reading.heating {
            session.running = heating && !alarm_active;
        }
        let temp_c = reading.temp_c?;
        (temp_c > self.config.max_temp_c && !alarm_active).then(|| {
            self.session(device).running = false;
            Trip {
                reason: TripReason::OverTemperature,
                temp_c: Some(temp_c),
            }
        })
    }

    /// A session event (`session_start`, `session_end`) from a robot.
    pub fn on_session_event(
        &mut self,
        device: &str,
        event_type: &str,
        alarm_active: bool,
        now_ms: u64,
    ) -> Verdict {
        let session = self.session(device);
        match event_type {
            "session_start" if alarm_active => {
                session.running = false;
                Verdict::RefuseRestart
            }
            "session_start" => {
                session.running = true;
                session.last_telemetry = now_ms;
                Verdict::Allow
            }
            "session_end" => {
                session.running = false;
                Verdict::Allow
            }
            _ => Verdict::Allow,
        }
    }

    /// The robot's booked slot ended: `true` (and the session counts as
    /// stopped) when a session was still running, so it must be stopped.
    pub fn slot_ended(&mut self, device: &str) -> bool {
        std::mem::take(&mut self.session(device).running)
    }

    /// Robots whose running session has been silent too long. Each silence
    /// trips once: the session counts as stopped afterwards.
    pub fn watchdog(&mut self, now_ms: u64) -> Vec<String> {
        let limit = self.config.watchdog_ms;
        let mut silent = Vec::new();
        for (device, session) in &mut self.sessions {
            if session.running && now_ms.saturating_sub(session.last_telemetry) > limit {
                session.running = false;
                silent.push(device.clone());
            }
        }
        silent
    }

    fn session(&mut self, device: &str) -> &mut RobotSession {
        if !self.sessions.contains_key(device) {
            self.sessions
                .insert(device.to_string(), RobotSession::default());
        }
        // invariant: inserted just above when missing.
        self.sessions.get_mut(device).expect("session")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interlock() -> Interlock {
        Interlock::new(InterlockConfig {
            max_temp_c: 45.0,
            watchdog_ms: 5_000,
            stop_ttl_secs: 60,
        })
    }

    fn reading(temp_c: f64, heating: bool) -> RobotReading {
        RobotReading {
            temp_c: Some(temp_c),
            heating: Some(heating),
        }
    }

    #[test]
    fn over_the_limit_trips_at_once_and_the_limit_itself_does_not() {
        let mut lock = interlock();
        assert_eq!(lock.on_telemetry("r", &reading(45.0, true), false, 0), None);
        let trip = lock.on_telemetry("r", &reading(45.1, true), false, 1);
        assert_eq!(
            trip,
            Some(Trip {
                reason: TripReason::OverTemperature,
                temp_c: Some(45.1)
            })
        );
        assert_eq!(
            lock.on_telemetry("r", &reading(46.0, true), true, 2),
            None,
            "an unacknowledged alarm does not trip again"
        );
    }

    #[test]
    fn a_silent_running_session_trips_the_watchdog_once() {
        let mut lock = interlock();
        assert_eq!(
            lock.on_session_event("r", "session_start", false, 1_000),
            Verdict::Allow
        );
        assert!(lock.watchdog(6_000).is_empty(), "5 s is the limit itself");
        assert_eq!(lock.watchdog(6_001), vec!["r".to_string()]);
        assert!(lock.watchdog(20_000).is_empty(), "one trip per silence");
    }

    #[test]
    fn telemetry_feeds_the_watchdog_and_ended_sessions_are_not_watched() {
        let mut lock = interlock();
        lock.on_telemetry("r", &reading(30.0, true), false, 0);
        lock.on_telemetry("r", &reading(31.0, true), false, 4_000);
        assert!(lock.watchdog(8_000).is_empty());
        lock.on_session_event("r", "session_end", false, 8_500);
        assert!(lock.watchdog(60_000).is_empty());
        lock.on_telemetry("r", &reading(25.0, false), false, 0);
        assert!(lock.watchdog(60_000).is_empty(), "not heating: no session");
    }

    #[test]
    fn restarts_are_refused_until_the_alarm_is_acknowledged() {
        let mut lock = interlock();
        assert_eq!(
            lock.on_session_event("r", "session_start", true, 0),
            Verdict::RefuseRestart
        );
        assert!(
            lock.watchdog(60_000).is_empty(),
            "a refused session is not running"
        );
        assert_eq!(
            lock.on_session_event("r", "session_start", false, 0),
            Verdict::Allow
        );
    }
}
