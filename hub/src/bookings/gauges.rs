//! The booking gauges, kept by the desk thread as it changes bookings, so
//! a scrape reads them from memory: people on waitlists
//! (`yizhan_booking_waitlist`), today's seat time available and booked
//! (`yizhan_booking_day_seat_seconds`), slots to the horizon without a duty
//! manager (`yizhan_booking_slots_unstaffed`).
//!
//! Counted from the store once at start (`count_gauges`). Then every
//! booking the desk writes moves them by its change of status
//! (`booking_written`); today's seat time is counted again when the
//! schedule clock's local day turns, the unstaffed slots (settings only:
//! slots × roster) when the clock has moved a minute; both when the catalog
//! changed (`refresh_gauges`, on the desk's tick).

use chrono::NaiveDate;

use super::desk::Desk;
use crate::records::{Booking, Status};
use crate::schedule::{Duty, DAY_MS, MINUTE_MS};
use crate::settings::Resource;
use crate::store::StoreError;

/// What the clock-moved gauges were last counted for.
#[derive(Debug, Default)]
pub(super) struct Counted {
    /// The local day of `yizhan_booking_day_seat_seconds`, and its bounds
    /// (unix ms, end excluded).
    day: Option<(NaiveDate, u64, u64)>,
    /// Schedule-clock ms of the last count of unstaffed slots.
    unstaffed_at: Option<u64>,
    /// The catalog's version at the last count.
    catalog: u64,
}

impl Desk {
    /// At start: the waitlists from the slot counts, then the rest.
    pub(super) fn count_gauges(&mut self) -> Result<(), StoreError> {
        self.metrics.booking_waitlist.reset();
        for resource in self.resources.all() {
            let waiting: u64 = self
                .store
                .slot_counts(&resource.config.id, 0, u64::MAX)?
                .iter()
                .map(|(_, count)| u64::from(count.waitlist))
                .sum();
            self.metrics
                .booking_waitlist
                .with_label_values(&labels(&resource))
                .add(i64::try_from(waiting).unwrap_or(i64::MAX));
        }
        self.counted.catalog = self.resources.version();
        self.count_day_seats(self.clock.now_ms())?;
        self.count_unstaffed(self.clock.now_ms());
        Ok(())
    }

    /// Counts again what the clock moved: today's seat time once the local
    /// day turned, unstaffed slots once the clock moved a minute; both
    /// when the catalog changed.
    pub(super) fn refresh_gauges(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let version = self.resources.version();
        let changed = version != self.counted.catalog;
        self.counted.catalog = version;
        if changed {
            self.show_waitlists();
        }
        let today = self.calendar.day(now);
        if changed || self.counted.day.is_none_or(|(day, _, _)| day != today) {
            self.count_day_seats(now)?;
        }
        let moved = |at: u64| now.abs_diff(at) >= MINUTE_MS;
        if changed || self.counted.unstaffed_at.is_none_or(moved) {
            self.count_unstaffed(now);
        }
        Ok(())
    }

    /// A waitlist series (at 0 until someone waits) for each resource's
    /// center and kind, resources added through the API included, so a
    /// dashboard shows an empty waitlist rather than no data.
    fn show_waitlists(&self) {
        for resource in self.resources.all() {
            self.metrics
                .booking_waitlist
                .with_label_values(&labels(&resource));
        }
    }

    /// `booking` was written; `was` its status before (`None`: new).
    pub(super) fn booking_written(&self, was: Option<Status>, booking: &Booking) {
        let labels = [booking.center.as_str(), booking.kind.as_str()];
        let waiting = |status: Option<Status>| i64::from(status == Some(Status::Waitlisted));
        let change = waiting(Some(booking.status)) - waiting(was);
        if change != 0 {
            self.metrics
                .booking_waitlist
                .with_label_values(&labels)
                .add(change);
        }
        let Some((_, midnight, next)) = self.counted.day else {
            return;
        };
        if booking.slot_start < midnight || booking.slot_start >= next {
            return;
        }
        let holds = |status: Option<Status>| status.is_some_and(Status::holds_place);
        let places =
            f64::from(u8::from(holds(Some(booking.status)))) - f64::from(u8::from(holds(was)));
        if places != 0.0 {
            let gauge = self
                .metrics
                .booking_day_seat_seconds
                .with_label_values(&[labels[0], labels[1], "booked"]);
            gauge.add(places * seconds(booking.slot_start, booking.slot_end));
        }
    }

    /// Today's seat time per resource: available (capacity × slot length)
    /// and booked (places taken, from the slot counts: one range a day).
    fn count_day_seats(&mut self, now: u64) -> Result<(), StoreError> {
        let today = self.calendar.day(now);
        let (midnight, next) = (
            self.calendar.midnight(today),
            self.calendar.next_midnight(now),
        );
        self.counted.day = Some((today, midnight, next));
        let gauge = &self.metrics.booking_day_seat_seconds;
        gauge.reset();
        for resource in self.resources.all() {
            let slots = resource.slots_between(&self.calendar, midnight, next);
            let available: f64 = slots
                .iter()
                .map(|s| seconds(s.start, s.end) * f64::from(resource.config.capacity))
                .sum();
            let booked: f64 = self
                .store
                .slot_counts(&resource.config.id, midnight, next)?
                .iter()
                .filter_map(|(start, count)| {
                    let slot = slots.iter().find(|s| s.start == *start)?;
                    Some(seconds(slot.start, slot.end) * f64::from(count.load.taken()))
                })
                .sum();
            let [center, kind] = labels(&resource);
            gauge
                .with_label_values(&[center, kind, "available"])
                .add(available);
            gauge
                .with_label_values(&[center, kind, "booked"])
                .add(booked);
        }
        Ok(())
    }

    /// Slots from now to each resource's horizon with no manager on duty.
    fn count_unstaffed(&mut self, now: u64) {
        self.counted.unstaffed_at = Some(now);
        let gauge = &self.metrics.booking_slots_unstaffed;
        gauge.reset();
        for resource in self.resources.all() {
            let horizon = now + u64::from(resource.config.horizon_days) * DAY_MS;
            let unstaffed = resource
                .slots_between(&self.calendar, now, horizon)
                .into_iter()
                .filter(|slot| {
                    self.roster.duty(&self.calendar, &resource, *slot) == Duty::Unstaffed
                })
                .count();
            gauge
                .with_label_values(&labels(&resource))
                .add(i64::try_from(unstaffed).unwrap_or(i64::MAX));
        }
    }
}

/// A resource's `center` and `kind` labels.
fn labels(resource: &Resource) -> [&str; 2] {
    [
        resource.config.center.as_str(),
        resource.config.kind.as_str(),
    ]
}

fn seconds(start: u64, end: u64) -> f64 {
    end.saturating_sub(start) as f64 / 1000.0
}
