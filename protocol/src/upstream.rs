//! The upstream contract (docs/upstream.md): the topics a hub forwards to
//! under `yz/v1/{center}/…` and the JSON payload of each, as the district
//! service reads them. Every payload carries `id` (stable across resends,
//! so consumers drop duplicates), `hub` and `center`. Unknown fields are
//! ignored, so a newer hub may add some.
//!
//! The downlink (`downlink`, re-exported here): a district operator's
//! command to one device on `yz/v1/{center}/{device}/cmd`, signed with
//! Ed25519, and the hub's answers — its outcome and its refusals.

mod downlink;

pub use downlink::*;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Event;

/// The topics' root and contract version.
pub const TOPIC_ROOT: &str = "yz/v1";

/// What a message is, from its topic; the `class` a consumer counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// `yz/v1/{center}/{device}/event`: a device's stored event.
    Event,
    /// `yz/v1/{center}/{device}/alarm`: an interlock trip or an alarm
    /// acknowledged.
    Alarm,
    /// `yz/v1/{center}/{device}/twin`: online, offline, birth.
    Twin,
    /// `yz/v1/{center}/{device}/telemetry`: a window's aggregate.
    Telemetry,
    /// `yz/v1/{center}/{device}/telemetry/raw`: one reading as received.
    TelemetryRaw,
    /// `yz/v1/{center}/booking`: one write of a booking.
    Booking,
    /// `yz/v1/{center}/visits`: a center's visits of one local day so far.
    Visits,
    /// `yz/v1/{center}/{device}/cmd`: a district operator's signed command
    /// (district to hub).
    Command,
    /// `yz/v1/{center}/{device}/cmd/outcome`: a command's outcome
    /// (acked, failed, expired).
    CommandOutcome,
    /// `yz/v1/{center}/cmd_refused`: a command the hub refused, and why.
    CommandRefused,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::Event,
        Class::Alarm,
        Class::Twin,
        Class::Telemetry,
        Class::TelemetryRaw,
        Class::Booking,
        Class::Visits,
        Class::Command,
        Class::CommandOutcome,
        Class::CommandRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Event => "event",
            Class::Alarm => "alarm",
            Class::Twin => "twin",
            Class::Telemetry => "telemetry",
            Class::TelemetryRaw => "telemetry_raw",
            Class::Booking => "booking",
            Class::Visits => "visits",
            Class::Command => "command",
            Class::CommandOutcome => "command_outcome",
            Class::CommandRefused => "command_refused",
        }
    }
}

/// A topic of the contract, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTopic {
    pub center: String,
    /// The device, for the per-device classes.
    pub device: Option<String>,
    pub class: Class,
}

impl UpstreamTopic {
    /// `None` for a topic outside the contract.
    pub fn parse(topic: &str) -> Option<UpstreamTopic> {
        let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
        let levels: Vec<&str> = rest.split('/').collect();
        if levels.iter().any(|level| level.is_empty()) {
            return None;
        }
        let (center, device, class) = match levels.as_slice() {
            [center, "booking"] => (center, None, Class::Booking),
            [center, "visits"] => (center, None, Class::Visits),
            [center, "cmd_refused"] => (center, None, Class::CommandRefused),
            [center, device, "telemetry", "raw"] => (center, Some(device), Class::TelemetryRaw),
            [center, device, "cmd", "outcome"] => (center, Some(device), Class::CommandOutcome),
            [center, device, what] => {
                let class = match *what {
                    "event" => Class::Event,
                    "alarm" => Class::Alarm,
                    "twin" => Class::Twin,
                    "telemetry" => Class::Telemetry,
                    "cmd" => Class::Command,
                    _ => return None,
                };
                (center, Some(device), class)
            }
            _ => return None,
        };
        Some(UpstreamTopic {
            center: center.to_string(),
            device: device.map(|d| d.to_string()),
            class,
        })
    }
}

/// `yz/v1/{center}/{device}/event` and `…/alarm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub device: String,
    pub kind: String,
    /// Unix ms the hub received it.
    pub received_at: u64,
    pub event: Event,
}

/// `yz/v1/{center}/booking`: the `rev`th write of a booking (1 for its
/// first). Residents stay in the center.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub booking: String,
    pub rev: u64,
    pub resource: String,
    /// The resource's kind.
    pub kind: String,
    /// Unix ms.
    pub slot_start: u64,
    pub slot_end: u64,
    pub group: String,
    pub status: String,
    /// Unix ms of the write.
    pub at: u64,
}

/// `yz/v1/{center}/visits`: the center's visits of local `day` so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitsMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    /// `YYYY-MM-DD`, the centers' local day.
    pub day: String,
    pub visits: u64,
    pub at: u64,
}

/// `yz/v1/{center}/{device}/twin`: a twin's presence or birth changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub device: String,
    pub kind: String,
    pub room: String,
    /// `online`, `offline` or `birth`.
    pub change: String,
    pub online: bool,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub fw: Option<String>,
    pub at: u64,
}

/// `yz/v1/{center}/{device}/telemetry`: a device's telemetry over
/// `[from, to)`: how many messages, min/max/last of each number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub device: String,
    pub kind: String,
    pub from: u64,
    pub to: u64,
    pub count: u64,
    pub fields: Map<String, Value>,
}

/// `yz/v1/{center}/{device}/telemetry/raw`: one telemetry message as the
/// hub received it (`[uplink] raw_telemetry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRawMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub device: String,
    pub kind: String,
    /// Unix ms the hub received it.
    pub received_at: u64,
    pub ts: u64,
    pub seq: u64,
    /// As sent.
    pub fields: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(topic: &str, expect: Option<(&str, Option<&str>, Class)>) {
        let parsed = UpstreamTopic::parse(topic);
        let expect = expect.map(|(center, device, class)| UpstreamTopic {
            center: center.into(),
            device: device.map(String::from),
            class,
        });
        assert_eq!(parsed, expect, "{topic}");
    }

    #[test]
    fn topics_parse_to_their_center_device_and_class() {
        check("yz/v1/c1/booking", Some(("c1", None, Class::Booking)));
        check("yz/v1/c1/visits", Some(("c1", None, Class::Visits)));
        check("yz/v1/c1/p1/event", Some(("c1", Some("p1"), Class::Event)));
        check("yz/v1/c1/r1/alarm", Some(("c1", Some("r1"), Class::Alarm)));
        check("yz/v1/c1/p1/twin", Some(("c1", Some("p1"), Class::Twin)));
        check(
            "yz/v1/c1/p1/telemetry",
            Some(("c1", Some("p1"), Class::Telemetry)),
        );
        check(
            "yz/v1/c1/p1/telemetry/raw",
            Some(("c1", Some("p1"), Class::TelemetryRaw)),
        );
        check("yz/v1/c1/p1/cmd", Some(("c1", Some("p1"), Class::Command)));
        check(
            "yz/v1/c1/p1/cmd/outcome",
            Some(("c1", Some("p1"), Class::CommandOutcome)),
        );
        check(
            "yz/v1/c1/cmd_refused",
            Some(("c1", None, Class::CommandRefused)),
        );
        for outside in [
            "yz/v2/c1/booking",
            "yz/v1/c1",
            "yz/v1//booking",
            "yz/v1/c1/p1/cmd/x",
            "yz/v1/c1/p1/event/x",
            "/tenants/p1/event",
        ] {
            check(outside, None);
        }
    }
}
