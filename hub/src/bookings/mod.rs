//! Bookings: the one owner of booking writes (the desk), and what the rest
//! of the hub asks of it (`Bookings`).
//!
//! Every change — a booking, a cancellation, a check-in, joining a waitlist,
//! a bound device's health, and the milestones the clock brings (slot start
//! → `unlock`, grace end → no-show release and waitlist promotion, slot end
//! → `lock`) — is a job on one channel, applied in order by the desk
//! thread. Capacity checks therefore see every earlier booking, and no two
//! requests can take the last place. The desk applies the jobs it has at
//! once, fsyncs once, and only then answers them (a 201 is durable) and
//! hands its commands and events to ingest (`ToIngest`). Reads
//! (availability, lists) go to the store directly. The rules it applies are
//! `schedule`'s.
//!
//! - `catalog`: the bookable resources, shared by the API and the desk
//! - `query`: the read side (availability, lists, gauges, what ingest asks)
//! - `desk`: the desk thread and its jobs
//! - `dues`: the clock's milestones, and commanding bound devices
//! - `outages`: bound devices out of service block slots
//! - `gauges`: the booking gauges, kept by the desk

mod catalog;
mod desk;
mod dues;
mod gauges;
mod outages;
mod query;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use protocol::api::CommandRecord;
use protocol::calendar::Calendar;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::records::{Booker, Booking};
use crate::schedule::{Refusal, MINUTE_MS};
use crate::settings::{Resource, Roster, Settings};
use crate::store::{Store, StoreError};
use crate::supervise::{component, InjectedFault, Supervisor};

pub use catalog::Catalog;
pub use query::{BookingPlace, ListFilter, SlotView};

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
    pub who: Booker,
    /// The client's `Idempotency-Key`: a retry with the same key (for the
    /// same resident) gets the first answer instead of a second booking.
    pub idempotency_key: Option<String>,
}

impl BookRequest {
    /// What the request asks, to tell a retry from another request sent
    /// with the same key.
    pub fn fingerprint(&self) -> String {
        let birth = self.who.child_birthdate.map(|d| d.to_string());
        format!(
            "{} {} {} {}",
            self.resource,
            self.slot_start,
            self.who.group.as_str(),
            birth.unwrap_or_default()
        )
    }
}

/// Most requests from the API waiting for the desk (queued, or in the
/// batch being applied); more are answered 503 at once.
pub const API_QUEUE: usize = 1_024;
/// Most jobs of any origin on the desk's channel. Ingest's (check-ins,
/// passages, device health) beyond it are dropped and logged: ingest never
/// waits for the desk, and the API cannot fill the channel alone.
const QUEUE_CAPACITY: usize = 16 * API_QUEUE;

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
    /// The batch's fsync failed: the change was undone, not applied.
    #[error("the change could not be made durable and was not applied; try again")]
    NotDurable,
    /// `API_QUEUE` requests are waiting already.
    #[error("the booking desk is busy; try again")]
    Busy,
    /// The `Idempotency-Key` came with another request before.
    #[error("this Idempotency-Key was sent with another request")]
    KeyReused,
}

/// Why the bookings could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("counting the booking gauges: {0}")]
    Store(#[from] StoreError),
    #[error("desk thread: {0}")]
    Thread(#[from] std::io::Error),
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

/// What the desk hands to ingest once the batch that made it is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum ToIngest {
    /// A command recorded `pending` for a bound device (`unlock`, `lock`):
    /// ingest publishes it.
    Command(CommandRecord),
    /// A booked place on `device` is over (its slot ended, it was released
    /// or cancelled); its `lock` follows. A therapy robot still in session
    /// is stopped.
    PlaceEnded { device: String },
}

/// Hands what the desk made durable to ingest.
pub type HandOver = Box<dyn Fn(ToIngest) + Send>;

/// A request's place in the API's share of the desk's queue, freed when
/// the request is answered (or its job dropped).
struct Place(Arc<AtomicUsize>);

impl Place {
    /// A place if fewer than `limit` are taken.
    fn take(waiting: &Arc<AtomicUsize>, limit: usize) -> Option<Place> {
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(waiting.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the desk sends a request's answer.
pub(super) struct Reply {
    answer: oneshot::Sender<Result<Booking, DeskError>>,
    _place: Place,
}

impl Reply {
    /// Answers (a caller that gave up is not waiting any more).
    pub(super) fn send(self, result: Result<Booking, DeskError>) {
        let _ = self.answer.send(result);
    }
}

/// One change, applied in order by the desk thread.
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

/// What the API and ingest ask of the bookings.
pub struct Bookings {
    pub resources: Arc<Catalog>,
    pub calendar: Calendar,
    pub clock: Arc<Clock>,
    pub roster: Roster,
    store: Arc<Store>,
    jobs: SyncSender<Job>,
    /// API requests waiting for the desk, at most `api_queue`.
    waiting: Arc<AtomicUsize>,
    api_queue: usize,
    /// Check-in opens this long before a slot (and the grace after it).
    grace_ms: u64,
    walk_in_minutes: u64,
    lookahead_ms: u64,
}

impl Bookings {
    /// Builds the catalog, counts the booking gauges and starts the desk
    /// thread (supervised).
    pub fn start(
        store: Arc<Store>,
        metrics: Metrics,
        settings: &Settings,
        hand_over: HandOver,
        outbox: Arc<tokio::sync::Notify>,
        supervisor: &Supervisor,
    ) -> Result<(Arc<Bookings>, std::thread::JoinHandle<()>), StartError> {
        let resources = Arc::new(Catalog::default());
        for resource in &settings.resources {
            resources.put(resource.clone());
        }
        let stored = store.stored_resources().unwrap_or_else(|error| {
            tracing::error!(%error, "resources added through the API could not be read");
            Vec::new()
        });
        // Stored entries were checked when the API took them; they replace
        // a config entry of the same id.
        for entry in &stored {
            match Resource::from_config(entry) {
                Ok(resource) => resources.put(resource),
                Err((field, reason)) => {
                    tracing::error!(resource = %entry.id, field, reason, "a stored resource is invalid; left out")
                }
            }
        }
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let mut desk = desk::Desk::new(
            store.clone(),
            metrics,
            resources.clone(),
            settings,
            hand_over,
            outbox,
        );
        desk.count_gauges()?;
        let stop = supervisor.stop_token();
        let thread = supervisor.spawn_thread(component::DESK, move || desk.run(rx, stop))?;
        let bookings = Bookings::new(resources, store, settings, jobs, API_QUEUE);
        Ok((Arc::new(bookings), thread))
    }

    /// What asks the desk through `jobs`, taking at most `api_queue` API
    /// requests at once.
    fn new(
        resources: Arc<Catalog>,
        store: Arc<Store>,
        settings: &Settings,
        jobs: SyncSender<Job>,
        api_queue: usize,
    ) -> Bookings {
        Bookings {
            resources,
            calendar: settings.calendar,
            clock: settings.clock.clone(),
            roster: settings.roster.clone(),
            store,
            jobs,
            waiting: Arc::new(AtomicUsize::new(0)),
            api_queue,
            grace_ms: settings.schedule.grace_minutes * MINUTE_MS,
            walk_in_minutes: settings.schedule.walk_in_minutes,
            lookahead_ms: settings.schedule.outage_lookahead_minutes * MINUTE_MS,
        }
    }

    /// Queues a request for the desk and waits for its answer; `Busy` at
    /// once when `api_queue` requests are waiting already.
    async fn ask(&self, job: impl FnOnce(Reply) -> Job) -> Result<Booking, DeskError> {
        let place = Place::take(&self.waiting, self.api_queue).ok_or(DeskError::Busy)?;
        let (answer, rx) = oneshot::channel();
        let reply = Reply {
            answer,
            _place: place,
        };
        match self.jobs.try_send(job(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(DeskError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(DeskError::Stopped),
        }
        rx.await.map_err(|_| DeskError::Stopped)?
    }

    /// Queues a job from ingest, which never waits: when the queue is full
    /// or the desk gone, the job is dropped and logged.
    fn offer(&self, job: Job, what: &str) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(what, "the booking desk's queue is full; dropped")
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(what, "the booking desk has stopped; dropped")
            }
        }
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
        self.offer(job, "device check-in");
    }

    /// A resident passed `gate` (from ingest: never waits).
    pub fn gate_passage(&self, resident: &str, gate: &str) {
        let job = Job::Passage {
            resident: resident.into(),
            gate: gate.into(),
        };
        self.offer(job, "gate check-in");
    }

    /// A bound device's health changed (from ingest: never waits).
    pub fn device_health(&self, device: &str, change: Health) {
        if self.resources.bound_to(device).is_empty() {
            return;
        }
        self.offer(Job::Health(device.into(), change), "device health change");
    }
}
