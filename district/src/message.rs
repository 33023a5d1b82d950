//! A message from a hub, decoded and checked at the boundary: its topic
//! parsed against the upstream contract (`protocol::upstream`), its JSON
//! payload into the class's type, every identifier and number
//! range-checked. What the district does not know is `Ignored` (a newer
//! hub's topic), what it cannot read is `Rejected` with a reason; both are
//! counted, kept for inspection and acknowledged, so one bad message never
//! holds up the queue. Commands (`…/cmd`, the district's own on their way
//! to the hubs) are `Skipped`: counted only.

use chrono::NaiveDate;
use protocol::api::is_command_op;
use protocol::limits::{MAX_SEQ, MAX_TS_MS};
use protocol::upstream::{
    is_command_id, BookingMessage, Class, CommandOutcomeMessage, CommandRefusedMessage,
    EventMessage, Refusal, TelemetryMessage, TelemetryRawMessage, TwinMessage, UpstreamTopic,
    VisitsMessage,
};
use serde::de::DeserializeOwned;

/// The most visits one center may report for one day.
pub const MAX_VISITS_PER_DAY: u64 = 10_000_000;
/// The longest message id accepted.
pub const MAX_ID_LEN: usize = 256;
/// The longest device error a command's outcome may carry.
pub const MAX_ERROR_LEN: usize = 1024;
/// The statuses a command's outcome may have.
pub const OUTCOME_STATUSES: [&str; 3] = ["acked", "failed", "expired"];

/// A message as the source delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// MQTT topic (`yz/v1/…`), also for NATS subjects mapped back.
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Why a message was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not JSON of the class's shape.
    BadPayload,
    /// The payload's center or device is not the topic's.
    Mismatch,
    /// An id, hub, center or device that is empty, too long or has
    /// characters outside the contract.
    BadId,
    /// A number or date outside its range.
    OutOfRange,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [
        Rejection::BadPayload,
        Rejection::Mismatch,
        Rejection::BadId,
        Rejection::OutOfRange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::BadPayload => "bad_payload",
            Rejection::Mismatch => "mismatch",
            Rejection::BadId => "bad_id",
            Rejection::OutOfRange => "out_of_range",
        }
    }
}

/// What a checked message says.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A device's event; `alarm` for the alarm topic.
    Event {
        alarm: bool,
        event: EventMessage,
    },
    Booking(BookingMessage),
    Visits {
        day: NaiveDate,
        visits: u64,
        at: u64,
    },
    Twin(TwinMessage),
    /// A telemetry aggregate (`to`: the window's end) or a raw reading:
    /// counted, not kept.
    Telemetry {
        at: u64,
    },
    /// A district command's outcome.
    Outcome(CommandOutcomeMessage),
    /// A command a hub refused.
    Refused(CommandRefusedMessage),
}

/// A checked message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub class: Class,
    pub body: Body,
}

impl Message {
    /// The hub's time of the fact (unix ms).
    pub fn at(&self) -> u64 {
        match &self.body {
            Body::Event { event, .. } => event.received_at,
            Body::Booking(booking) => booking.at,
            Body::Visits { at, .. } | Body::Telemetry { at } => *at,
            Body::Twin(twin) => twin.at,
            Body::Outcome(outcome) => outcome.at,
            Body::Refused(refused) => refused.at,
        }
    }
}

/// What became of an incoming message at the boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Message(Box<Message>),
    /// A topic outside the contract this district knows.
    Ignored,
    /// A command on its way to a hub (the district's own): not applied.
    Skipped,
    Rejected(Rejection),
}

/// The fields every payload starts with.
#[derive(serde::Deserialize)]
struct Envelope {
    id: String,
    hub: String,
    center: String,
}

pub fn decode(incoming: &Incoming) -> Decoded {
    let Some(topic) = UpstreamTopic::parse(&incoming.topic) else {
        return Decoded::Ignored;
    };
    if topic.class == Class::Command {
        return Decoded::Skipped;
    }
    match check(&topic, &incoming.payload) {
        Ok(message) => Decoded::Message(Box::new(message)),
        Err(rejection) => Decoded::Rejected(rejection),
    }
}

fn check(topic: &UpstreamTopic, payload: &[u8]) -> Result<Message, Rejection> {
    let envelope: Envelope = parse(payload)?;
    if envelope.center != topic.center {
        return Err(Rejection::Mismatch);
    }
    let id_ok = !envelope.id.is_empty()
        && envelope.id.len() <= MAX_ID_LEN
        && !envelope.id.chars().any(char::is_control);
    if !id_ok || !is_label(&envelope.hub) || !is_label(&envelope.center) {
        return Err(Rejection::BadId);
    }
    let body = body(topic, payload)?;
    Ok(Message {
        id: envelope.id,
        hub: envelope.hub,
        center: envelope.center,
        class: topic.class,
        body,
    })
}

fn body(topic: &UpstreamTopic, payload: &[u8]) -> Result<Body, Rejection> {
    let device = topic.device.as_deref().unwrap_or_default();
    let body = match topic.class {
        Class::Event | Class::Alarm => {
            let event: EventMessage = parse(payload)?;
            same_device(device, &event.device)?;
            in_range(event.received_at <= MAX_TS_MS && event.event.seq <= MAX_SEQ)?;
            labels(&[&event.kind, &event.event.event_type])?;
            Body::Event {
                alarm: topic.class == Class::Alarm,
                event,
            }
        }
        Class::Booking => {
            let booking: BookingMessage = parse(payload)?;
            labels(&[&booking.booking, &booking.status, &booking.kind])?;
            in_range(
                (1..=MAX_SEQ).contains(&booking.rev)
                    && [booking.at, booking.slot_start, booking.slot_end]
                        .iter()
                        .all(|ms| *ms <= MAX_TS_MS),
            )?;
            Body::Booking(booking)
        }
        Class::Visits => {
            let visits: VisitsMessage = parse(payload)?;
            let day = NaiveDate::parse_from_str(&visits.day, "%Y-%m-%d")
                .map_err(|_| Rejection::OutOfRange)?;
            in_range(visits.visits <= MAX_VISITS_PER_DAY && visits.at <= MAX_TS_MS)?;
            Body::Visits {
                day,
                visits: visits.visits,
                at: visits.at,
            }
        }
        Class::Twin => {
            let twin: TwinMessage = parse(payload)?;
            same_device(device, &twin.device)?;
            labels(&[&twin.kind, &twin.change])?;
            in_range(twin.at <= MAX_TS_MS)?;
            Body::Twin(twin)
        }
        Class::Telemetry => {
            let window: TelemetryMessage = parse(payload)?;
            same_device(device, &window.device)?;
            in_range(window.from <= window.to && window.to <= MAX_TS_MS)?;
            Body::Telemetry { at: window.to }
        }
        Class::TelemetryRaw => {
            let raw: TelemetryRawMessage = parse(payload)?;
            same_device(device, &raw.device)?;
            in_range(raw.received_at <= MAX_TS_MS)?;
            Body::Telemetry {
                at: raw.received_at,
            }
        }
        Class::CommandOutcome => {
            let outcome: CommandOutcomeMessage = parse(payload)?;
            same_device(device, &outcome.device)?;
            in_range(is_command_id(&outcome.command) && is_command_op(&outcome.op))?;
            in_range(
                OUTCOME_STATUSES.contains(&outcome.status.as_str())
                    && outcome.at <= MAX_TS_MS
                    && outcome
                        .error
                        .as_ref()
                        .is_none_or(|e| e.len() <= MAX_ERROR_LEN),
            )?;
            Body::Outcome(outcome)
        }
        Class::CommandRefused => {
            let refused: CommandRefusedMessage = parse(payload)?;
            let device_ok = refused
                .device
                .as_deref()
                .is_none_or(protocol::is_valid_device_id);
            let command_ok = refused.command.as_deref().is_none_or(is_command_id);
            if !device_ok || !command_ok {
                return Err(Rejection::BadId);
            }
            in_range(Refusal::parse(&refused.reason).is_some() && refused.at <= MAX_TS_MS)?;
            Body::Refused(refused)
        }
        // Decided before the envelope (`decode`).
        Class::Command => return Err(Rejection::BadPayload),
    };
    Ok(body)
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(payload).map_err(|_| Rejection::BadPayload)
}

fn same_device(topic: &str, payload: &str) -> Result<(), Rejection> {
    if !protocol::is_valid_device_id(payload) {
        return Err(Rejection::BadId);
    }
    match topic == payload {
        true => Ok(()),
        false => Err(Rejection::Mismatch),
    }
}

fn labels(values: &[&str]) -> Result<(), Rejection> {
    match values.iter().all(|value| is_label(value)) {
        true => Ok(()),
        false => Err(Rejection::BadId),
    }
}

fn in_range(holds: bool) -> Result<(), Rejection> {
    match holds {
        true => Ok(()),
        false => Err(Rejection::OutOfRange),
    }
}

/// 1-64 letters, digits, `-`, `_` or `.`: a center, a hub, a kind, a
/// status (as the hub's labels, plus `.` for client ids).
pub fn is_label(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn incoming(topic: &str, payload: Value) -> Incoming {
        Incoming {
            topic: topic.into(),
            payload: serde_json::to_vec(&payload).unwrap(),
        }
    }

    fn event(device: &str, at: u64) -> Value {
        json!({"id": "h1/ev/p1/e1", "hub": "h1", "center": "c1", "device": device,
               "kind": "piano", "received_at": at,
               "event": {"id": "e1", "ts": 5, "seq": 1, "type": "session_start"}})
    }

    fn visits(day: &str, visits: u64) -> Value {
        json!({"id": format!("h1/vi/c1/{day}/{visits}"), "hub": "h1", "center": "c1",
               "day": day, "visits": visits, "at": 7})
    }

    fn check(topic: &str, payload: Value, expect: Result<Class, Option<Rejection>>) {
        let got = match decode(&incoming(topic, payload)) {
            Decoded::Message(message) => Ok(message.class),
            Decoded::Ignored | Decoded::Skipped => Err(None),
            Decoded::Rejected(reason) => Err(Some(reason)),
        };
        assert_eq!(got, expect, "{topic}");
    }

    #[test]
    fn messages_are_checked_at_the_boundary() {
        check("yz/v1/c1/p1/event", event("p1", 9), Ok(Class::Event));
        check("yz/v1/c1/p1/alarm", event("p1", 9), Ok(Class::Alarm));
        check(
            "yz/v1/c1/visits",
            visits("2026-11-28", 12),
            Ok(Class::Visits),
        );
        assert_eq!(
            decode(&incoming("yz/v1/c1/p1/cmd", event("p1", 9))),
            Decoded::Skipped
        );
        check("yz/v1/c1/p1/what", event("p1", 9), Err(None));
        let outcome = |status: &str, command: &str| {
            json!({"id": "h1/co/p1/x", "hub": "h1", "center": "c1", "device": "p1",
                   "command": command, "op": "unlock", "status": status,
                   "attempts": 1, "at": 9})
        };
        let command = "0123456789abcdef0";
        check(
            "yz/v1/c1/p1/cmd/outcome",
            outcome("acked", command),
            Ok(Class::CommandOutcome),
        );
        check(
            "yz/v1/c1/p1/cmd/outcome",
            outcome("done", command),
            Err(Some(Rejection::OutOfRange)),
        );
        check(
            "yz/v1/c1/p2/cmd/outcome",
            outcome("acked", command),
            Err(Some(Rejection::Mismatch)),
        );
        let refused = |reason: &str, device: &str| {
            json!({"id": "h1/cr/9/1", "hub": "h1", "center": "c1", "device": device,
                   "command": null, "reason": reason, "at": 9})
        };
        check(
            "yz/v1/c1/cmd_refused",
            refused("forged", "p1"),
            Ok(Class::CommandRefused),
        );
        check(
            "yz/v1/c1/cmd_refused",
            refused("bored", "p1"),
            Err(Some(Rejection::OutOfRange)),
        );
        check(
            "yz/v1/c1/cmd_refused",
            refused("forged", "p/1"),
            Err(Some(Rejection::BadId)),
        );
        check(
            "yz/v1/c2/p1/event",
            event("p1", 9),
            Err(Some(Rejection::Mismatch)),
        );
        check(
            "yz/v1/c1/p2/event",
            event("p1", 9),
            Err(Some(Rejection::Mismatch)),
        );
        check(
            "yz/v1/c1/p1/event",
            event("p 1", 9),
            Err(Some(Rejection::BadId)),
        );
        check(
            "yz/v1/c1/p1/event",
            event("p1", MAX_TS_MS + 1),
            Err(Some(Rejection::OutOfRange)),
        );
        check(
            "yz/v1/c1/visits",
            visits("2026-13-01", 1),
            Err(Some(Rejection::OutOfRange)),
        );
        check(
            "yz/v1/c1/visits",
            visits("2026-11-28", MAX_VISITS_PER_DAY + 1),
            Err(Some(Rejection::OutOfRange)),
        );
        check(
            "yz/v1/c1/visits",
            json!([1, 2]),
            Err(Some(Rejection::BadPayload)),
        );
        check(
            "yz/v1/c1/booking",
            visits("2026-11-28", 1),
            Err(Some(Rejection::BadPayload)),
        );
        let mut bad_id = visits("2026-11-28", 1);
        bad_id["id"] = json!("");
        check("yz/v1/c1/visits", bad_id, Err(Some(Rejection::BadId)));
        let not_json = Incoming {
            topic: "yz/v1/c1/visits".into(),
            payload: b"\xff".to_vec(),
        };
        assert_eq!(decode(&not_json), Decoded::Rejected(Rejection::BadPayload));
    }
}
