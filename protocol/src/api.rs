//! Bodies of the hub's HTTP API that clients (device-sim, tests, front ends)
//! send or read.

use serde::{Deserialize, Serialize};

use crate::DeviceKind;

/// `POST /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub id: String,
    pub center: String,
    pub room: String,
    pub kind: DeviceKind,
}

/// 201 answer to a provisioning request. Shown once: the hub keeps only the
/// certificate's fingerprint and a hash of the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provisioned {
    pub id: String,
    /// PEM client certificate, Organization = the device id.
    pub certificate: String,
    /// PEM PKCS#8 private key of that certificate.
    pub private_key: String,
    /// PEM certificate of the hub's CA (trust anchor for the broker).
    pub ca_certificate: String,
    /// MQTT username (= the device id) and password to send in CONNECT.
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// Certificate expiry, unix milliseconds.
    pub not_after: u64,
}

/// Every API error body: `{"error":"…"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
