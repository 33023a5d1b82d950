//! A room's live count, as stored per `(center, room)`, and a room's entry
//! (its seats and hours) as the config file, the API and the store hold it
//! (`settings::Rooms` holds the checked form; the shape is the API's,
//! `protocol::api`).

use serde::{Deserialize, Serialize};

pub use protocol::api::RoomConfig;

/// A room's live state, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCount {
    pub people: u64,
    pub saturated: bool,
}
