//! The booking desk: the one owner of booking writes, and what the rest of
//! the hub asks of it (`Schedule`).
//!
//! Every change — a booking, a cancellation, a check-in, joining a waitlist,
//! and the due work of the clock (slot start → `unlock`, grace end → no-show
//! release and waitlist promotion, slot end → `lock`) — is a job on one
//! channel, applied in order by the desk thread. Capacity checks therefore
//! see every earlier booking, and no two requests can take the last place.
//! The desk applies the jobs it has at once, fsyncs once, and only then
//! answers them (a 201 is durable) and hands its commands to ingest.
//! Reads (availability, lists) go to the store directly.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use protocol::api::{CommandOrigin, CommandRecord};
use protocol::calendar::Calendar;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::commands::NewCommand;
use crate::config::{Config, ScheduleConfig};
use crate::metrics::Metrics;
use crate::records::{
    Booking, Group, Milestone, Notification, Outage, OutageReason, SlotCount, SlotLoad, Status,
};
use crate::schedule::{self, Clock, Duty, History, Refusal, Request, Resource, Roster, Slot};
use crate::store::{Store, StoreError};
use crate::supervise::{self, component, InjectedFault, Supervisor};

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
/// A `lock` stays deliverable this long after the slot's end.
const LOCK_TTL_MS: u64 = 10 * MINUTE_MS;
/// Most jobs applied before one fsync.
const BATCH_MAX: usize = 1024;

/// What a bound device's health did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Fault,
    FaultCleared,
    Offline,
    Online,
}

/// A booking request, checked for shape by the API.
#[derive(Debug, Clone)]
pub struct BookRequest {
    pub resource: String,
    pub slot_start: u64,
    pub resident: String,
    pub group: Group,
    pub child_birthdate: Option<NaiveDate>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("no resource {0}")]
    NoResource(String),
    #[error("no booking {0}")]
    NoBooking(String),
    #[error("{0}")]
    Refused(Refusal, Option<Box<Booking>>),
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the booking desk has stopped")]
    Stopped,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Rule { rule, reason } => write!(f, "rule {rule}: {reason}"),
            Refusal::Full { reason } => f.write_str(reason),
        }
    }
}

/// Why the desk thread ended before shutdown: a store error ends it once
/// the batch is answered (see `supervise` on why it is not retried).
#[derive(Debug, thiserror::Error)]
pub enum DeskFailure {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fault(#[from] InjectedFault),
}

/// Who checks a booking in.
#[derive(Debug, Clone)]
pub enum CheckInBy {
    Staff,
    /// A bound device's event naming the booking (a piano `session_start`).
    Device(String),
}

type Reply = oneshot::Sender<Result<Booking, DeskError>>;

enum Job {
    Book(BookRequest, Reply),
    Cancel(String, Reply),
    Waitlist(String, Reply),
    CheckIn(String, CheckInBy, Option<Reply>),
    /// A resident passed a gate: checks in their booking of a resource the
    /// gate is bound to, inside its slot.
    Passage {
        resident: String,
        gate: String,
    },
    Health(String, Health),
}

/// Hands a recorded command to ingest (which publishes it).
pub type HandOver = Box<dyn Fn(CommandRecord) + Send>;

/// What the API and ingest ask of the schedule.
pub struct Schedule {
    pub resources: Arc<Catalog>,
    pub calendar: Calendar,
    pub clock: Arc<Clock>,
    pub roster: Roster,
    store: Arc<Store>,
    jobs: Sender<Job>,
    /// Check-in opens this long before a slot (and the grace after it).
    grace_ms: u64,
    walk_in_minutes: u64,
    lookahead_ms: u64,
}

/// The bookable resources: from the config, then those added or changed
/// through the API (kept in the store). Shared by the API and the desk.
#[derive(Debug, Default)]
pub struct Catalog {
    /// std RwLock: held only to read or swap an entry, never across an await.
    map: std::sync::RwLock<BTreeMap<String, Arc<Resource>>>,
}

impl Catalog {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Resource>>> {
        // invariant: no code panics while holding the lock.
        self.map.read().expect("catalog lock")
    }

    pub fn get(&self, id: &str) -> Option<Arc<Resource>> {
        self.read().get(id).cloned()
    }

    /// Every resource, in id order.
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.read().values().cloned().collect()
    }

    /// Resources a device is bound to.
    pub fn bound_to(&self, device: &str) -> Vec<Arc<Resource>> {
        self.read()
            .values()
            .filter(|r| r.config.devices.iter().any(|d| d == device))
            .cloned()
            .collect()
    }

    /// Adds or replaces a resource.
    pub fn put(&self, resource: Resource) {
        // invariant: no code panics while holding the lock.
        let mut map = self.map.write().expect("catalog lock");
        map.insert(resource.config.id.clone(), Arc::new(resource));
    }
}

/// Slots of `resource` starting at or before the returned time are
/// blocked: one of its devices has an active outage.
fn blocked_until(
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

/// One slot as availability shows it.
#[derive(Debug, Clone, Serialize)]
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
    pub held: BTreeMap<&'static str, u32>,
    pub waitlist: u32,
    /// Closed for maintenance (a bound device is out of service).
    pub blocked: bool,
    /// The manager on duty, when the room keeps a roster.
    pub manager: Option<String>,
    /// The room keeps a roster and nobody is on duty.
    pub unstaffed: bool,
}

impl Schedule {
    /// Compiles the resources and starts the desk thread (supervised).
    pub fn start(
        store: Arc<Store>,
        metrics: Metrics,
        config: &Config,
        hand_over: HandOver,
        outbox: Arc<tokio::sync::Notify>,
        supervisor: &Supervisor,
    ) -> std::io::Result<(Arc<Schedule>, std::thread::JoinHandle<()>)> {
        let resources = Arc::new(Catalog::default());
        // invariant: `Config::validate` checked every config entry; stored
        // ones were checked when the API took them.
        let stored = store.stored_resources().unwrap_or_else(|error| {
            tracing::error!(%error, "resources added through the API could not be read");
            Vec::new()
        });
        for entry in config.resources.iter().chain(stored.iter()) {
            if let Ok(resource) = Resource::from_config(entry) {
                resources.put(resource);
            }
        }
        let calendar = Calendar {
            tz: config.time_zone(),
        };
        // invariant: `Config::validate` checked the clock.
        let clock = Arc::new(Clock::parse(&config.schedule.clock).unwrap_or(Clock::System));
        let (jobs, rx) = std::sync::mpsc::channel();
        let desk = Desk {
            store: store.clone(),
            metrics,
            resources: resources.clone(),
            calendar,
            clock: clock.clone(),
            config: config.schedule.clone(),
            hand_over,
            commands: Vec::new(),
            wrote: false,
            notified: false,
            outbox: outbox.clone(),
            failure: None,
        };
        let stop = supervisor.stop_token();
        let thread = supervisor.spawn_thread(component::DESK, move || desk.run(rx, stop))?;
        let schedule = Schedule {
            resources,
            calendar,
            clock,
            store,
            jobs,
            roster: Roster::from_config(&config.duty),
            grace_ms: config.schedule.grace_minutes * MINUTE_MS,
            walk_in_minutes: config.schedule.walk_in_minutes,
            lookahead_ms: config.schedule.outage_lookahead_minutes * MINUTE_MS,
        };
        Ok((Arc::new(schedule), thread))
    }

    async fn ask(&self, job: impl FnOnce(Reply) -> Job) -> Result<Booking, DeskError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).map_err(|_| DeskError::Stopped)?;
        rx.await.map_err(|_| DeskError::Stopped)?
    }

    /// Books a place: `Ok` once the booking is durable.
    pub async fn book(&self, request: BookRequest) -> Result<Booking, DeskError> {
        self.ask(|reply| Job::Book(request, reply)).await
    }

    pub async fn cancel(&self, id: String) -> Result<Booking, DeskError> {
        self.ask(|reply| Job::Cancel(id, reply)).await
    }

    pub async fn join_waitlist(&self, id: String) -> Result<Booking, DeskError> {
        self.ask(|reply| Job::Waitlist(id, reply)).await
    }

    pub async fn check_in(&self, id: String) -> Result<Booking, DeskError> {
        self.ask(|reply| Job::CheckIn(id, CheckInBy::Staff, Some(reply)))
            .await
    }

    /// A bound device says the booking's resident is here (from ingest:
    /// never waits).
    pub fn device_check_in(&self, booking: &str, device: &str) {
        let job = Job::CheckIn(booking.into(), CheckInBy::Device(device.into()), None);
        if self.jobs.send(job).is_err() {
            tracing::warn!("the booking desk has stopped; device check-in lost");
        }
    }

    /// A resident passed `gate` (from ingest: never waits).
    pub fn gate_passage(&self, resident: &str, gate: &str) {
        let job = Job::Passage {
            resident: resident.into(),
            gate: gate.into(),
        };
        if self.jobs.send(job).is_err() {
            tracing::warn!("the booking desk has stopped; gate check-in lost");
        }
    }

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

    /// A bound device's health changed (from ingest: never waits).
    pub fn device_health(&self, device: &str, change: Health) {
        if self.resources.bound_to(device).is_empty() {
            return;
        }
        if self.jobs.send(Job::Health(device.into(), change)).is_err() {
            tracing::warn!("the booking desk has stopped; device health change lost");
        }
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
                        schedule::free_places(resource, &load, None, holds)
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

    /// Sets the gauges computed on demand: unstaffed slots and people on
    /// waitlists from now to each resource's horizon, and today's seat time
    /// available and booked.
    pub fn refresh_gauges(&self, metrics: &Metrics) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let today = self.calendar.day(now);
        let (midnight, next) = (
            self.calendar.midnight(today),
            self.calendar.next_midnight(now),
        );
        metrics.booking_slots_unstaffed.reset();
        metrics.booking_waitlist.reset();
        metrics.booking_day_seat_seconds.reset();
        for resource in self.resources.all() {
            let config = &resource.config;
            let labels = [config.center.as_str(), config.kind.as_str()];
            let horizon = now + u64::from(config.horizon_days) * DAY_MS;
            let unstaffed = resource
                .slots_between(&self.calendar, now, horizon)
                .into_iter()
                .filter(|slot| {
                    self.roster.duty(&self.calendar, &resource, *slot) == Duty::Unstaffed
                })
                .count();
            metrics
                .booking_slots_unstaffed
                .with_label_values(&labels)
                .add(unstaffed as i64);
            let waiting: u32 = self
                .store
                .slot_counts(&config.id, now.saturating_sub(DAY_MS), horizon + 1)?
                .iter()
                .map(|(_, count)| count.waitlist)
                .sum();
            metrics
                .booking_waitlist
                .with_label_values(&labels)
                .add(i64::from(waiting));
            let seconds = |slot_start: u64, slot_end: u64| (slot_end - slot_start) as f64 / 1000.0;
            let slots = resource.slots_between(&self.calendar, midnight, next);
            let available: f64 = slots
                .iter()
                .map(|s| seconds(s.start, s.end) * f64::from(config.capacity))
                .sum();
            let booked: f64 = self
                .store
                .slot_counts(&config.id, midnight, next)?
                .iter()
                .filter_map(|(start, count)| {
                    let slot = slots.iter().find(|s| s.start == *start)?;
                    Some(seconds(slot.start, slot.end) * f64::from(count.load.taken()))
                })
                .sum();
            for (state, value) in [("available", available), ("booked", booked)] {
                let gauge = metrics
                    .booking_day_seat_seconds
                    .with_label_values(&[labels[0], labels[1], state]);
                gauge.set(gauge.get() + value);
            }
        }
        Ok(())
    }

    /// Bookings of a resident or a resource with slots starting in
    /// `[from, to)` (offers that never joined a waitlist left out).
    pub fn bookings(
        &self,
        resident: Option<&str>,
        resource: Option<&str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Booking>, StoreError> {
        let entries = match (resident, resource) {
            (Some(resident), _) => self.store.resident_entries(resident, from, to)?,
            (None, Some(resource)) => self.store.slot_entries(resource, from, to)?,
            (None, None) => Vec::new(),
        };
        let mut bookings = Vec::new();
        for (_, id, entry) in entries {
            if resource.is_some_and(|r| r != entry.resource) || entry.status == Status::Offered {
                continue;
            }
            bookings.extend(self.store.booking(&id)?);
        }
        Ok(bookings)
    }

    pub fn notifications(&self, resident: &str) -> Result<Vec<Notification>, StoreError> {
        self.store.notifications_of(resident)
    }
}

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

/// The desk thread's state.
struct Desk {
    store: Arc<Store>,
    metrics: Metrics,
    resources: Arc<Catalog>,
    calendar: Calendar,
    clock: Arc<Clock>,
    config: ScheduleConfig,
    hand_over: HandOver,
    /// Commands recorded in this batch, handed over after its fsync.
    commands: Vec<CommandRecord>,
    /// Something was written in this batch.
    wrote: bool,
    /// A notification went to the outbox in this batch.
    notified: bool,
    /// Wakes the webhook delivery after the batch's fsync.
    outbox: Arc<tokio::sync::Notify>,
    /// The first store error of this batch: the desk ends after answering.
    failure: Option<StoreError>,
}

impl Desk {
    fn run(mut self, jobs: Receiver<Job>, stop: CancellationToken) -> Result<(), DeskFailure> {
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

    /// Fsyncs what the batch wrote, then answers and hands commands over;
    /// a failed fsync answers errors and ends the desk.
    fn finish_batch(
        &mut self,
        answers: Vec<(Reply, Result<Booking, DeskError>)>,
    ) -> Result<(), StoreError> {
        let flushed = if std::mem::take(&mut self.wrote) {
            self.store.flush().map(|_| ())
        } else {
            Ok(())
        };
        let commands = std::mem::take(&mut self.commands);
        match flushed {
            Ok(()) => {
                for (reply, result) in answers {
                    let _ = reply.send(result);
                }
                for command in commands {
                    (self.hand_over)(command);
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

    fn resource(&self, id: &str) -> Result<Arc<Resource>, DeskError> {
        self.resources
            .get(id)
            .ok_or_else(|| DeskError::NoResource(id.into()))
    }

    fn book(&mut self, request: BookRequest, now: u64) -> Result<Booking, DeskError> {
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
        let checked = Request {
            slot,
            group: request.group,
            child_birthdate: request.child_birthdate,
            now,
        };
        let history = self.history(&resource, &request.resident, slot, now)?;
        let load = self.load(&resource, slot)?;
        let mut booking = Booking {
            // Unique across restarts (sled's id generator), whatever the
            // clock says: a fixed clock must not make two bookings collide.
            id: format!("{:016x}", self.store.next_id()?),
            resource: resource.config.id.clone(),
            center: resource.config.center.clone(),
            kind: resource.config.kind.clone(),
            slot_start: slot.start,
            slot_end: slot.end,
            resident: request.resident,
            group: request.group,
            child_birthdate: request.child_birthdate,
            status: Status::Booked,
            created_at: now,
            waitlisted_at: None,
            checked_in_at: None,
            checked_in_by: None,
            cancelled_at: None,
            late_cancel: false,
            reason: None,
            unlocked: false,
        };
        match schedule::decide(&resource, &self.calendar, &checked, &history, &load) {
            Ok(()) => {
                self.put(&booking, &self.dues_of_booked(&resource, slot, now))?;
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

    /// Due times of a booked place: unlock at start (bound devices only),
    /// release at grace end, lock and count at the end.
    fn dues_of_booked(&self, resource: &Resource, slot: Slot, now: u64) -> Vec<(u64, Milestone)> {
        let mut dues = Vec::with_capacity(3);
        if !resource.config.devices.is_empty() {
            dues.push((slot.start.max(now), Milestone::Start));
        }
        let grace = self.config.grace_minutes * MINUTE_MS;
        dues.push((slot.start.max(now) + grace, Milestone::Grace));
        dues.push((slot.end, Milestone::End));
        dues
    }

    fn put(&mut self, booking: &Booking, due: &[(u64, Milestone)]) -> Result<(), StoreError> {
        self.store.put_booking(booking, due)?;
        self.wrote = true;
        Ok(())
    }

    fn count(&self, booking: &Booking, outcome: &str) {
        self.metrics
            .bookings
            .with_label_values(&[&booking.center, &booking.kind, outcome])
            .inc();
    }

    /// The resident's standing with this resource around `slot`.
    fn history(
        &self,
        resource: &Resource,
        resident: &str,
        slot: Slot,
        now: u64,
    ) -> Result<History, StoreError> {
        let (week_start, week_end) = schedule::week_of(&self.calendar, slot.start);
        let from = week_start.min(now.saturating_sub(DAY_MS));
        let day = self.calendar.day(slot.start);
        let mut history = History::default();
        for (start, _, entry) in self.store.resident_entries(resident, from, u64::MAX)? {
            if entry.resource != resource.config.id {
                continue;
            }
            if entry.status.counts_for_quota() {
                history.on_day += u32::from(self.calendar.day(start) == day);
                history.in_week += u32::from(start >= week_start && start < week_end);
            }
            history.active += u32::from(entry.status == Status::Booked && entry.end > now);
            history.holds_slot |= start == slot.start
                && (entry.status.holds_place() || entry.status == Status::Waitlisted);
        }
        history.blocked_until = self.blocked_until(resident, now)?;
        Ok(history)
    }

    fn blocked_until(&self, resident: &str, now: u64) -> Result<Option<u64>, StoreError> {
        let since = now.saturating_sub(self.config.strike_days * DAY_MS);
        let strikes = self.store.strikes_since(resident, since)?;
        let blocked = strikes.len() >= self.config.strikes_to_block as usize;
        Ok(strikes
            .last()
            .filter(|_| blocked)
            .map(|last| last + self.config.block_days * DAY_MS))
    }

    fn load(&self, resource: &Resource, slot: Slot) -> Result<SlotLoad, StoreError> {
        Ok(self.store.slot_count(&resource.config.id, slot.start)?.load)
    }

    fn existing(&self, id: &str) -> Result<Booking, DeskError> {
        self.store
            .booking(id)?
            .ok_or_else(|| DeskError::NoBooking(id.into()))
    }

    fn cancel(&mut self, id: &str, now: u64) -> Result<Booking, DeskError> {
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
            booking.late_cancel =
                now + self.config.late_cancel_minutes * MINUTE_MS >= booking.slot_start;
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

    fn waitlist(&mut self, id: &str, now: u64) -> Result<Booking, DeskError> {
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
        let slot = Slot {
            start: booking.slot_start,
            end: booking.slot_end,
        };
        let checked = Request {
            slot,
            group: booking.group,
            child_birthdate: booking.child_birthdate,
            now,
        };
        let history = self.history(&resource, &booking.resident, slot, now)?;
        schedule::check_rules(&resource, &self.calendar, &checked, &history)
            .map_err(|refusal| DeskError::Refused(refusal, None))?;
        booking.status = Status::Waitlisted;
        booking.waitlisted_at = Some(now);
        self.put(&booking, &[(slot.end, Milestone::End)])?;
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
        let opens = booking
            .slot_start
            .saturating_sub(self.config.grace_minutes * MINUTE_MS);
        if now < opens || now >= booking.slot_end {
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
    fn promote(&mut self, freed: &Booking, now: u64) -> Result<(), DeskError> {
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
        let slot = Slot {
            start: booking.slot_start,
            end: booking.slot_end,
        };
        booking.status = Status::Booked;
        let dues: Vec<(u64, Milestone)> = self
            .dues_of_booked(&resource, slot, now)
            .into_iter()
            .filter(|(_, due)| *due != Milestone::End)
            .collect();
        self.put(&booking, &dues)?;
        self.count(&booking, "promoted");
        let message = format!(
            "a place freed up: you are booked for {} at {}",
            booking.resource,
            self.calendar.local(booking.slot_start).to_rfc3339()
        );
        self.notify(&booking, "promoted", message, now)?;
        Ok(())
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
        self.wrote = true;
        self.notified |= outbox;
        Ok(())
    }

    fn health(&mut self, device: &str, change: Health, now: u64) -> Result<(), DeskError> {
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
    fn enforce_outages(&mut self, now: u64) -> Result<(), DeskError> {
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
            self.put(&booking, &[])?;
            self.count(&booking, "maintenance");
            let message = format!(
                "your booking of {} at {} is cancelled: the device {why}; sorry",
                booking.resource,
                self.calendar.local(booking.slot_start).to_rfc3339()
            );
            self.notify(&booking, "cancelled", message, now)?;
        }
        Ok(())
    }

    /// Processes everything due by now, in time order.
    fn tick(&mut self) -> Result<(), DeskError> {
        let now = self.clock.now_ms();
        self.enforce_outages(now)?;
        for (at, due, id) in self.store.due_until(now)? {
            if let Some(booking) = self.store.booking(&id)? {
                match due {
                    Milestone::Start => self.slot_started(booking, now)?,
                    Milestone::Grace => self.grace_over(booking, now)?,
                    Milestone::End => self.slot_ended(booking, now)?,
                }
            }
            self.store.remove_due(at, due, &id)?;
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
        self.command_devices(&booking, "unlock", args, booking.slot_end, now)?;
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
        self.put(&booking, &[])?;
        self.store.add_strike(&booking.resident, now, &booking.id)?;
        self.count(&booking, "no_show");
        let message = format!(
            "your booking of {} at {} was released: not checked in within {} min",
            booking.resource,
            self.calendar.local(booking.slot_start).to_rfc3339(),
            self.config.grace_minutes
        );
        self.notify(&booking, "released", message, now)?;
        self.promote(&booking, now)
    }

    /// Locks the bound devices unlocked for `booking` (its slot ended, or
    /// its place was given up); the caller writes the booking.
    fn lock_devices(&mut self, booking: &mut Booking, now: u64) -> Result<(), DeskError> {
        if booking.unlocked {
            let args = json!({"booking": booking.id});
            self.command_devices(booking, "lock", args, now + LOCK_TTL_MS, now)?;
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

    /// Records `op` for every device bound to the booking's resource, valid
    /// until `expires_at` on the schedule's clock; they are handed to ingest
    /// after this batch's fsync.
    fn command_devices(
        &mut self,
        booking: &Booking,
        op: &str,
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
        let issued_at = crate::clock::unix_ms();
        let expires_at = issued_at + expires_at.saturating_sub(now).max(1);
        for device in devices {
            let record = NewCommand {
                device,
                op: op.into(),
                args: args.clone(),
                expires_at,
                origin: CommandOrigin::Schedule,
            }
            .into_record(issued_at);
            self.store.put_command(&record)?;
            self.wrote = true;
            tracing::info!(booking = %booking.id, device = %record.device, op, at = now, "booking command");
            self.commands.push(record);
        }
        Ok(())
    }
}
