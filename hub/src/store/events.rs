//! Events: each `(device, event id)` stored once.

use super::codec::{pair_key, scan_json, to_json};
use super::{Store, StoreError};
use crate::records::StoredEvent;

impl Store {
    /// Stores an event unless `(device, id)` is already stored, with its
    /// uplink entry when the hub has an upstream. Returns whether it was
    /// new.
    pub fn insert_event_once(&self, event: &StoredEvent) -> Result<bool, StoreError> {
        let key = pair_key(&event.device, &event.event.id);
        let value = to_json(event);
        if let Some(stored) = self.event_with_entry(&key, event, &value) {
            return stored;
        }
        let swapped = self
            .events
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))?;
        Ok(swapped.is_ok())
    }

    /// Events of one device, in id order.
    pub fn events_of(&self, device: &str) -> Result<Vec<StoredEvent>, StoreError> {
        scan_json(&self.events, &pair_key(device, ""))
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }
}
