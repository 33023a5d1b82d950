//! What the district keeps, as stored (JSON values in the store): per
//! center and local day the tally, each booking's latest write, each
//! device's presence, each hub's and each center's status, the alarms, the
//! refused messages and the commands sent.

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

/// A command the district sent (`GET /api/v1/district/commands/{id}`):
/// what was signed, where it stands, the hub's outcome and its refusals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandState {
    pub id: String,
    pub center: String,
    pub device: String,
    pub op: String,
    pub args: Value,
    /// Unix ms, district clock; 0 for a command known only by its outcome.
    pub issued_at: u64,
    pub expires_at: u64,
    /// The signing key's id.
    pub key: String,
    /// `publishing` (not yet acknowledged by the broker), `sent`,
    /// `unconfirmed` (no PUBACK in time: it may or may not have gone), then
    /// the hub's word: `acked`, `failed`, `expired`, or `refused`.
    pub status: String,
    pub outcome: Option<CommandOutcome>,
    /// The hubs' refusals of this id, the first `MAX_REFUSALS`.
    pub refusals: Vec<CommandRefusal>,
}

/// The most refusals kept per command (a replayed id may be refused often).
pub const MAX_REFUSALS: usize = 16;

/// A hub's word on how a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub hub: String,
    /// `acked`, `failed`, `expired`.
    pub status: String,
    pub error: Option<String>,
    pub attempts: u32,
    /// Hub clock, unix ms.
    pub at: u64,
}

/// A hub refused a message naming this command's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRefusal {
    pub hub: String,
    pub reason: String,
    pub at: u64,
}
