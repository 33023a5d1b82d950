//! Device input decoded into checked values ("parse, don't validate").
//!
//! Every number a device sends is range-checked here, at the decode
//! boundary, before it reaches the calendar, a loop or the store: `ts` (the
//! calendar's range and the hub's window around its own clock), `seq`, a
//! counter's people, a therapy robot's temperature, the length of a piano
//! session and a walk-in's `minutes`. What comes out carries the proof: a
//! [`DeviceTs`] is an instant the calendar holds, a [`SessionSpan`] runs
//! forward for at most a day (so splitting it at midnights gives at most
//! three pieces), a [`Flow`] is whole people within bounds. Other
//! telemetry fields are kept as they come (JSON numbers are finite); a
//! birth's `keepalive` of 0 reads as none (`Twin::apply_birth`).
//!
//! An event's `credential` (a resident's QR code or card) leaves here only
//! as its keyed hash (`credential_hash`, `secrets::credential_hash`): the
//! clear value never reaches the store, an API answer or a log line.
//!
//! The ranges are the contract's (`protocol::limits`); the `ts` window is the
//! hub's (`[ingest] max_ts_behind_secs`, `max_ts_ahead_secs`). Pure: the
//! hub's clock is passed in. `ingest` turns an [`InputError`] into a
//! rejection reason through [`InputError::problem`].

use protocol::limits::{
    MAX_PEOPLE_PER_MESSAGE, MAX_SEQ, MAX_SESSION_MS, MAX_TS_MS, MAX_WALK_IN_MINUTES, MIN_TEMP_C,
};
use protocol::{DeviceKind, Event, FieldValue, Telemetry};
use serde_json::{Map, Value};

use crate::records::Twin;
use crate::secrets;
use crate::settings::IngestConfig;

/// Why a device's message does not hold up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("ts {0} is past the calendar's last instant ({MAX_TS_MS}, year 9999)")]
    TsPastCalendar(u64),
    /// `side`: "behind" or "ahead of".
    #[error("ts {ts} is {secs} s {side} the hub's clock (at most {limit_secs} s)")]
    TsOffClock {
        ts: u64,
        secs: u64,
        side: &'static str,
        limit_secs: u64,
    },
    #[error("seq {0} is outside 1..={MAX_SEQ}")]
    Seq(u64),
    #[error("counter telemetry field `{0}` is not a whole number of people ≥ 0")]
    People(&'static str),
    #[error("counter telemetry field `{0}` reports more than {MAX_PEOPLE_PER_MESSAGE} people")]
    TooManyPeople(&'static str),
    #[error("telemetry field `{0}` must be a number")]
    NotNumber(&'static str),
    #[error("telemetry field `{0}` must be true or false")]
    NotBool(&'static str),
    #[error("temp_c {0} is below absolute zero ({MIN_TEMP_C})")]
    BelowAbsoluteZero(f64),
    #[error("the session would end at ts {to}, before it started at ts {from}")]
    SessionBackwards { from: u64, to: u64 },
    #[error("the session would last from ts {from} to ts {to}: more than a day")]
    SessionTooLong { from: u64, to: u64 },
    #[error("`minutes` must be a whole number from 1 to {MAX_WALK_IN_MINUTES}")]
    Minutes,
}

/// What kind of problem an [`InputError`] is: one rejection reason each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// `ts` outside the calendar or the hub's window (`invalid_ts`).
    Ts,
    /// A negative or absurd length of time (`invalid_duration`).
    Duration,
    /// A number of the right type outside its range (`out_of_range`).
    Range,
    /// A value of the wrong shape (`invalid_payload`).
    Shape,
}

impl InputError {
    pub fn problem(&self) -> Problem {
        match self {
            InputError::TsPastCalendar(_) | InputError::TsOffClock { .. } => Problem::Ts,
            InputError::SessionBackwards { .. }
            | InputError::SessionTooLong { .. }
            | InputError::Minutes => Problem::Duration,
            InputError::Seq(_)
            | InputError::TooManyPeople(_)
            | InputError::BelowAbsoluteZero(_) => Problem::Range,
            InputError::People(_) | InputError::NotNumber(_) | InputError::NotBool(_) => {
                Problem::Shape
            }
        }
    }
}

/// A device's `ts` (Unix ms) that the calendar holds and that lies in the
/// hub's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceTs(u64);

impl DeviceTs {
    pub fn ms(self) -> u64 {
        self.0
    }
}

/// How far a device's `ts` may lie from the hub's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsWindow {
    pub behind_secs: u64,
    pub ahead_secs: u64,
}

impl TsWindow {
    pub fn from_config(config: &IngestConfig) -> TsWindow {
        TsWindow {
            behind_secs: config.max_ts_behind_secs,
            ahead_secs: config.max_ts_ahead_secs,
        }
    }

    /// Checks `ts` against the calendar and the window around `now_ms`.
    pub fn check(self, ts: u64, now_ms: u64) -> Result<DeviceTs, InputError> {
        if ts > MAX_TS_MS {
            return Err(InputError::TsPastCalendar(ts));
        }
        let (off_ms, limit_secs, side) = if ts < now_ms {
            (now_ms - ts, self.behind_secs, "behind")
        } else {
            (ts - now_ms, self.ahead_secs, "ahead of")
        };
        if off_ms > limit_secs.saturating_mul(1000) {
            return Err(InputError::TsOffClock {
                ts,
                secs: off_ms / 1000,
                side,
                limit_secs,
            });
        }
        Ok(DeviceTs(ts))
    }
}

fn check_seq(seq: u64) -> Result<u64, InputError> {
    if (1..=MAX_SEQ).contains(&seq) {
        Ok(seq)
    } else {
        Err(InputError::Seq(seq))
    }
}

/// People through a counter's door since its last message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub entered: u64,
    pub left: u64,
}

/// What a therapy robot's telemetry says: its temperature (at or above
/// absolute zero; no upper bound, since every reading above the limit must
/// stop the robot) and whether it is heating.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RobotReading {
    pub temp_c: Option<f64>,
    pub heating: Option<bool>,
}

/// What the hub reads in a telemetry message besides its fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    Counter(Flow),
    Robot(RobotReading),
    /// Fields the twin keeps and nothing acts on (pianos, gates).
    Plain,
}

/// A telemetry message whose numbers hold up.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedTelemetry {
    pub ts: DeviceTs,
    pub telemetry: Telemetry,
    pub reading: Reading,
}

/// A stretch of piano play: `from ≤ to`, at most `MAX_SESSION_MS` long, and
/// `to` a [`DeviceTs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSpan {
    from: u64,
    to: u64,
}

impl SessionSpan {
    /// The session from `from` (a running session's start) to `to`.
    pub fn between(from: u64, to: DeviceTs) -> Result<SessionSpan, InputError> {
        let to = to.ms();
        if to < from {
            return Err(InputError::SessionBackwards { from, to });
        }
        if to - from > MAX_SESSION_MS {
            return Err(InputError::SessionTooLong { from, to });
        }
        Ok(SessionSpan { from, to })
    }

    pub fn from(self) -> u64 {
        self.from
    }

    pub fn to(self) -> u64 {
        self.to
    }
}

/// The session running on a piano when a new one starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Previous {
    /// None was running.
    Idle,
    /// It ends where the new one starts (its `session_end` was lost).
    Ends(SessionSpan),
    /// It cannot end there (it would run backwards or for more than a
    /// day): it is not counted.
    Discarded(InputError),
}

/// A piano's session event.
#[derive(Debug, Clone, PartialEq)]
pub enum PianoSession {
    /// `session_start` at `at`; a walk-in's announced `minutes`.
    Start {
        at: DeviceTs,
        previous: Previous,
        minutes: Option<u64>,
    },
    /// `session_end`, closing the running session if there is one. An end
    /// that would make it run backwards or for more than a day is rejected.
    End { closes: Option<SessionSpan> },
}

/// What the hub acts on in an event besides its type and body.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    PianoSession(PianoSession),
    /// A gate's `access_request`: the keyed hash of its credential, `None`
    /// when it carried no credential string.
    AccessRequest {
        credential_hash: Option<String>,
    },
    Other,
}

/// An event whose numbers hold up, ready to store and act on.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedEvent {
    pub ts: DeviceTs,
    /// The event as it is stored: a `credential` replaced by its hash.
    pub event: Event,
    pub detail: Detail,
}

/// The checker: the hub's `ts` window and the key credentials are hashed
/// with.
pub struct Input {
    window: TsWindow,
    credential_key: [u8; 32],
}

impl Input {
    pub fn new(window: TsWindow, credential_key: [u8; 32]) -> Input {
        Input {
            window,
            credential_key,
        }
    }

    /// Checks a decoded telemetry message from a device of `kind`.
    pub fn telemetry(
        &self,
        telemetry: Telemetry,
        kind: DeviceKind,
        now_ms: u64,
    ) -> Result<CheckedTelemetry, InputError> {
        let ts = self.window.check(telemetry.ts, now_ms)?;
        check_seq(telemetry.seq)?;
        let reading = match kind {
            DeviceKind::Counter => Reading::Counter(flow(&telemetry)?),
            DeviceKind::TherapyRobot => Reading::Robot(robot_reading(&telemetry)?),
            DeviceKind::Piano | DeviceKind::Gate => Reading::Plain,
        };
        Ok(CheckedTelemetry {
            ts,
            telemetry,
            reading,
        })
    }

    /// Checks a decoded event from `device` (its twin as it is before the
    /// event) and hides its credential.
    pub fn event(
        &self,
        mut event: Event,
        device: &Twin,
        now_ms: u64,
    ) -> Result<CheckedEvent, InputError> {
        let ts = self.window.check(event.ts, now_ms)?;
        check_seq(event.seq)?;
        let credential_hash = self.hide_credential(&mut event.body);
        let detail = match (device.kind, event.event_type.as_str()) {
            (DeviceKind::Piano, "session_start") => Detail::PianoSession(PianoSession::Start {
                at: ts,
                previous: previous_session(device.session_since, ts),
                minutes: walk_in_minutes(&event.body)?,
            }),
            (DeviceKind::Piano, "session_end") => Detail::PianoSession(PianoSession::End {
                closes: device
                    .session_since
                    .map(|since| SessionSpan::between(since, ts))
                    .transpose()?,
            }),
            (DeviceKind::Gate, "access_request") => Detail::AccessRequest { credential_hash },
            _ => Detail::Other,
        };
        Ok(CheckedEvent { ts, event, detail })
    }

    /// Replaces a `credential` string by `credential_hash`; drops any other
    /// `credential` value. Returns the hash.
    fn hide_credential(&self, body: &mut Map<String, Value>) -> Option<String> {
        let Value::String(clear) = body.remove("credential")? else {
            return None;
        };
        let hash = secrets::credential_hash(&self.credential_key, &clear);
        body.insert("credential_hash".into(), Value::String(hash.clone()));
        Some(hash)
    }
}

fn previous_session(since: Option<u64>, at: DeviceTs) -> Previous {
    match since.map(|since| SessionSpan::between(since, at)) {
        None => Previous::Idle,
        Some(Ok(span)) => Previous::Ends(span),
        Some(Err(why)) => Previous::Discarded(why),
    }
}

fn walk_in_minutes(body: &Map<String, Value>) -> Result<Option<u64>, InputError> {
    let Some(value) = body.get("minutes") else {
        return Ok(None);
    };
    value
        .as_u64()
        .filter(|minutes| (1..=MAX_WALK_IN_MINUTES).contains(minutes))
        .map(Some)
        .ok_or(InputError::Minutes)
}

fn field<'a>(telemetry: &'a Telemetry, name: &str) -> Option<&'a FieldValue> {
    telemetry
        .fields
        .iter()
        .find_map(|(n, v)| (n == name).then_some(v))
}

fn flow(telemetry: &Telemetry) -> Result<Flow, InputError> {
    Ok(Flow {
        entered: people(telemetry, "in")?,
        left: people(telemetry, "out")?,
    })
}

/// A counter's `in` or `out`: a whole number of people (0 when missing).
fn people(telemetry: &Telemetry, name: &'static str) -> Result<u64, InputError> {
    match field(telemetry, name) {
        None => Ok(0),
        Some(FieldValue::Number(n)) if *n >= 0.0 && n.fract() == 0.0 => {
            if *n > MAX_PEOPLE_PER_MESSAGE as f64 {
                return Err(InputError::TooManyPeople(name));
            }
            // In range and whole: the cast is exact.
            Ok(*n as u64)
        }
        Some(_) => Err(InputError::People(name)),
    }
}

fn robot_reading(telemetry: &Telemetry) -> Result<RobotReading, InputError> {
    let temp_c = match field(telemetry, "temp_c") {
        None => None,
        Some(FieldValue::Number(t)) if *t >= MIN_TEMP_C => Some(*t),
        Some(FieldValue::Number(t)) => return Err(InputError::BelowAbsoluteZero(*t)),
        Some(_) => return Err(InputError::NotNumber("temp_c")),
    };
    let heating = match field(telemetry, "heating") {
        None => None,
        Some(FieldValue::Bool(b)) => Some(*b),
        Some(_) => return Err(InputError::NotBool("heating")),
    };
    Ok(RobotReading { temp_c, heating })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-12-01T00:00:00Z, the hub's clock in these tests.
    const NOW: u64 = 1_796_083_200_000;
    const MINUTE: u64 = 60_000;
    const DAY: u64 = 86_400_000;
    const WINDOW: TsWindow = TsWindow {
        behind_secs: 7 * 86_400,
        ahead_secs: 300,
    };
    const KEY: [u8; 32] = [7; 32];

    fn input() -> Input {
        Input::new(WINDOW, KEY)
    }

    fn check_ts(window: TsWindow, ts: u64, expect: Result<(), Problem>) {
        let got = window.check(ts, NOW).map(|_| ()).map_err(|e| e.problem());
        assert_eq!(got, expect, "ts {ts}");
    }

    #[test]
    fn ts_lies_in_the_calendar_and_the_window() {
        let wide = TsWindow {
            behind_secs: IngestConfig::SIMULATED_CLOCK_WINDOW_SECS,
            ahead_secs: IngestConfig::SIMULATED_CLOCK_WINDOW_SECS,
        };
        check_ts(WINDOW, NOW, Ok(()));
        check_ts(WINDOW, NOW - 7 * DAY, Ok(()));
        check_ts(WINDOW, NOW - 7 * DAY - 1, Err(Problem::Ts));
        check_ts(WINDOW, NOW + 5 * MINUTE, Ok(()));
        check_ts(WINDOW, NOW + 5 * MINUTE + 1, Err(Problem::Ts));
        check_ts(WINDOW, 0, Err(Problem::Ts));
        check_ts(WINDOW, 1_000_000_000_000_000, Err(Problem::Ts));
        check_ts(wide, 0, Ok(()));
        check_ts(wide, MAX_TS_MS, Ok(()));
        check_ts(wide, MAX_TS_MS + 1, Err(Problem::Ts));
        check_ts(wide, 8_210_266_850_000_000, Err(Problem::Ts));
        check_ts(wide, u64::MAX, Err(Problem::Ts));
    }

    fn telemetry(ts: u64, seq: u64, fields: &[(&str, FieldValue)]) -> Telemetry {
        Telemetry {
            ts,
            seq,
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        }
    }

    fn check_telemetry(
        kind: DeviceKind,
        (ts, seq): (u64, u64),
        fields: &[(&str, FieldValue)],
        expect: Result<Reading, Problem>,
    ) {
        let got = input()
            .telemetry(telemetry(ts, seq, fields), kind, NOW)
            .map(|checked| checked.reading)
            .map_err(|e| e.problem());
        assert_eq!(got, expect, "{kind} ts {ts} seq {seq} {fields:?}");
    }

    #[test]
    fn telemetry_numbers_are_checked() {
        use DeviceKind::{Counter, Gate, Piano, TherapyRobot};
        use FieldValue::{Bool, Number, Text};
        let ok = (NOW, 1);
        let flow = |entered, left| Ok(Reading::Counter(Flow { entered, left }));
        let robot = |temp_c, heating| Ok(Reading::Robot(RobotReading { temp_c, heating }));
        check_telemetry(Counter, ok, &[], flow(0, 0));
        check_telemetry(Counter, ok, &[("in", Number(3.0))], flow(3, 0));
        check_telemetry(Counter, ok, &[("out", Number(100_000.0))], flow(0, 100_000));
        check_telemetry(
            Counter,
            ok,
            &[("in", Number(100_001.0))],
            Err(Problem::Range),
        );
        check_telemetry(Counter, ok, &[("in", Number(1e300))], Err(Problem::Range));
        check_telemetry(Counter, ok, &[("in", Number(-1.0))], Err(Problem::Shape));
        check_telemetry(Counter, ok, &[("out", Number(1.5))], Err(Problem::Shape));
        check_telemetry(
            Counter,
            ok,
            &[("in", Text("2".into()))],
            Err(Problem::Shape),
        );
        check_telemetry(Counter, (8_210_266_850_000_000, 1), &[], Err(Problem::Ts));
        check_telemetry(Counter, (NOW, 0), &[], Err(Problem::Range));
        check_telemetry(Counter, (NOW, MAX_SEQ), &[], flow(0, 0));
        check_telemetry(Counter, (NOW, MAX_SEQ + 1), &[], Err(Problem::Range));
        check_telemetry(TherapyRobot, ok, &[], robot(None, None));
        check_telemetry(
            TherapyRobot,
            ok,
            &[("temp_c", Number(46.0)), ("heating", Bool(true))],
            robot(Some(46.0), Some(true)),
        );
        check_telemetry(
            TherapyRobot,
            ok,
            &[("temp_c", Number(1e300))],
            robot(Some(1e300), None),
        );
        check_telemetry(
            TherapyRobot,
            ok,
            &[("temp_c", Number(-273.15))],
            robot(Some(-273.15), None),
        );
        check_telemetry(
            TherapyRobot,
            ok,
            &[("temp_c", Number(-274.0))],
            Err(Problem::Range),
        );
        check_telemetry(
            TherapyRobot,
            ok,
            &[("temp_c", Text("hot".into()))],
            Err(Problem::Shape),
        );
        check_telemetry(
            TherapyRobot,
            ok,
            &[("heating", Number(1.0))],
            Err(Problem::Shape),
        );
        check_telemetry(
            Piano,
            ok,
            &[("key_presses", Number(-5.0))],
            Ok(Reading::Plain),
        );
        check_telemetry(Gate, (0, 1), &[], Err(Problem::Ts));
    }

    fn twin(kind: DeviceKind, session_since: Option<u64>) -> Twin {
        Twin {
            session_since,
            ..crate::records::twin::provisioned(kind)
        }
    }

    fn event(ts: u64, event_type: &str, body: Value) -> Event {
        let Value::Object(body) = body else {
            panic!("a body is an object");
        };
        Event {
            id: "e1".into(),
            ts,
            seq: 1,
            event_type: event_type.into(),
            body,
        }
    }

    fn check_event(device: &Twin, event: Event, expect: Result<Detail, Problem>) {
        let what = format!("{:?} {event:?}", device.session_since);
        let got = input()
            .event(event, device, NOW)
            .map(|checked| checked.detail)
            .map_err(|e| e.problem());
        assert_eq!(got, expect, "{what}");
    }

    fn span(from: u64, to: u64) -> SessionSpan {
        SessionSpan { from, to }
    }

    #[test]
    fn piano_sessions_run_forward_for_at_most_a_day() {
        let idle = twin(DeviceKind::Piano, None);
        let playing = twin(DeviceKind::Piano, Some(NOW - 30 * MINUTE));
        let start = |previous, minutes| {
            Ok(Detail::PianoSession(PianoSession::Start {
                at: DeviceTs(NOW),
                previous,
                minutes,
            }))
        };
        let end = |closes| Ok(Detail::PianoSession(PianoSession::End { closes }));
        let walk_in = |minutes: Value| json!({"source": "walk_in", "minutes": minutes});
        check_event(
            &idle,
            event(NOW, "session_start", json!({})),
            start(Previous::Idle, None),
        );
        check_event(&idle, event(NOW, "session_end", json!({})), end(None));
        check_event(
            &playing,
            event(NOW, "session_end", json!({})),
            end(Some(span(NOW - 30 * MINUTE, NOW))),
        );
        check_event(
            &playing,
            event(NOW - 31 * MINUTE, "session_end", json!({})),
            Err(Problem::Duration),
        );
        let since_two_days = twin(DeviceKind::Piano, Some(NOW - 2 * DAY));
        check_event(
            &since_two_days,
            event(NOW, "session_end", json!({})),
            Err(Problem::Duration),
        );
        check_event(
            &twin(DeviceKind::Piano, Some(NOW - DAY)),
            event(NOW, "session_end", json!({})),
            end(Some(span(NOW - DAY, NOW))),
        );
        check_event(
            &twin(DeviceKind::Piano, Some(0)),
            event(NOW, "session_end", json!({})),
            Err(Problem::Duration),
        );
        check_event(
            &playing,
            event(NOW, "session_start", json!({})),
            start(Previous::Ends(span(NOW - 30 * MINUTE, NOW)), None),
        );
        check_event(
            &since_two_days,
            event(NOW, "session_start", json!({})),
            start(
                Previous::Discarded(InputError::SessionTooLong {
                    from: NOW - 2 * DAY,
                    to: NOW,
                }),
                None,
            ),
        );
        check_event(
            &idle,
            event(NOW, "session_start", walk_in(json!(45))),
            start(Previous::Idle, Some(45)),
        );
        check_event(
            &idle,
            event(NOW, "session_start", walk_in(json!(1440))),
            start(Previous::Idle, Some(1440)),
        );
        for bad in [
            json!(-5),
            json!(0),
            json!(1441),
            json!(2.5),
            json!("30"),
            json!(u64::MAX),
        ] {
            check_event(
                &idle,
                event(NOW, "session_start", walk_in(bad)),
                Err(Problem::Duration),
            );
        }
        check_event(
            &idle,
            event(0, "session_start", json!({})),
            Err(Problem::Ts),
        );
        check_event(
            &idle,
            event(1_000_000_000_000_000, "session_end", json!({})),
            Err(Problem::Ts),
        );
        check_event(
            &twin(DeviceKind::TherapyRobot, None),
            event(NOW, "session_start", json!({"minutes": -5})),
            Ok(Detail::Other),
        );
    }

    fn check_hidden(kind: DeviceKind, body: Value, expect: (Detail, Value)) {
        let event_type = "access_request";
        let what = format!("{kind} {body}");
        let checked = input()
            .event(event(NOW, event_type, body), &twin(kind, None), NOW)
            .expect("a good event");
        let got = (checked.detail, Value::Object(checked.event.body));
        assert_eq!(got, expect, "{what}");
    }

    #[test]
    fn credentials_are_stored_as_their_keyed_hash_only() {
        use DeviceKind::{Gate, Piano};
        let hash = secrets::credential_hash(&KEY, "qr-alice");
        let request = |credential_hash| Detail::AccessRequest { credential_hash };
        let hashed = json!({"credential_hash": hash});
        let alice = || json!({"credential": "qr-alice"});
        check_hidden(Gate, alice(), (request(Some(hash.clone())), hashed.clone()));
        check_hidden(Gate, json!({"credential": 42}), (request(None), json!({})));
        check_hidden(Gate, json!({}), (request(None), json!({})));
        check_hidden(
            Gate,
            json!({"credential": ["qr-alice"], "x": 1}),
            (request(None), json!({"x": 1})),
        );
        check_hidden(Piano, alice(), (Detail::Other, hashed));
    }
}
