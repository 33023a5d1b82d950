//! What the hub forwards upstream (docs/upstream.md): one outbox entry per
//! message, its class, the topic under `yz/v1/{center}/…` and the JSON
//! payload with its message id (the types of `protocol::upstream`, which
//! the district reads with), and the entry's binary encoding in the
//! outbox. Plain data; the store writes entries in the same batch as the
//! facts they describe, the uplink service sends them.
//!
//! Message ids are natural, so a fact resent after a crash or a reconnect
//! carries the id it had: `{hub}/ev/{device}/{event id}`,
//! `{hub}/bk/{booking}/{rev}`, `{hub}/vi/{center}/{day}/{visits}`,
//! `{hub}/tw/{device}/{at}/{change}`, `{hub}/tm/{device}/{from}/{to}`,
//! `{hub}/tr/{device}/{seq}/{ts}`, `{hub}/co/{device}/{command}` (a district
//! command's outcome); a refusal's is made once, `{hub}/cr/{at}/{n}`.
//!
//! Also the downlink's record of a command taken (`DownlinkTaken`): kept
//! until its expiry, so its id is never taken twice.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use protocol::api::CommandRecord;
use protocol::upstream::{
    outcome_id, outcome_topic, refused_id, refused_topic, BookingMessage, CommandOutcomeMessage,
    CommandRefusedMessage, EventMessage, Refusal, TelemetryMessage, TelemetryRawMessage,
    TwinMessage, VisitsMessage, TOPIC_ROOT,
};
use protocol::{DeviceKind, FieldValue, Telemetry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::booking::Booking;
use super::device::StoredEvent;
use super::twin::Twin;

/// What an entry is; the `class` label of the uplink metrics. Telemetry
/// classes are dropped first when the outbox is over its bound; the others
/// never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UplinkClass {
    /// A device's stored event.
    Event,
    /// An interlock trip or an alarm acknowledged (hub events).
    Alarm,
    /// Online, offline, birth.
    Twin,
    /// A booking written by the desk.
    Booking,
    /// A center's visits of one local day (the latest value only).
    Visits,
    /// A device's telemetry over one window: count, min, max, last.
    Telemetry,
    /// One telemetry message as received (`[uplink] raw_telemetry`).
    TelemetryRaw,
    /// A district command's outcome: acked, failed, expired.
    CommandOutcome,
    /// A command refused, and why (dropped with telemetry past the bound,
    /// so a flood of forged commands cannot grow the outbox).
    CommandRefused,
}

impl UplinkClass {
    pub const ALL: [UplinkClass; 9] = [
        UplinkClass::Event,
        UplinkClass::Alarm,
        UplinkClass::Twin,
        UplinkClass::Booking,
        UplinkClass::Visits,
        UplinkClass::Telemetry,
        UplinkClass::TelemetryRaw,
        UplinkClass::CommandOutcome,
        UplinkClass::CommandRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UplinkClass::Event => "event",
            UplinkClass::Alarm => "alarm",
            UplinkClass::Twin => "twin",
            UplinkClass::Booking => "booking",
            UplinkClass::Visits => "visits",
            UplinkClass::Telemetry => "telemetry",
            UplinkClass::TelemetryRaw => "telemetry_raw",
            UplinkClass::CommandOutcome => "command_outcome",
            UplinkClass::CommandRefused => "command_refused",
        }
    }

    /// Dropped (oldest first) when the outbox is over its bound.
    pub fn droppable(self) -> bool {
        matches!(
            self,
            UplinkClass::Telemetry | UplinkClass::TelemetryRaw | UplinkClass::CommandRefused
        )
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<UplinkClass> {
        UplinkClass::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkEntry {
    pub class: UplinkClass,
    /// Unix ms it was written to the outbox (`yizhan_uplink_oldest_age_seconds`).
    pub at: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The encoding's version byte.
const ENCODING: u8 = 1;
/// Version, class, `at`, topic length.
const HEADER: usize = 1 + 1 + 8 + 2;

impl UplinkEntry {
    fn new(class: UplinkClass, at: u64, topic: String, payload: &impl Serialize) -> UplinkEntry {
        UplinkEntry {
            class,
            at,
            topic,
            // invariant: the payloads are structs of strings, numbers and
            // JSON values with string keys; they always serialize.
            payload: serde_json::to_vec(payload).expect("a payload serializes"),
        }
    }

    /// `version, class, at (BE), topic length (BE u16), topic, payload`.
    pub fn encode(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let topic_len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        let topic = &topic[..usize::from(topic_len)];
        let mut bytes = Vec::with_capacity(HEADER + topic.len() + self.payload.len());
        bytes.push(ENCODING);
        bytes.push(self.class.code());
        bytes.extend_from_slice(&self.at.to_be_bytes());
        bytes.extend_from_slice(&topic_len.to_be_bytes());
        bytes.extend_from_slice(topic);
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// The entry `encode` wrote; `None` for bytes it did not write.
    pub fn decode(bytes: &[u8]) -> Option<UplinkEntry> {
        let header = bytes.get(..HEADER)?;
        if header[0] != ENCODING {
            return None;
        }
        let class = UplinkClass::from_code(header[1])?;
        let at = u64::from_be_bytes(header[2..10].try_into().ok()?);
        let topic_len = usize::from(u16::from_be_bytes(header[10..12].try_into().ok()?));
        let topic = bytes.get(HEADER..HEADER + topic_len)?;
        Some(UplinkEntry {
            class,
            at,
            topic: String::from_utf8(topic.to_vec()).ok()?,
            payload: bytes[HEADER + topic_len..].to_vec(),
        })
    }
}

/// `yz/v1/{center}/{device}/{what}`.
fn device_topic(center: &str, device: &str, what: &str) -> String {
    format!("{TOPIC_ROOT}/{center}/{device}/{what}")
}

/// `yz/v1/{center}/{what}`.
fn center_topic(center: &str, what: &str) -> String {
    format!("{TOPIC_ROOT}/{center}/{what}")
}

/// The hub events that are alarms (`actions`: a trip, an acknowledgement).
const ALARM_EVENTS: [&str; 2] = ["interlock_trip", "alarm_ack"];

/// A stored event: on `…/{device}/alarm` for the hub's alarm events, else
/// on `…/{device}/event`.
pub fn event(hub: &str, stored: &StoredEvent) -> UplinkEntry {
    let from_hub = stored.event.body.get("source").and_then(Value::as_str) == Some("hub");
    let alarm = from_hub && ALARM_EVENTS.contains(&stored.event.event_type.as_str());
    let (class, what) = match alarm {
        true => (UplinkClass::Alarm, "alarm"),
        false => (UplinkClass::Event, "event"),
    };
    let message = EventMessage {
        id: format!("{hub}/ev/{}/{}", stored.device, stored.event.id),
        hub: hub.into(),
        center: stored.center.clone(),
        device: stored.device.clone(),
        kind: stored.kind.as_str().into(),
        received_at: stored.received_at,
        event: stored.event.clone(),
    };
    let topic = device_topic(&stored.center, &stored.device, what);
    UplinkEntry::new(class, stored.received_at, topic, &message)
}

/// The `rev`th write of a booking (1 for its first). Resident ids and
/// birthdates stay in the center.
pub fn booking(hub: &str, booking: &Booking, rev: u64, at: u64) -> UplinkEntry {
    let message = BookingMessage {
        id: format!("{hub}/bk/{}/{rev}", booking.id),
        hub: hub.into(),
        center: booking.center.clone(),
        booking: booking.id.clone(),
        rev,
        resource: booking.resource.clone(),
        kind: booking.kind.clone(),
        slot_start: booking.slot_start,
        slot_end: booking.slot_end,
        group: booking.group.as_str().into(),
        status: booking.status.as_str().into(),
        at,
    };
    let topic = center_topic(&booking.center, "booking");
    UplinkEntry::new(UplinkClass::Booking, at, topic, &message)
}

/// A center's visits of local `day` so far.
pub fn visits(hub: &str, center: &str, day: NaiveDate, visits: u64, at: u64) -> UplinkEntry {
    let message = VisitsMessage {
        id: format!("{hub}/vi/{center}/{day}/{visits}"),
        hub: hub.into(),
        center: center.into(),
        day: day.to_string(),
        visits,
        at,
    };
    let topic = center_topic(center, "visits");
    UplinkEntry::new(UplinkClass::Visits, at, topic, &message)
}

/// What changed on a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwinChange {
    Online,
    Offline,
    Birth,
}

impl TwinChange {
    pub fn as_str(self) -> &'static str {
        match self {
            TwinChange::Online => "online",
            TwinChange::Offline => "offline",
            TwinChange::Birth => "birth",
        }
    }
}

/// A twin's presence or birth changed at `at`.
pub fn twin(hub: &str, twin: &Twin, change: TwinChange, at: u64) -> UplinkEntry {
    let message = TwinMessage {
        id: format!("{hub}/tw/{}/{at}/{}", twin.id, change.as_str()),
        hub: hub.into(),
        center: twin.center.clone(),
        device: twin.id.clone(),
        kind: twin.kind.as_str().into(),
        room: twin.room.clone(),
        change: change.as_str().into(),
        online: change != TwinChange::Offline,
        model: twin.model.clone(),
        fw: twin.fw.clone(),
        at,
    };
    let topic = device_topic(&twin.center, &twin.id, "twin");
    UplinkEntry::new(UplinkClass::Twin, at, topic, &message)
}

/// One numeric field over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldStats {
    pub min: f64,
    pub max: f64,
    pub last: f64,
}

impl FieldStats {
    pub fn new(value: f64) -> FieldStats {
        FieldStats {
            min: value,
            max: value,
            last: value,
        }
    }

    pub fn add(&mut self, value: f64) {
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last = value;
    }
}

/// Which device a telemetry entry is about.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRef {
    pub id: String,
    pub center: String,
    pub kind: DeviceKind,
}

impl DeviceRef {
    pub fn of(twin: &Twin) -> DeviceRef {
        DeviceRef {
            id: twin.id.clone(),
            center: twin.center.clone(),
            kind: twin.kind,
        }
    }
}

/// A device's telemetry in the window `[from, to)` (hub clock, unix ms):
/// how many messages, and min/max/last of each numeric field.
pub struct TelemetryWindow<'a> {
    pub device: &'a DeviceRef,
    pub from: u64,
    pub to: u64,
    pub count: u64,
    pub fields: &'a BTreeMap<String, FieldStats>,
}

pub fn telemetry_window(hub: &str, window: &TelemetryWindow) -> UplinkEntry {
    let device = window.device;
    let fields: Map<String, Value> = window
        .fields
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                json!({"min": s.min, "max": s.max, "last": s.last}),
            )
        })
        .collect();
    let message = TelemetryMessage {
        id: format!("{hub}/tm/{}/{}/{}", device.id, window.from, window.to),
        hub: hub.into(),
        center: device.center.clone(),
        device: device.id.clone(),
        kind: device.kind.as_str().into(),
        from: window.from,
        to: window.to,
        count: window.count,
        fields,
    };
    let topic = device_topic(&device.center, &device.id, "telemetry");
    UplinkEntry::new(UplinkClass::Telemetry, window.to, topic, &message)
}

/// One telemetry message as received at `at`.
pub fn telemetry_raw(hub: &str, device: &DeviceRef, telemetry: &Telemetry, at: u64) -> UplinkEntry {
    let fields: Map<String, Value> = telemetry
        .fields
        .iter()
        .map(|(name, value)| (name.clone(), field_json(value)))
        .collect();
    let message = TelemetryRawMessage {
        id: format!("{hub}/tr/{}/{}/{}", device.id, telemetry.seq, telemetry.ts),
        hub: hub.into(),
        center: device.center.clone(),
        device: device.id.clone(),
        kind: device.kind.as_str().into(),
        received_at: at,
        ts: telemetry.ts,
        seq: telemetry.seq,
        fields,
    };
    let topic = device_topic(&device.center, &device.id, "telemetry/raw");
    UplinkEntry::new(UplinkClass::TelemetryRaw, at, topic, &message)
}

/// A district command taken by the hub: kept (by id) until it expired, so
/// its id is never taken again, and so its outcome goes to its center.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownlinkTaken {
    pub center: String,
    pub device: String,
    pub expires_at: u64,
}

/// A district command's outcome (its record is final), for `center`.
pub fn command_outcome(hub: &str, center: &str, record: &CommandRecord) -> UplinkEntry {
    let at = record.completed_at.unwrap_or(record.created_at);
    let message = CommandOutcomeMessage {
        id: outcome_id(hub, &record.device, &record.id),
        hub: hub.into(),
        center: center.into(),
        device: record.device.clone(),
        command: record.id.clone(),
        op: record.op.clone(),
        status: record.status.as_str().into(),
        error: record.error.clone(),
        attempts: record.attempts,
        at,
    };
    let topic = outcome_topic(center, &record.device);
    UplinkEntry::new(UplinkClass::CommandOutcome, at, topic, &json!(message))
}

/// What a refused command named (its topic's center and device, its id),
/// and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub center: Option<String>,
    pub command: Option<String>,
    pub device: Option<String>,
    pub reason: Refusal,
}

/// A command refused at `at`, reported to `center`; `n` makes its id
/// unique in the hub.
pub fn command_refused(hub: &str, center: &str, refused: &Refused, at: u64, n: u64) -> UplinkEntry {
    let message = CommandRefusedMessage {
        id: refused_id(hub, at, n),
        hub: hub.into(),
        center: center.into(),
        command: refused.command.clone(),
        device: refused.device.clone(),
        reason: refused.reason.as_str().into(),
        at,
    };
    let topic = refused_topic(center);
    UplinkEntry::new(UplinkClass::CommandRefused, at, topic, &json!(message))
}

fn field_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => json!(b),
        FieldValue::Number(n) => json!(n),
        FieldValue::Text(t) => json!(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_roundtrip(class: UplinkClass, topic: &str, payload: &[u8]) {
        let entry = UplinkEntry {
            class,
            at: 1_700_000_000_123,
            topic: topic.into(),
            payload: payload.to_vec(),
        };
        assert_eq!(UplinkEntry::decode(&entry.encode()), Some(entry));
    }

    #[test]
    fn entries_decode_to_what_was_encoded() {
        for class in UplinkClass::ALL {
            check_roundtrip(class, "yz/v1/c1/p1/event", br#"{"id":"x"}"#);
        }
        check_roundtrip(UplinkClass::Visits, "", b"");
        assert_eq!(UplinkEntry::decode(b""), None);
        assert_eq!(UplinkEntry::decode(&[9; 20]), None, "unknown version");
        let mut short = check_entry().encode();
        short.truncate(HEADER + 3);
        assert_eq!(UplinkEntry::decode(&short), None, "topic cut short");
    }

    fn check_entry() -> UplinkEntry {
        UplinkEntry {
            class: UplinkClass::Event,
            at: 1,
            topic: "yz/v1/c1/p1/event".into(),
            payload: b"{}".to_vec(),
        }
    }

    fn stored(event_type: &str, source: Option<&str>) -> StoredEvent {
        let mut body = Map::new();
        if let Some(source) = source {
            body.insert("source".into(), source.into());
        }
        StoredEvent {
            device: "r1".into(),
            center: "c1".into(),
            kind: DeviceKind::TherapyRobot,
            received_at: 7,
            event: protocol::Event {
                id: "e1".into(),
                ts: 5,
                seq: 1,
                event_type: event_type.into(),
                body,
            },
        }
    }

    fn check_event(event_type: &str, source: Option<&str>, class: UplinkClass, topic: &str) {
        let entry = event("hub1", &stored(event_type, source));
        assert_eq!((entry.class, entry.topic.as_str()), (class, topic));
        let payload: Value = serde_json::from_slice(&entry.payload).unwrap();
        assert_eq!(payload["id"], "hub1/ev/r1/e1");
        assert_eq!(payload["event"]["type"], event_type);
    }

    #[test]
    fn hub_alarm_events_go_to_the_alarm_topic_and_others_to_the_event_topic() {
        let (event_topic, alarm_topic) = ("yz/v1/c1/r1/event", "yz/v1/c1/r1/alarm");
        check_event(
            "interlock_trip",
            Some("hub"),
            UplinkClass::Alarm,
            alarm_topic,
        );
        check_event("alarm_ack", Some("hub"), UplinkClass::Alarm, alarm_topic);
        check_event("interlock_trip", None, UplinkClass::Event, event_topic);
        check_event("session_start", None, UplinkClass::Event, event_topic);
    }

    #[test]
    fn only_telemetry_is_droppable() {
        let droppable: Vec<_> = UplinkClass::ALL
            .into_iter()
            .filter(|c| c.droppable())
            .collect();
        assert_eq!(
            droppable,
            [
                UplinkClass::Telemetry,
                UplinkClass::TelemetryRaw,
                UplinkClass::CommandRefused
            ]
        );
    }
}
