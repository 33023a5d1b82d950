//! Bound devices out of service, applied on the desk thread: a `fault`
//! event blocks a device's resources at once, being offline for
//! `offline_block_minutes` after that long; either way their slots starting
//! within `outage_lookahead_minutes` are closed and their bookings
//! cancelled (residents told), until the device is healthy again.

use super::desk::{Desk, Notice};
use super::{DeskError, Health};
use crate::records::{Outage, OutageReason, Status};
use crate::schedule::{DAY_MS, MINUTE_MS};
use crate::settings::Resource;
use crate::store::{Store, StoreError};

/// Slots of `resource` starting at or before the returned time are
/// blocked: one of its devices has an active outage.
pub(super) fn blocked_until(
    store: &Store,
    resource: &Resource,
    now: u64,
    lookahead_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let blocked = store
        .outages()?
        .iter()
        .any(|(device, outage)| outage.active && resource.config.devices.contains(device));
    Ok(blocked.then_some(now + lookahead_ms))
}

impl Desk {
    pub(super) fn health(
        &mut self,
        device: &str,
        change: Health,
        now: u64,
    ) -> Result<(), DeskError> {
        let current = self.store.outages()?.into_iter().find(|(d, _)| d == device);
        let reason = current.as_ref().map(|(_, o)| o.reason);
        match (change, reason) {
            (Health::Fault, _) => {
                let outage = Outage {
                    since: now,
                    reason: OutageReason::Fault,
                    active: true,
                };
                self.store.put_outage(device, &outage)?;
                tracing::warn!(device, "bound device fault: its slots are blocked");
            }
            (Health::Offline, None) => {
                let outage = Outage {
                    since: now,
                    reason: OutageReason::Offline,
                    active: false,
                };
                self.store.put_outage(device, &outage)?;
            }
            (Health::FaultCleared, Some(OutageReason::Fault))
            | (Health::Online, Some(OutageReason::Offline)) => {
                self.store.remove_outage(device)?;
                tracing::info!(device, "bound device healthy: its slots reopen");
            }
            _ => return Ok(()),
        }
        self.wrote = true;
        self.enforce_outages(now)
    }

    /// Activates offline outages that lasted, then cancels the bookings of
    /// blocked slots.
    pub(super) fn enforce_outages(&mut self, now: u64) -> Result<(), DeskError> {
        let lasting = self.config.offline_block_minutes * MINUTE_MS;
        for (device, mut outage) in self.store.outages()? {
            if !outage.active && now >= outage.since + lasting {
                outage.active = true;
                self.store.put_outage(&device, &outage)?;
                self.wrote = true;
                tracing::warn!(
                    device,
                    "bound device offline too long: its slots are blocked"
                );
            }
            if outage.active {
                for resource in self.resources.bound_to(&device) {
                    self.cancel_for_maintenance(&resource, &device, outage.reason, now)?;
                }
            }
        }
        Ok(())
    }

    fn cancel_for_maintenance(
        &mut self,
        resource: &Resource,
        device: &str,
        reason: OutageReason,
        now: u64,
    ) -> Result<(), DeskError> {
        let until = now + self.config.outage_lookahead_minutes * MINUTE_MS;
        let entries =
            self.store
                .slot_entries(&resource.config.id, now.saturating_sub(DAY_MS), until + 1)?;
        for (_, id, entry) in entries {
            let affected = (entry.status.holds_place() || entry.status == Status::Waitlisted)
                && entry.end > now;
            if !affected {
                continue;
            }
            let mut booking = self.existing(&id)?;
            let why = match reason {
                OutageReason::Fault => "reported a fault",
                OutageReason::Offline => "is offline",
            };
            booking.status = Status::Cancelled;
            booking.cancelled_at = Some(now);
            booking.reason = Some(format!("maintenance: device {device} {why}"));
            self.lock_devices(&mut booking, now)?;
            let notice = Notice::Cancelled { why };
            self.put_and_notify(&booking, &[], "maintenance", notice, now)?;
        }
        Ok(())
    }
}
