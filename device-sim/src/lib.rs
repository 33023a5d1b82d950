//! Yizhan device fleet simulator: provisions simulated devices on a hub,
//! runs them over MQTT/mTLS as contract v1 (`docs/protocol.md`) describes,
//! and reports the ground truth of what they sent.
//!
//! Entry point: [`run_fleet`] with a [`FleetConfig`]. The pure parts (plan,
//! district, residents, behaviour, outbox, stats) are public too so that
//! tests can reuse them.
//! [`bench`] is the load mode and the peer benchmark against mosquitto.

pub mod behaviour;
pub mod bench;
pub mod crowd;
pub mod demo;
pub mod device;
pub mod district;
pub mod fleet;
pub mod frontdesk;
pub mod hub_api;
pub mod mqtt;
pub mod outbox;
pub mod plan;
pub mod provision;
pub mod residents;
pub mod simtime;
pub mod stats;
pub mod store;

pub use fleet::{run_fleet, FleetConfig, FleetError};
pub use plan::{DeviceMix, DeviceSpec};
pub use stats::{Counters, DeviceTruth, GroundTruth};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
