//! Yizhan device contract v1 (`docs/protocol.md`) and the HTTP API's
//! request/response bodies.
//!
//! This crate owns the wire format: topic names, payload shapes and the rules
//! that make an identifier valid. The hub, device-sim and the end-to-end tests
//! all speak through these types, so the contract is written down once.

pub mod api;
pub mod calendar;
pub mod limits;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod secret;
pub mod topic;
pub mod upstream;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use topic::{Channel, Topic};

/// Longest device id accepted (ASCII letters and digits only).
pub const MAX_DEVICE_ID_LEN: usize = 48;

/// Returns true when `id` is a valid device id: 1–48 ASCII letters or digits.
///
/// ASCII only on purpose: rumqttd's tenant check accepts any Unicode
/// alphanumeric Organization, so provisioning is where the rule is enforced.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_DEVICE_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// What a device is. Unknown kinds are rejected by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Piano,
    TherapyRobot,
    Gate,
    Counter,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Piano,
        DeviceKind::TherapyRobot,
        DeviceKind::Gate,
        DeviceKind::Counter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Piano => "piano",
            DeviceKind::TherapyRobot => "therapy_robot",
            DeviceKind::Gate => "gate",
            DeviceKind::Counter => "counter",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        DeviceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `/tenants/D/birth`, published after every connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Birth {
    pub kind: DeviceKind,
    pub fw: String,
    pub model: String,
    /// MQTT keepalive the device uses, in seconds. The hub marks the device
    /// offline when nothing arrived for 1.5× this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u16>,
}

/// Payload of `/tenants/D/status` (retained; the will carries `offline`).
pub const STATUS_ONLINE: &str = "online";
pub const STATUS_OFFLINE: &str = "offline";

/// The room of the people counter that counts a center's visits: its `in`
/// are the center's visits, its `in − out` the headcount.
pub const ENTRANCE_ROOM: &str = "entrance";

/// A telemetry value: number, bool or string. Nested objects and arrays are
/// a contract violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum FieldValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// `/tenants/D/telemetry`: `{"ts":unix_ms,"seq":n, "<field>": value, …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub ts: u64,
    pub seq: u64,
    pub fields: Vec<(String, FieldValue)>,
}

/// `/tenants/D/event`: `{"id":"…","ts":unix_ms,"seq":n,"type":"…", …}`.
/// Fields other than the four named ones are kept as the event's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: String,
    pub ts: u64,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

/// `/tenants/D/event/ack`, published by the hub once the event is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventAck {
    pub id: String,
}

/// `/tenants/D/cmd`, hub to device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub op: String,
    #[serde(default)]
    pub args: Value,
    pub expires_at: u64,
}

/// `/tenants/D/cmd/ack`, device to hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `/tenants/D/error`: why the hub rejected a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub topic: String,
    pub reason: String,
}

/// Why a telemetry payload does not follow the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelemetryError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("missing or invalid field `{0}` (unsigned integer required)")]
    BadHeader(&'static str),
    #[error("field `{0}` has the wrong type (number, bool or string required)")]
    WrongType(String),
}

impl Telemetry {
    /// Decodes and validates a telemetry payload.
    pub fn decode(payload: &[u8]) -> Result<Telemetry, TelemetryError> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| TelemetryError::Malformed(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(TelemetryError::NotObject);
        };
        let header = |name: &'static str| {
            map.get(name)
                .and_then(Value::as_u64)
                .ok_or(TelemetryError::BadHeader(name))
        };
        let ts = header("ts")?;
        let seq = header("seq")?;
        let mut fields = Vec::with_capacity(map.len().saturating_sub(2));
        for (name, value) in map {
            if name == "ts" || name == "seq" {
                continue;
            }
            let field = match value {
                Value::Bool(b) => FieldValue::Bool(b),
                Value::Number(n) => match n.as_f64() {
                    Some(f) => FieldValue::Number(f),
                    None => return Err(TelemetryError::WrongType(name)),
                },
                Value::String(s) => FieldValue::Text(s),
                _ => return Err(TelemetryError::WrongType(name)),
            };
            fields.push((name, field));
        }
        Ok(Telemetry { ts, seq, fields })
    }

    /// Encodes the payload as JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = Map::new();
        map.insert("ts".into(), self.ts.into());
        map.insert("seq".into(), self.seq.into());
        for (name, value) in &self.fields {
            // invariant: a FieldValue always serializes to a JSON value.
            map.insert(
                name.clone(),
                serde_json::to_value(value).expect("field value"),
            );
        }
        // invariant: a JSON map always serializes.
        serde_json::to_vec(&map).expect("telemetry map")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_ascii_alphanumeric_up_to_48() {
        assert!(is_valid_device_id("piano01"));
        assert!(is_valid_device_id(&"a".repeat(48)));
        assert!(!is_valid_device_id(&"a".repeat(49)));
        assert!(!is_valid_device_id(""));
        assert!(!is_valid_device_id("dév1"));
        assert!(!is_valid_device_id("a-b"));
        assert!(!is_valid_device_id("a.b"));
    }

    #[test]
    fn telemetry_round_trips_and_rejects_nested_values() {
        let t = Telemetry {
            ts: 1,
            seq: 2,
            fields: vec![
                ("temp_c".into(), FieldValue::Number(40.5)),
                ("heating".into(), FieldValue::Bool(true)),
                ("mode".into(), FieldValue::Text("eco".into())),
            ],
        };
        let mut back = Telemetry::decode(&t.encode()).unwrap();
        back.fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = t.clone();
        want.fields.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        assert_eq!(
            Telemetry::decode(br#"{"ts":1,"seq":1,"x":{"y":1}}"#),
            Err(TelemetryError::WrongType("x".into()))
        );
        assert_eq!(
            Telemetry::decode(br#"{"seq":1}"#),
            Err(TelemetryError::BadHeader("ts"))
        );
        assert!(matches!(
            Telemetry::decode(b"{"),
            Err(TelemetryError::Malformed(_))
        ));
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in DeviceKind::ALL {
            assert_eq!(DeviceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(DeviceKind::parse("toaster"), None);
    }
}
