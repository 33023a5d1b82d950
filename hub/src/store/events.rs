//! Events: each `(device, event id)` stored once.

use super::codec::{page_json, pair_key, scan_json, to_json, Page};
use super::{Aged, Store, StoreError};
use crate::records::StoredEvent;

impl Store {
    /// Stores an event unless `(device, id)` is already stored, with its
    /// uplink entry when the hub has an upstream. Returns whether it was
    /// new.
    pub fn insert_event_once(&self, event: &StoredEvent) -> Result<bool, StoreError> {
        let key = pair_key(&event.device, &event.event.id);
        if self.events.contains_key(&key)? {
            return Ok(false);
        }
        self.age(Aged::Events, event.received_at, &key)?;
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

    /// One page of a device's events in id order, after the id `after`.
    pub fn events_page(
        &self,
        device: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<StoredEvent>, StoreError> {
        page_json(&self.events, &pair_key(device, ""), after, limit)
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }
}
