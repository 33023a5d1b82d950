//! The desk thread: the one writer of bookings. It takes the jobs waiting
//! on its channel, applies them in order, fsyncs once, and only then
//! answers them and hands what it made to ingest (`finish_batch`). The
//! milestones the clock brings (`dues`) and bound devices' outages
//! (`outages`) are applied on the same thread, between jobs.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::calendar::Calendar;
use tokio_util::sync::CancellationToken;

use super::gauges::Counted;
use super::outages::blocked_until;
use super::{
    BookRequest, Catalog, CheckInBy, DeskError, DeskFailure, HandOver, Job, Reply, ToIngest,
};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::records::{Booker, Booking, Milestone, Notification, Slot, SlotLoad, Status};
use crate::schedule::{
    self, blocked_by_strikes, check_in_window, history_from, history_of, is_late_cancel,
    milestones_of_booked, strikes_from, Attempt, History, Refusal, DAY_MS, MINUTE_MS,
};
use crate::settings::{Resource, Roster, ScheduleConfig, Settings};
use crate::store::{Store, StoreError};
use crate::supervise;

/// Most jobs applied before one fsync.
const BATCH_MAX: usize = 1024;

/// The jobs waiting now: the first waited for up to `tick`, then what is
/// ready, up to `BATCH_MAX`. `None` once every sender is gone.
fn take_batch(jobs: &Receiver<Job>, tick: Duration) -> Option<Vec<Job>> {
    let mut batch = Vec::new();
    match jobs.recv_timeout(tick) {
        Ok(job) => batch.push(job),
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => return None,
    }
    while batch.len() < BATCH_MAX {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// What a resident is told about their booking.
#[derive(Debug, Clone, Copy)]
pub(super) enum Notice {
    /// A place freed up and the first on the waitlist got it.
    Promoted,
    /// Not checked in within the grace: released.
    Released,
    /// A bound device is out of service (`why`: "reported a fault", ...).
    Cancelled { why: &'static str },
}

impl Notice {
    /// The notification's `kind`.
    fn kind(self) -> &'static str {
        match self {
            Notice::Promoted => "promoted",
            Notice::Released => "released",
            Notice::Cancelled { .. } => "cancelled",
        }
    }

    fn message(self, booking: &Booking, calendar: &Calendar, rules: &ScheduleConfig) -> String {
        let (resource, at) = (
            &booking.resource,
            calendar.local(booking.slot_start).to_rfc3339(),
        );
        match self {
            Notice::Promoted => format!("a place freed up: you are booked for {resource} at {at}"),
            Notice::Released => format!(
                "your booking of {resource} at {at} was released: not checked in within {} min",
                rules.grace_minutes
            ),
            Notice::Cancelled { why } => {
                format!("your booking of {resource} at {at} is cancelled: the device {why}; sorry")
            }
        }
    }
}

/// The desk thread's state.
pub(super) struct Desk {
    pub(super) store: Arc<Store>,
    pub(super) metrics: Metrics,
    pub(super) resources: Arc<Catalog>,
    pub(super) calendar: Calendar,
    pub(super) clock: Arc<Clock>,
    pub(super) config: ScheduleConfig,
    /// Managers' duty shifts (the unstaffed-slots gauge).
    pub(super) roster: Roster,
    /// What the booking gauges were last counted for (`gauges`).
    pub(super) counted: Counted,
    hand_over: HandOver,
    /// What this batch made for ingest, handed over after its fsync.
    pub(super) to_ingest: Vec<ToIngest>,
    /// Something was written in this batch.
    pub(super) wrote: bool,
    /// A notification went to the outbox in this batch.
    notified: bool,
    /// Wakes the webhook delivery after the batch's fsync.
    outbox: Arc<tokio::sync::Notify>,
    /// The first store error of this batch: the desk ends after answering.
    failure: Option<StoreError>,
}

impl Desk {
    pub(super) fn new(
        store: Arc<Store>,
        metrics: Metrics,
        resources: Arc<Catalog>,
        settings: &Settings,
        hand_over: HandOver,
        outbox: Arc<tokio::sync::Notify>,
    ) -> Desk {
        Desk {
            store,
            metrics,
            resources,
            calendar: settings.calendar,
            clock: settings.clock.clone(),
            config: settings.schedule.clone(),
            roster: settings.roster.clone(),
            counted: Counted::default(),
            hand_over,
            to_ingest: Vec::new(),
            wrote: false,
            notified: false,
            outbox,
            failure: None,
        }
    }

    pub(super) fn run(
        mut self,
        jobs: Receiver<Job>,
        stop: CancellationToken,
    ) -> Result<(), DeskFailure> {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut last_tick = Instant::now() - tick;
        while !stop.is_cancelled() {
            supervise::checkpoint()?;
            let Some(batch) = take_batch(&jobs, tick) else {
                break;
            };
            let mut answers = Vec::with_capacity(batch.len());
            for job in batch {
                self.apply(job, &mut answers);
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                let ticked = self.tick();
                if let Err(error) = self.keep_store_error(ticked) {
                    tracing::error!(%error, "processing due bookings failed");
                }
                let counted = self.refresh_gauges().map_err(DeskError::from);
                if let Err(error) = self.keep_store_error(counted) {
                    tracing::error!(%error, "counting the booking gauges failed");
                }
            }
            self.answer(answers)?;
        }
        Ok(())
    }

    /// Finishes the batch; ends the desk if it met a store error.
    fn answer(
        &mut self,
        answers: Vec<(Reply, Result<Booking, DeskError>)>,
    ) -> Result<(), DeskFailure> {
        let answers = answers
            .into_iter()
            .map(|(reply, result)| (reply, self.keep_store_error(result)))
            .collect();
        self.finish_batch(answers)?;
        match self.failure.take() {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Keeps the first store error for `run` to end with; the caller of
    /// the job learns that the desk stopped.
    fn keep_store_error<T>(&mut self, result: Result<T, DeskError>) -> Result<T, DeskError> {
        match result {
            Err(DeskError::Store(error)) => {
                if self.failure.is_none() {
                    tracing::error!(%error, "store error: the booking desk stops");
                    self.failure = Some(error);
                }
                Err(DeskError::Stopped)
            }
            other => other,
        }
    }

    /// Fsyncs what the batch wrote, then answers and hands its commands and
    /// events to ingest; a failed fsync answers errors and ends the desk.
    fn finish_batch(
        &mut self,
        answers: Vec<(Reply, Result<Booking, DeskError>)>,
    ) -> Result<(), StoreError> {
        let flushed = if std::mem::take(&mut self.wrote) {
            self.store.flush().map(|_| ())
        } else {
            Ok(())
        };
        let to_ingest = std::mem::take(&mut self.to_ingest);
        match flushed {
            Ok(()) => {
                for (reply, result) in answers {
                    let _ = reply.send(result);
                }
                for message in to_ingest {
                    (self.hand_over)(message);
                }
                if std::mem::take(&mut self.notified) {
                    self.outbox.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(%error, "fsync of bookings failed; answering errors");
                for (reply, _) in answers {
                    let _ = reply.send(Err(DeskError::Conflict(
                        "the booking could not be made durable; try again".into(),
                    )));
                }
                return Err(error);
            }
        }
        Ok(())
    }

    fn apply(&mut self, job: Job, answers: &mut Vec<(Reply, Result<Booking, DeskError>)>) {
        let now = self.clock.now_ms();
        match job {
            Job::Book(request, reply) => answers.push((reply, self.book(request, now))),
            Job::Cancel(id, reply) => answers.push((reply, self.cancel(&id, now))),
            Job::Waitlist(id, reply) => answers.push((reply, self.waitlist(&id, now))),
            Job::CheckIn(id, by, reply) => {
                let result = self.check_in(&id, &by, now);
                match reply {
                    Some(reply) => answers.push((reply, result)),
                    None => {
                        if let Err(error) = self.keep_store_error(result) {
                            tracing::info!(booking = %id, ?by, %error, "device check-in refused");
                        }
                    }
                }
            }
            Job::Passage { resident, gate } => {
                let result = self.passage(&resident, &gate, now);
                if let Err(error) = self.keep_store_error(result) {
                    tracing::error!(%error, "gate check-in failed");
                }
            }
            Job::Health(device, change) => {
                let result = self.health(&device, change, now);
                if let Err(error) = self.keep_store_error(result) {
                    tracing::error!(%error, "recording a device outage failed");
                }
            }
        }
    }

    pub(super) fn resource(&self, id: &str) -> Result<Arc<Resource>, DeskError> {
        self.resources
            .get(id)
            .ok_or_else(|| DeskError::NoResource(id.into()))
    }

    pub(super) fn book(&mut self, request: BookRequest, now: u64) -> Result<Booking, DeskError> {
        let resource = self.resource(&request.resource)?.clone();
        let Some(slot) = resource.slot_at(&self.calendar, request.slot_start) else {
            return Err(DeskError::Refused(
                Refusal::Rule {
                    rule: "slot",
                    reason: format!(
                        "{} has no slot starting at {}",
                        resource.config.id,
                        self.calendar.local(request.slot_start).to_rfc3339()
                    ),
                },
                None,
            ));
        };
        let lookahead = self.config.outage_lookahead_minutes * MINUTE_MS;
        if blocked_until(&self.store, &resource, now, lookahead)?.is_some_and(|u| slot.start <= u) {
            return Err(DeskError::Conflict(format!(
                "{} is closed for maintenance: a device of it is out of service",
                resource.config.id
            )));
        }
        let who = request.who;
        let (attempt, history) = self.attempt(&resource, &who, slot, now)?;
        let load = self.load(&resource, slot)?;
        // Unique across restarts (sled's id generator), whatever the clock
        // says: a fixed clock must not make two bookings collide.
        let id = format!("{:016x}", self.store.next_id()?);
        let mut booking = Booking::booked(id, &resource.config, slot, who, now);
        match schedule::decide(&resource, &self.calendar, &attempt, &history, &load) {
            Ok(()) => {
                let milestones = milestones_of_booked(&resource, slot, now, &self.config);
                self.put(&booking, &milestones)?;
                self.count(&booking, "booked");
                self.metrics
                    .booking_seat_seconds
                    .with_label_values(&[&booking.center, &booking.kind, "booked"])
                    .inc_by((slot.end - slot.start) as f64 / 1000.0);
                if load.taken() + 1 >= resource.config.capacity {
                    self.metrics
                        .booking_slots_full
                        .with_label_values(&[&booking.center, &booking.kind])
                        .inc();
                }
                Ok(booking)
            }
            Err(refusal @ Refusal::Full { .. }) => {
                booking.status = Status::Offered;
                self.put(&booking, &[])?;
                self.count(&booking, "full");
                Err(DeskError::Refused(refusal, Some(Box::new(booking))))
            }
            Err(refusal) => {
                self.count(&booking, "refused");
                Err(DeskError::Refused(refusal, None))
            }
        }
    }

    pub(super) fn put(
        &mut self,
        booking: &Booking,
        milestones: &[(u64, Milestone)],
    ) -> Result<(), StoreError> {
        let was = self.store.put_booking(booking, milestones)?;
        self.wrote = true;
        self.booking_written(was, booking);
        Ok(())
    }

    pub(super) fn count(&self, booking: &Booking, outcome: &str) {
        self.metrics
            .bookings
            .with_label_values(&[&booking.center, &booking.kind, outcome])
            .inc();
    }

    /// Writes `booking`, counts `outcome` and tells its resident `notice`.
    pub(super) fn put_and_notify(
        &mut self,
        booking: &Booking,
        milestones: &[(u64, Milestone)],
        outcome: &str,
        notice: Notice,
        now: u64,
    ) -> Result<(), DeskError> {
        self.put(booking, milestones)?;
        self.count(booking, outcome);
        let message = notice.message(booking, &self.calendar, &self.config);
        self.notify(booking, notice.kind(), message, now)?;
        Ok(())
    }

    /// An attempt by `who` at `slot` of `resource` now, and their standing
    /// with the resource.
    fn attempt(
        &self,
        resource: &Resource,
        who: &Booker,
        slot: Slot,
        now: u64,
    ) -> Result<(Attempt, History), StoreError> {
        let attempt = Attempt {
            slot,
            group: who.group,
            child_birthdate: who.child_birthdate,
            now,
        };
        Ok((attempt, self.history(resource, &who.resident, slot, now)?))
    }

    /// The resident's standing with this resource around `slot`.
    fn history(
        &self,
        resource: &Resource,
        resident: &str,
        slot: Slot,
        now: u64,
    ) -> Result<History, StoreError> {
        let from = history_from(&self.calendar, slot, now);
        let entries = self.store.resident_entries(resident, from, u64::MAX)?;
        let strikes = self
            .store
            .strikes_since(resident, strikes_from(now, &self.config))?;
        Ok(history_of(
            &self.calendar,
            &resource.config.id,
            entries.iter().map(|(start, _, entry)| (*start, entry)),
            slot,
            now,
            blocked_by_strikes(&strikes, &self.config),
        ))
    }

    fn load(&self, resource: &Resource, slot: Slot) -> Result<SlotLoad, StoreError> {
        Ok(self.store.slot_count(&resource.config.id, slot.start)?.load)
    }

    pub(super) fn existing(&self, id: &str) -> Result<Booking, DeskError> {
        self.store
            .booking(id)?
            .ok_or_else(|| DeskError::NoBooking(id.into()))
    }

    pub(super) fn cancel(&mut self, id: &str, now: u64) -> Result<Booking, DeskError> {
        let mut booking = self.existing(id)?;
        let was = booking.status;
        if !matches!(was, Status::Booked | Status::Waitlisted) {
            return Err(DeskError::Conflict(format!(
                "booking {id} is {}; only booked or waitlisted ones can be cancelled",
                was.as_str()
            )));
        }
        if now >= booking.slot_end {
            return Err(DeskError::Conflict(format!(
                "the slot of booking {id} is over"
            )));
        }
        booking.status = Status::Cancelled;
        booking.cancelled_at = Some(now);
        booking.reason = Some("cancelled by the resident".into());
        self.lock_devices(&mut booking, now)?;
        if was == Status::Booked {
            booking.late_cancel = is_late_cancel(now, booking.slot_start, &self.config);
            self.put(&booking, &[])?;
            let outcome = if booking.late_cancel {
                "late_cancel"
            } else {
                "cancelled"
            };
            self.count(&booking, outcome);
            self.promote(&booking, now)?;
        } else {
            self.put(&booking, &[])?;
        }
        Ok(booking)
    }

    pub(super) fn waitlist(&mut self, id: &str, now: u64) -> Result<Booking, DeskError> {
        let mut booking = self.existing(id)?;
        if booking.status == Status::Waitlisted {
            return Ok(booking);
        }
        if booking.status != Status::Offered {
            return Err(DeskError::Conflict(format!(
                "booking {id} is {}; only a refused (offered) request can join the waitlist",
                booking.status.as_str()
            )));
        }
        let resource = self.resource(&booking.resource)?.clone();
        let (attempt, history) = self.attempt(&resource, &booking.booker(), booking.slot(), now)?;
        schedule::check_rules(&resource, &self.calendar, &attempt, &history)
            .map_err(|refusal| DeskError::Refused(refusal, None))?;
        booking.status = Status::Waitlisted;
        booking.waitlisted_at = Some(now);
        self.put(&booking, &[(booking.slot_end, Milestone::End)])?;
        self.count(&booking, "waitlisted");
        Ok(booking)
    }

    fn check_in(&mut self, id: &str, by: &CheckInBy, now: u64) -> Result<Booking, DeskError> {
        let mut booking = self.existing(id)?;
        if let CheckInBy::Device(device) = by {
            let resource = self.resource(&booking.resource)?;
            if !resource.config.devices.contains(device) {
                return Err(DeskError::Conflict(format!(
                    "device {device} is not bound to resource {}",
                    booking.resource
                )));
            }
        }
        match booking.status {
            Status::CheckedIn => return Ok(booking),
            Status::Booked => {}
            other => {
                return Err(DeskError::Conflict(format!(
                    "booking {id} is {}; only a booked place can be checked in",
                    other.as_str()
                )))
            }
        }
        let (opens, closes) = check_in_window(booking.slot(), &self.config);
        if now < opens || now >= closes {
            return Err(DeskError::Conflict(format!(
                "booking {id} can be checked in from {} min before its start to its end",
                self.config.grace_minutes
            )));
        }
        booking.status = Status::CheckedIn;
        booking.checked_in_at = Some(now);
        booking.checked_in_by = Some(match by {
            CheckInBy::Staff => "staff".into(),
            CheckInBy::Device(device) => format!("device:{device}"),
        });
        self.put(&booking, &[])?;
        self.count(&booking, "checked_in");
        tracing::info!(booking = %id, by = ?by, "checked in");
        Ok(booking)
    }

    fn passage(&mut self, resident: &str, gate: &str, now: u64) -> Result<(), DeskError> {
        let from = now.saturating_sub(DAY_MS);
        let to = now + self.config.grace_minutes * MINUTE_MS + 1;
        for (_, id, entry) in self.store.resident_entries(resident, from, to)? {
            let bound = self
                .resources
                .get(&entry.resource)
                .is_some_and(|r| r.config.devices.iter().any(|d| d == gate));
            if bound && entry.status == Status::Booked && entry.end > now {
                let _ = self.check_in(&id, &CheckInBy::Device(gate.into()), now);
            }
        }
        Ok(())
    }

    /// Gives a freed place of `freed`'s slot to the first on its waitlist.
    pub(super) fn promote(&mut self, freed: &Booking, now: u64) -> Result<(), DeskError> {
        if now >= freed.slot_end {
            return Ok(());
        }
        let entries =
            self.store
                .slot_entries(&freed.resource, freed.slot_start, freed.slot_start + 1)?;
        let first = entries
            .into_iter()
            .filter(|(_, _, e)| e.status == Status::Waitlisted)
            .min_by_key(|(_, id, e)| (e.waitlisted_at, id.clone()));
        let Some((_, id, _)) = first else {
            return Ok(());
        };
        let mut booking = self.existing(&id)?;
        let resource = self.resource(&booking.resource)?.clone();
        booking.status = Status::Booked;
        let milestones: Vec<(u64, Milestone)> =
            milestones_of_booked(&resource, booking.slot(), now, &self.config)
                .into_iter()
                .filter(|(_, milestone)| *milestone != Milestone::End)
                .collect();
        self.put_and_notify(&booking, &milestones, "promoted", Notice::Promoted, now)
    }

    fn notify(
        &mut self,
        booking: &Booking,
        kind: &str,
        message: String,
        now: u64,
    ) -> Result<(), StoreError> {
        let notification = Notification {
            // Sorts in creation order: the webhook delivers in this order.
            id: format!("{:016x}", self.store.next_id()?),
            resident: booking.resident.clone(),
            booking: booking.id.clone(),
            kind: kind.into(),
            message,
            at: now,
        };
        let outbox = !self.config.webhook_url.is_empty();
        self.store.add_notification(&notification, outbox)?;
        if outbox {
            self.metrics.webhook_outbox.inc();
        }
        self.wrote = true;
        self.notified |= outbox;
        Ok(())
    }
}
