//! The records the hub stores: plain data and their encodings, the bottom
//! layer. Nothing here starts a thread, reads the clock or touches sled;
//! `store` writes and reads these types, everything above works with them.
//!
//! - `device`: a device's provisioning record and its stored events
//! - `twin`: what the hub knows of one device, the interlock alarm on it,
//!   and the pure rules that update a twin from contract messages
//! - `resident`: a resident who may pass gates
//! - `room`: a room's live count and its entry (seats, hours)
//! - `booking`: bookings, their slot counts and index entries, the groups
//!   places are for, a booking's milestones, idempotent answers
//! - `notice`: notifications to residents and bound devices' outages
//! - `resource`: a bookable resource's entry (config file, API, store)
//! - `token`: the API's roles, tokens created through it, audit entries
//! - `uplink`: what is forwarded upstream: outbox entries, their classes,
//!   topics, payloads and message ids

pub mod booking;
pub mod device;
pub mod notice;
pub mod resident;
pub mod resource;
pub mod room;
pub mod token;
pub mod twin;
pub mod uplink;

pub use booking::{
    Booker, Booking, Group, IndexEntry, KeptAnswer, Milestone, Slot, SlotCount, SlotLoad, Status,
    KEPT_ANSWER_MS,
};
pub use device::{DeviceRecord, PreviousCertificate, Standing, StoredEvent};
pub use notice::{Notification, Outage, OutageReason};
pub use resident::Resident;
pub use resource::{ResourceConfig, ShareConfig, SlotConfig};
pub use room::{RoomConfig, RoomCount};
pub use token::{ApiToken, AuditEntry, Role};
pub use twin::{Alarm, LastValue, Presence, TripReason, Twin};
pub use uplink::{UplinkClass, UplinkEntry};
