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
    /// The certificate a renewal replaced, while it may still connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_certificate: Option<PreviousCertificate>,
}

/// A device record without credentials (tests): provisioned at 0, its
/// certificate never expiring before 0.
#[cfg(test)]
pub(crate) fn record(
    id: &str,
    center: &str,
    room: &str,
    kind: protocol::DeviceKind,
) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        center: center.into(),
        room: room.into(),
        kind,
        password_sha256: String::new(),
        certificate_sha256: String::new(),
        not_after: 0,
        provisioned_at: 0,
        previous_certificate: None,
    }
}

/// A device's certificate before its last renewal, accepted until a
/// deadline so the device can be given the new one meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousCertificate {
    /// SHA-256 (hex) of the replaced certificate (DER).
    pub certificate_sha256: String,
    /// Until when it connects (unix ms); refused from then on.
    pub accepted_until: u64,
}

/// What a device record says of a certificate a client presented for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The certificate issued last.
    Current,
    /// The one before, still within its grace (until the unix ms given).
    InGrace(u64),
    /// The one before, past its grace.
    Superseded,
    /// Signed by the hub's CA but never issued to this device (or
    /// replaced two renewals ago): a clone.
    NotIssued,
}

impl DeviceRecord {
    /// How the record stands towards a certificate with fingerprint
    /// `sha256` at `now_ms`.
    pub fn standing(&self, sha256: &str, now_ms: u64) -> Standing {
        if self.certificate_sha256 == sha256 {
            return Standing::Current;
        }
        match &self.previous_certificate {
            Some(previous) if previous.certificate_sha256 == sha256 => {
                match now_ms < previous.accepted_until {
                    true => Standing::InGrace(previous.accepted_until),
                    false => Standing::Superseded,
                }
            }
            _ => Standing::NotIssued,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_devices_old_certificate_stands_until_its_grace_ends() {
        let mut record = DeviceRecord {
            certificate_sha256: "new".into(),
            ..record("d1", "c", "r", protocol::DeviceKind::Gate)
        };
        let check = |record: &DeviceRecord, sha: &str, now: u64, expect: Standing| {
            assert_eq!(record.standing(sha, now), expect, "{sha} at {now}");
        };
        check(&record, "new", 5, Standing::Current);
        check(&record, "old", 5, Standing::NotIssued);
        record.previous_certificate = Some(PreviousCertificate {
            certificate_sha256: "old".into(),
            accepted_until: 10,
        });
        check(&record, "new", 50, Standing::Current);
        check(&record, "old", 9, Standing::InGrace(10));
        check(&record, "old", 10, Standing::Superseded);
        check(&record, "other", 5, Standing::NotIssued);
        let stored = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<DeviceRecord>(&stored).unwrap(),
            record
        );
        record.previous_certificate = None;
        let old_layout = serde_json::to_string(&record).unwrap();
        assert!(!old_layout.contains("previous_certificate"), "{old_layout}");
    }
}
