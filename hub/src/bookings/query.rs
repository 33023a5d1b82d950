//! The read side of bookings: availability, lists, notifications, and
//! what ingest asks (does a resident hold a booking at
//! this gate now, would a walk-in run into one). Reads go to the store
//! directly, never through the desk.

use std::collections::BTreeMap;

use serde::Serialize;

use super::outages::blocked_until;
use super::Bookings;
use crate::records::{Booking, Group, IndexEntry, Notification, SlotCount, Status};
use crate::schedule::{free_places, Duty, DAY_MS, MINUTE_MS};
use crate::settings::Resource;
use crate::store::{Page, StoreError};

/// Whose bookings a list shows: a resident's, a resource's or a center's
/// (one at least; several narrow the list).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub resident: Option<String>,
    pub resource: Option<String>,
    pub center: Option<String>,
}

/// One slot as availability shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlotView {
    pub start: u64,
    pub end: u64,
    /// Local start, RFC 3339.
    pub local_start: String,
    pub capacity: u32,
    pub booked: u32,
    /// Free for anyone (held shares excluded while they hold).
    pub free: u32,
    /// Places still held per group.
    #[schema(value_type = BTreeMap<String, u32>)]
    pub held: BTreeMap<&'static str, u32>,
    pub waitlist: u32,
    /// Closed for maintenance (a bound device is out of service).
    pub blocked: bool,
    /// The manager on duty, when the room keeps a roster.
    pub manager: Option<String>,
    /// The room keeps a roster and nobody is on duty.
    pub unstaffed: bool,
}

/// Where a booking list stands: a slot start and a booking id.
pub type BookingPlace = (u64, String);

impl Bookings {
    /// `None` when `gate` guards no bookable resource; else whether
    /// `resident` holds a booking of one now (from the grace before its
    /// start to its end).
    pub fn holds_booking_now(
        &self,
        gate: &str,
        resident: &str,
    ) -> Result<Option<bool>, StoreError> {
        let bound = self.resources_bound_to(gate);
        if bound.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        let entries = self.store.resident_entries(
            resident,
            now.saturating_sub(DAY_MS),
            now + self.grace_ms + 1,
        )?;
        Ok(Some(entries.iter().any(|(_, _, entry)| {
            entry.status.holds_place() && entry.end > now && bound.contains(&entry.resource)
        })))
    }

    /// Whether a walk-in session of `minutes` (default
    /// `schedule.walk_in_minutes`) starting now on `device` would run into
    /// a booked slot of a resource it is bound to.
    pub fn walk_in_conflict(&self, device: &str, minutes: Option<u64>) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let until = now + minutes.unwrap_or(self.walk_in_minutes) * MINUTE_MS;
        for resource in self.resources_bound_to(device) {
            let entries = self
                .store
                .slot_entries(&resource, now.saturating_sub(DAY_MS), until)?;
            if entries
                .iter()
                .any(|(_, _, entry)| entry.status.holds_place() && entry.end > now)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn resources_bound_to(&self, device: &str) -> Vec<String> {
        self.resources
            .bound_to(device)
            .iter()
            .map(|r| r.config.id.clone())
            .collect()
    }

    pub fn booking(&self, id: &str) -> Result<Option<Booking>, StoreError> {
        self.store.booking(id)
    }

    /// Free capacity per slot of `resource` starting in `[from, to)`.
    pub fn availability(
        &self,
        resource: &Resource,
        from: u64,
        to: u64,
    ) -> Result<Vec<SlotView>, StoreError> {
        let now = self.clock.now_ms();
        let blocked = blocked_until(&self.store, resource, now, self.lookahead_ms)?;
        let by_slot: BTreeMap<u64, SlotCount> = self
            .store
            .slot_counts(&resource.config.id, from, to)?
            .into_iter()
            .collect();
        let views = resource
            .slots_between(&self.calendar, from, to)
            .into_iter()
            .map(|slot| {
                let SlotCount { load, waitlist } =
                    by_slot.get(&slot.start).copied().unwrap_or_default();
                let holds = resource.shares_hold(slot.start, now);
                let blocked = blocked.is_some_and(|until| slot.start <= until);
                let duty = self.roster.duty(&self.calendar, resource, slot);
                let held = Group::ALL
                    .into_iter()
                    .filter(|g| holds && resource.held_for(*g) > 0)
                    .map(|g| (g.as_str(), resource.held_for(g).saturating_sub(load.of(g))))
                    .collect();
                SlotView {
                    start: slot.start,
                    end: slot.end,
                    local_start: self.calendar.local(slot.start).to_rfc3339(),
                    capacity: resource.config.capacity,
                    booked: load.taken(),
                    free: if blocked {
                        0
                    } else {
                        free_places(resource, &load, None, holds)
                    },
                    blocked,
                    manager: match &duty {
                        Duty::OnDuty(manager) => Some(manager.clone()),
                        _ => None,
                    },
                    unstaffed: duty == Duty::Unstaffed,
                    held,
                    waitlist,
                }
            })
            .collect();
        Ok(views)
    }

    /// The bookings (offers left out) with slots starting in `[from, to)`
    /// of `filter.resident`, else of `filter.resource`, else of every
    /// resource of `filter.center`; narrowed by the other filters given;
    /// by slot start then id, `limit` after the place `after` (a page's
    /// `next`), and the next page's place when more follow.
    pub fn bookings(
        &self,
        filter: &ListFilter,
        (from, to): (u64, u64),
        after: Option<&BookingPlace>,
        limit: usize,
    ) -> Result<(Vec<Booking>, Option<BookingPlace>), StoreError> {
        let entries = match (&filter.resident, &filter.resource, &filter.center) {
            (Some(resident), _, _) => self.store.resident_entries(resident, from, to)?,
            (None, Some(resource), _) => self.store.slot_entries(resource, from, to)?,
            (None, None, Some(center)) => self.center_entries(center, from, to)?,
            (None, None, None) => Vec::new(),
        };
        let (mut bookings, mut last) = (Vec::new(), None);
        for (start, id, entry) in entries {
            if after.is_some_and(|(at, last)| (start, &id) <= (*at, last)) {
                continue;
            }
            let other = filter
                .resource
                .as_ref()
                .is_some_and(|r| *r != entry.resource);
            if other || entry.status == Status::Offered {
                continue;
            }
            let Some(booking) = self.store.booking(&id)? else {
                continue;
            };
            if filter.center.as_ref().is_some_and(|c| *c != booking.center) {
                continue;
            }
            if bookings.len() == limit {
                return Ok((bookings, last));
            }
            bookings.push(booking);
            last = Some((start, id));
        }
        Ok((bookings, None))
    }

    /// Index entries of every resource of `center`, by slot start then id.
    fn center_entries(
        &self,
        center: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String, IndexEntry)>, StoreError> {
        let mut entries = Vec::new();
        for resource in self.resources.all() {
            if resource.config.center == center {
                entries.extend(self.store.slot_entries(&resource.config.id, from, to)?);
            }
        }
        entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(entries)
    }

    /// One page of a resident's notifications (`store::Page`).
    pub fn notifications(
        &self,
        resident: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<Notification>, StoreError> {
        self.store.notifications_page(resident, after, limit)
    }
}
