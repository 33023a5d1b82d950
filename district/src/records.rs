//! What the district keeps, as stored (JSON values in the store): per
//! center and local day the tally, each booking's latest write, each
//! device's presence, each hub's and each center's status, the alarms and
//! the refused messages.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One center's local day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTally {
    /// People through the entrance: the highest total the hub reported.
    pub visits: u64,
    /// Device events received that day (alarms not included).
    pub events: u64,
    /// Interlock trips and other alarms raised.
    pub alarms: u64,
    /// Alarms acknowledged by staff.
    pub alarm_acks: u64,
    /// Writes of bookings for slots starting that day.
    pub booking_writes: u64,
    /// Bookings for slots starting that day, by their latest status.
    pub bookings: BTreeMap<String, u64>,
}

/// A booking's latest write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingState {
    pub center: String,
    /// The local day of its slot's start, `YYYY-MM-DD`.
    pub day: String,
    pub rev: u64,
    pub status: String,
}

/// A device's presence, from its latest twin change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinState {
    pub center: String,
    pub online: bool,
    /// The hub's time of the change.
    pub at: u64,
}

/// What the district last heard of a hub, or of a center.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The hubs (for a center) or the centers (for a hub).
    pub peers: BTreeSet<String>,
    /// District clock, unix ms: first and latest message applied.
    pub first_received_at: u64,
    pub last_received_at: u64,
    /// The hub's clock: the latest fact's time.
    pub last_message_at: u64,
    /// Messages applied, by class.
    pub messages: BTreeMap<String, u64>,
    /// Devices seen in twin changes, and those online now.
    pub devices: u64,
    pub online: u64,
}

/// An alarm as listed by `/api/v1/district/alarms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub device: String,
    pub kind: String,
    /// `interlock_trip`, `alarm_ack`, …
    #[serde(rename = "type")]
    pub alarm_type: String,
    /// The hub's time it was stored.
    pub at: u64,
    /// The event as the hub stored it.
    pub event: Value,
}

/// A refused message, kept for inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub topic: String,
    pub reason: String,
    pub received_at: u64,
    /// The payload as text (lossy), cut at `MAX_KEPT_PAYLOAD` bytes.
    pub payload: String,
}
