//! What the booking desk tells residents (notifications) and what it
//! knows of bound devices out of service (outages).

use serde::{Deserialize, Serialize};

/// A message to a resident (listed by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    pub resident: String,
    pub booking: String,
    /// `promoted`, `released`, `cancelled`.
    pub kind: String,
    pub message: String,
    pub at: u64,
}

/// Why a bound device is out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageReason {
    Fault,
    Offline,
}

/// A bound device out of service: `active` once it blocks slots (a fault at
/// once, offline after `offline_block_minutes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub since: u64,
    pub reason: OutageReason,
    pub active: bool,
}
