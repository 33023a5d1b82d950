//! A room's live count, as stored per `(center, room)`.

use serde::{Deserialize, Serialize};

/// A room's live state, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCount {
    pub people: u64,
    pub saturated: bool,
}
