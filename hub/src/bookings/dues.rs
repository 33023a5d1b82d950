//! The milestones the schedule's clock brings a booking, applied on the
//! desk thread: slot start → `unlock` the bound devices, grace end →
//! release a place not checked in (a strike, the resident told, the first
//! waitlisted promoted), slot end → `lock`, expire the waitlist, count the
//! seat time. And commanding a booking's bound devices: the command is
//! recorded now and handed to ingest after the batch's fsync.

use protocol::api::CommandOrigin;
use serde_json::json;

use super::desk::{Desk, Notice};
use super::{DeskError, ToIngest};
use crate::clock::unix_ms;
use crate::commands::NewCommand;
use crate::records::{Booking, Milestone, Status};
use crate::schedule::MINUTE_MS;

/// A `lock` stays deliverable this long after the slot's end.
const LOCK_TTL_MS: u64 = 10 * MINUTE_MS;

/// What the desk commands a booking's bound devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The slot started: the resident may use the device.
    Unlock,
    /// The place is over: nobody may.
    Lock,
}

impl Order {
    fn op(self) -> &'static str {
        match self {
            Order::Unlock => "unlock",
            Order::Lock => "lock",
        }
    }
}

impl Desk {
    /// Processes every milestone due by now, in time order.
    pub(super) fn tick(&mut self) -> Result<(), DeskError> {
        let now = self.clock.now_ms();
        self.enforce_outages(now)?;
        self.forget_old_answers(now)?;
        for (at, milestone, id) in self.store.due_until(now)? {
            if let Some(booking) = self.store.booking(&id)? {
                match milestone {
                    Milestone::Start => self.slot_started(booking, now)?,
                    Milestone::Grace => self.grace_over(booking, now)?,
                    Milestone::End => self.slot_ended(booking, now)?,
                }
            }
            self.store.remove_due(at, milestone, &id)?;
            self.wrote = true;
        }
        Ok(())
    }

    fn slot_started(&mut self, mut booking: Booking, now: u64) -> Result<(), DeskError> {
        if !booking.status.holds_place() || booking.unlocked || now >= booking.slot_end {
            return Ok(());
        }
        let args =
            json!({"resident": booking.resident, "booking": booking.id, "until": booking.slot_end});
        self.command_devices(&booking, Order::Unlock, args, booking.slot_end, now)?;
        booking.unlocked = true;
        self.put(&booking, &[])?;
        Ok(())
    }

    fn grace_over(&mut self, mut booking: Booking, now: u64) -> Result<(), DeskError> {
        if booking.status != Status::Booked {
            return Ok(());
        }
        booking.status = Status::NoShow;
        booking.reason = Some(format!(
            "not checked in {} min after the start: released",
            self.config.grace_minutes
        ));
        self.lock_devices(&mut booking, now)?;
        self.store.add_strike(&booking.resident, now, &booking.id)?;
        self.put_and_notify(&booking, &[], "no_show", Notice::Released, now)?;
        self.promote(&booking, now)
    }

    /// Locks the bound devices unlocked for `booking` (its slot ended, or
    /// its place was given up); the caller writes the booking.
    pub(super) fn lock_devices(
        &mut self,
        booking: &mut Booking,
        now: u64,
    ) -> Result<(), DeskError> {
        if booking.unlocked {
            let args = json!({"booking": booking.id});
            self.command_devices(booking, Order::Lock, args, now + LOCK_TTL_MS, now)?;
            booking.unlocked = false;
        }
        Ok(())
    }

    fn slot_ended(&mut self, mut booking: Booking, now: u64) -> Result<(), DeskError> {
        if booking.unlocked {
            self.lock_devices(&mut booking, now)?;
            self.put(&booking, &[])?;
        }
        match booking.status {
            Status::Waitlisted | Status::Offered => {
                booking.status = Status::Expired;
                self.put(&booking, &[])?;
            }
            Status::CheckedIn => {
                self.metrics
                    .booking_seat_seconds
                    .with_label_values(&[&booking.center, &booking.kind, "used"])
                    .inc_by((booking.slot_end - booking.slot_start) as f64 / 1000.0);
            }
            _ => {}
        }
        Ok(())
    }

    /// Records `order` for every device bound to the booking's resource
    /// (gates aside), valid until `expires_at` on the schedule's clock; it
    /// is handed to ingest after this batch's fsync, a `lock` after the
    /// news that the place on that device is over.
    fn command_devices(
        &mut self,
        booking: &Booking,
        order: Order,
        args: serde_json::Value,
        expires_at: u64,
        now: u64,
    ) -> Result<(), DeskError> {
        // Gates open per passage (access decisions), not per booking.
        let mut devices = self.resource(&booking.resource)?.config.devices.clone();
        devices.retain(|d| {
            !matches!(self.store.device(d), Ok(Some(record)) if record.kind == protocol::DeviceKind::Gate)
        });
        // Commands expire on the wall clock: the time left on the schedule's
        // clock (which tests move) is carried over to it.
        let issued_at = unix_ms();
        let expires_at = issued_at + expires_at.saturating_sub(now).max(1);
        for device in devices {
            let command = NewCommand {
                device,
                op: order.op().into(),
                args: args.clone(),
                expires_at,
                origin: CommandOrigin::Schedule,
            };
            let record = command.record(&self.store, issued_at)?;
            self.wrote = true;
            tracing::info!(booking = %booking.id, device = %record.device, op = order.op(), at = now, "booking command");
            if order == Order::Lock {
                let device = record.device.clone();
                self.to_ingest.push(ToIngest::PlaceEnded { device });
            }
            self.to_ingest.push(ToIngest::Command(record));
        }
        Ok(())
    }
}
