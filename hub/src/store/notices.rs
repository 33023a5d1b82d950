//! Notifications per resident, and the outbox the webhook delivers from.

use super::codec::{decode, page_json, pair_key, time_key, to_json, Page};
use super::undo::keep;
use super::{Aged, Store, StoreError};
use crate::clock::unix_ms;
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
            keep(&self.outbox, notification.id.as_bytes())?;
            self.outbox
                .insert(notification.id.as_bytes(), value.clone())?;
        }
        self.age(Aged::Notifications, unix_ms(), &key)?;
        keep(&self.notifications, &key)?;
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

    /// One page of a resident's notifications, oldest first, after the
    /// key `after` (a page's `next`).
    pub fn notifications_page(
        &self,
        resident: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<Notification>, StoreError> {
        page_json(&self.notifications, &pair_key(resident, ""), after, limit)
    }
}
