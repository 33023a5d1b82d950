//! A device as provisioning recorded it, and its events as stored.

use serde::{Deserialize, Serialize};

use super::twin::Twin;

/// What provisioning recorded about a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: String,
    pub center: String,
    pub room: String,
    pub kind: protocol::DeviceKind,
    /// SHA-256 (hex) of the MQTT password.
    pub password_sha256: String,
    /// SHA-256 (hex) of the issued certificate (DER).
    pub certificate_sha256: String,
    pub not_after: u64,
    pub provisioned_at: u64,
}

/// An event as stored, exactly once per `(device, id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    pub device: String,
    pub center: String,
    pub kind: protocol::DeviceKind,
    pub received_at: u64,
    pub event: protocol::Event,
}

impl StoredEvent {
    /// An event the hub raises about a device itself (an interlock trip, an
    /// alarm acknowledged): id `hub-…`, seq 0, body `source: "hub"`.
    pub fn from_hub(
        twin: &Twin,
        event_type: &str,
        mut body: serde_json::Map<String, serde_json::Value>,
        now_ms: u64,
    ) -> StoredEvent {
        body.insert("source".into(), "hub".into());
        StoredEvent {
            device: twin.id.clone(),
            center: twin.center.clone(),
            kind: twin.kind,
            received_at: now_ms,
            event: protocol::Event {
                id: format!("hub-{now_ms:013x}{:08x}", rand::random::<u32>()),
                ts: now_ms,
                seq: 0,
                event_type: event_type.to_string(),
                body,
            },
        }
    }
}
