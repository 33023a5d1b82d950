//! Notifications per resident, and the outbox the webhook delivers from.

use super::codec::{decode, pair_key, scan_json, time_key, to_json};
use super::{Store, StoreError};
use crate::records::Notification;

impl Store {
    /// Stores a notification for its resident, and in the outbox when a
    /// webhook is to deliver it (not fsynced).
    pub fn add_notification(
        &self,
        notification: &Notification,
        outbox: bool,
    ) -> Result<(), StoreError> {
        let key = time_key(&notification.resident, notification.at, &notification.id);
        let value = to_json(notification);
        if outbox {
            self.outbox
                .insert(notification.id.as_bytes(), value.clone())?;
        }
        self.notifications.insert(key, value)?;
        Ok(())
    }

    /// The oldest notifications waiting for the webhook.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Notification>, StoreError> {
        self.outbox
            .iter()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    /// Notifications waiting in the outbox (a scan: once, at start).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Forgets a delivered notification (not fsynced: a crash may deliver
    /// it again; receivers deduplicate by id).
    pub fn delivered(&self, id: &str) -> Result<(), StoreError> {
        self.outbox.remove(id)?;
        Ok(())
    }

    /// A resident's notifications, oldest first.
    pub fn notifications_of(&self, resident: &str) -> Result<Vec<Notification>, StoreError> {
        scan_json(&self.notifications, &pair_key(resident, ""))
    }
}
