//! The residents at their phones and at the center's kiosk: each center's
//! plan (`residents`) carried out through the hub's API in simulated time.
//! They book; join the waitlist of a full slot; cancel; look, half an hour
//! before a slot they wait for, whether a place came free (and leave the
//! list if not); check in at the kiosk for childcare, yoga and study seats.
//! At a piano or therapy robot the device checks them in itself when the
//! hub unlocks it (`Attendance`).
//!
//! The hub's schedule clock is moved along with the simulated one (a
//! `fixed:` clock, through the admin clock API), to the instant of each
//! action before it is taken: the hub's milestones (unlock, no-show
//! release, lock) and rules (late cancels, check-in windows) see the
//! simulated time. A device's check-in travels over MQTT, so before the
//! clock passes such a slot's grace the desk waits until the hub has it.
//!
//! What the residents did is counted per center and local day
//! (`stats::BookingDay`): the ground truth the hub's booking metrics and
//! lists are held against.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::district::{Bookable, CheckIn};
use crate::hub_api::{Answer, ApiCallError, HubApi};
use crate::residents::{plan_day, Attendance, Fate, Intent, MINUTE_MS};
use crate::simtime::{Calendar, SimClock};
use crate::stats::{BookingDay, BookingDays};

/// How often the desk looks at the simulated clock.
const STEP: Duration = Duration::from_millis(100);
/// Days are planned this far ahead of the simulated now (nobody books
/// more than two days ahead).
const PLAN_AHEAD_MS: u64 = 3 * 24 * 60 * MINUTE_MS;
/// A waitlisted resident looks this long before the slot whether a place
/// came free.
const LOOK_BEFORE_MS: u64 = 30 * MINUTE_MS;
/// This long after a slot's start (well inside the grace) the desk makes
/// sure the hub has a device's check-in ...
const CONFIRM_AFTER_MS: u64 = 2 * MINUTE_MS;
/// ... waiting at most this long (real time).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIRM_POLL: Duration = Duration::from_millis(10);

/// Whether the hub's schedule can follow the simulated clock.
#[derive(Debug, Clone, PartialEq)]
pub enum HubClock {
    /// A `fixed:` clock the desk moves along.
    Driven,
    /// A clock that already reads the simulated time (the system clock,
    /// a run at speed 1 from now).
    Follows,
    /// Neither: residents do not book (the reason, for the log).
    Unavailable(String),
}

impl HubClock {
    /// Moves the hub's schedule clock to `start` if it can be moved, else
    /// checks whether it reads the simulated time anyway.
    pub async fn attach(api: &HubApi, start: u64, speed: f64) -> HubClock {
        let moved = api
            .post("/api/v1/schedule/clock", &json!({ "now": start }))
            .await;
        if moved.as_ref().is_ok_and(|a| a.status.is_success()) {
            return HubClock::Driven;
        }
        let hub_now = match api.get("/api/v1/schedule/clock").await {
            Ok(answer) => answer.body["now"].as_u64(),
            Err(error) => return HubClock::Unavailable(error.to_string()),
        };
        let Some(hub_now) = hub_now else {
            return HubClock::Unavailable("the hub did not tell its schedule clock".into());
        };
        if speed == 1.0 && hub_now.abs_diff(start) < MINUTE_MS {
            return HubClock::Follows;
        }
        let reason = moved.map(|a| a.reason().to_owned()).unwrap_or_default();
        HubClock::Unavailable(format!(
            "the hub's schedule clock reads {hub_now} and cannot be moved to the simulated {start} ({reason}): \
             give the hub `[schedule] clock = \"fixed:…\"` no later than the run's start, or run at --speed 1 from now"
        ))
    }
}

/// What the desk does at an instant.
#[derive(Debug, Clone)]
enum Action {
    Book(Intent),
    Cancel(String, Intent),
    /// A waitlisted resident looks whether they got a place.
    Look(String, Intent),
    /// At the kiosk.
    Arrive(String, Intent),
    /// The slot started without its resident.
    Missed(Intent),
    /// Until the hub has the device's check-in.
    Confirm(String, Intent),
}

/// The residents of every center of a run, and what they did.
pub struct FrontDesk {
    api: HubApi,
    calendar: Calendar,
    seed: u64,
    /// Each center's bookable resources.
    centers: BTreeMap<String, Vec<Bookable>>,
    attendance: Arc<Attendance>,
    drives_clock: bool,
    /// The hub's schedule clock as last moved.
    hub_now: u64,
    not_before: u64,
    /// Days planned: those before this one.
    planned_until: NaiveDate,
    /// By instant, then in the order added.
    queue: BTreeMap<(u64, u64), Action>,
    added: u64,
    tally: BookingDays,
}

impl FrontDesk {
    /// The residents of `bookables`' centers, from simulated `start` on.
    pub fn new(
        api: HubApi,
        clock: &HubClock,
        (seed, calendar): (u64, Calendar),
        bookables: &[Bookable],
        attendance: Arc<Attendance>,
        start: u64,
    ) -> FrontDesk {
        let mut centers: BTreeMap<String, Vec<Bookable>> = BTreeMap::new();
        for bookable in bookables {
            centers
                .entry(bookable.center.clone())
                .or_default()
                .push(bookable.clone());
        }
        FrontDesk {
            api,
            calendar,
            seed,
            centers,
            attendance,
            drives_clock: *clock == HubClock::Driven,
            hub_now: start,
            not_before: start,
            planned_until: calendar.day(start),
            queue: BTreeMap::new(),
            added: 0,
            tally: BTreeMap::new(),
        }
    }

    /// Takes every action due by simulated `now` (planning the days ahead
    /// first) and moves the hub's clock to `now`. False once `stop` fired.
    pub async fn catch_up(&mut self, now: u64, stop: &CancellationToken) -> bool {
        self.plan_until(now + PLAN_AHEAD_MS);
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            if stop.is_cancelled() {
                return false;
            }
            let ((at, _), action) = entry.remove_entry();
            self.clock_to(at).await;
            self.act(action, stop).await;
        }
        self.clock_to(now).await;
        !stop.is_cancelled()
    }

    /// Follows `clock` until `stop`; returns what the residents did.
    pub async fn run(mut self, clock: SimClock, stop: CancellationToken) -> BookingDays {
        while self.catch_up(clock.now_ms(), &stop).await {
            tokio::select! {
                _ = tokio::time::sleep(STEP) => {}
                _ = stop.cancelled() => break,
            }
        }
        self.finish()
    }

    /// The residents' tally, with the check-ins their devices made.
    fn finish(mut self) -> BookingDays {
        for ((center, day), arrived) in self.attendance.arrivals() {
            self.day(&center, day).checked_in += arrived;
        }
        tracing::info!(
            hub_clock = self.hub_now,
            waiting = self.queue.len(),
            "residents stopped"
        );
        self.tally
    }

    fn plan_until(&mut self, until: u64) {
        while self.calendar.midnight(self.planned_until) < until {
            let day = self.planned_until;
            for bookables in self.centers.values() {
                let plan = plan_day(self.seed, bookables, day, &self.calendar, self.not_before);
                for intent in plan {
                    let at = intent.book_at;
                    self.queue.insert((at, self.added), Action::Book(intent));
                    self.added += 1;
                }
            }
            self.planned_until = day + Days::new(1);
        }
    }

    fn schedule(&mut self, at: u64, action: Action) {
        self.queue.insert((at, self.added), action);
        self.added += 1;
    }

    fn day(&mut self, center: &str, day: NaiveDate) -> &mut BookingDay {
        let days = self.tally.entry(center.to_owned()).or_default();
        days.entry(day).or_default()
    }

    fn count(&mut self, intent: &Intent) -> &mut BookingDay {
        let day = intent.day(&self.calendar);
        self.day(&intent.center, day)
    }

    /// Moves a driven hub clock forward to `at`.
    async fn clock_to(&mut self, at: u64) {
        if !self.drives_clock || at <= self.hub_now {
            return;
        }
        match self
            .api
            .post("/api/v1/schedule/clock", &json!({ "now": at }))
            .await
        {
            Ok(answer) if answer.status.is_success() => self.hub_now = at,
            Ok(answer) => {
                tracing::warn!(status = %answer.status, reason = answer.reason(), "the hub's clock did not move")
            }
            Err(error) => tracing::warn!(%error, "the hub's clock did not move"),
        }
    }

    async fn act(&mut self, action: Action, stop: &CancellationToken) {
        match action {
            Action::Book(intent) => self.book(intent).await,
            Action::Cancel(id, intent) => self.cancel(&id, &intent).await,
            Action::Look(id, intent) => self.look(&id, intent).await,
            Action::Arrive(id, intent) => self.arrive(&id, &intent).await,
            Action::Missed(intent) => self.count(&intent).no_shows += 1,
            Action::Confirm(id, intent) => self.confirm(&id, &intent, stop).await,
        }
    }

    /// The answer to a call; one that did not come is counted unexpected.
    fn answered(&mut self, intent: &Intent, sent: Result<Answer, ApiCallError>) -> Option<Answer> {
        match sent {
            Ok(answer) => Some(answer),
            Err(error) => {
                tracing::warn!(%error, resident = %intent.resident, "no answer from the hub");
                self.count(intent).unexpected += 1;
                None
            }
        }
    }

    fn unexpected(&mut self, intent: &Intent, what: &str, answer: &Answer) {
        tracing::warn!(resident = %intent.resident, resource = %intent.resource, status = %answer.status, reason = answer.reason(), "unexpected answer to {what}");
        self.count(intent).unexpected += 1;
    }

    async fn book(&mut self, intent: Intent) {
        let body = json!({
            "resource": intent.resource,
            "slot_start": intent.slot.0,
            "resident": intent.resident,
            "group": intent.group,
            "child_birthdate": intent.child_birthdate.map(|d| d.to_string()),
        });
        let sent = self.api.post("/api/v1/bookings", &body).await;
        let Some(answer) = self.answered(&intent, sent) else {
            return;
        };
        self.count(&intent).ineligible += u64::from(intent.ineligible);
        let offer = answer.body["offer"]["id"].as_str().map(str::to_owned);
        match (answer.status, booking_id(&answer.body), offer) {
            (StatusCode::CREATED, Some(id), _) => {
                self.count(&intent).booked += 1;
                self.follow(id, intent);
            }
            (StatusCode::CONFLICT, _, Some(offer)) => {
                self.count(&intent).full += 1;
                if intent.waits {
                    self.wait_for(offer, intent).await;
                }
            }
            (StatusCode::UNPROCESSABLE_ENTITY, _, _) => {
                tracing::debug!(resident = %intent.resident, rule = ?answer.body["rule"], "booking refused");
                self.count(&intent).refused += 1;
            }
            _ => self.unexpected(&intent, "a booking", &answer),
        }
    }

    /// What a booked place's resident does next.
    fn follow(&mut self, id: String, intent: Intent) {
        let comes = intent.fate == Fate::Attend;
        if intent.check_in() == CheckIn::Device {
            let day = intent.day(&self.calendar);
            self.attendance.expect(&id, &intent.center, day, comes);
        }
        match intent.fate {
            Fate::Attend => self.expect_arrival(id, intent),
            Fate::NoShow => self.schedule(intent.slot.0, Action::Missed(intent)),
            Fate::Cancel { at, .. } => self.schedule(at, Action::Cancel(id, intent)),
        }
    }

    /// The resident comes: to the kiosk at their time, or to the device.
    fn expect_arrival(&mut self, id: String, intent: Intent) {
        match intent.check_in() {
            CheckIn::Kiosk => self.schedule(intent.arrive_at, Action::Arrive(id, intent)),
            CheckIn::Device => {
                let at = intent.slot.0 + CONFIRM_AFTER_MS;
                self.schedule(at, Action::Confirm(id, intent))
            }
        }
    }

    async fn wait_for(&mut self, offer: String, intent: Intent) {
        let sent = self
            .api
            .post(&format!("/api/v1/bookings/{offer}/waitlist"), &Value::Null)
            .await;
        let Some(answer) = self.answered(&intent, sent) else {
            return;
        };
        if !answer.status.is_success() {
            return self.unexpected(&intent, "joining a waitlist", &answer);
        }
        self.count(&intent).waitlisted += 1;
        if intent.check_in() == CheckIn::Device {
            let day = intent.day(&self.calendar);
            self.attendance.expect(&offer, &intent.center, day, true);
        }
        self.schedule(intent.slot.0 - LOOK_BEFORE_MS, Action::Look(offer, intent));
    }

    async fn cancel(&mut self, id: &str, intent: &Intent) {
        let sent = self.api.delete(&format!("/api/v1/bookings/{id}")).await;
        let Some(answer) = self.answered(intent, sent) else {
            return;
        };
        let late = matches!(intent.fate, Fate::Cancel { late: true, .. });
        match (answer.status.is_success(), late) {
            (true, true) => self.count(intent).late_cancels += 1,
            (true, false) => self.count(intent).cancelled += 1,
            (false, _) => self.unexpected(intent, "a cancellation", &answer),
        }
    }

    /// Half an hour before the slot: promoted, the resident comes; still
    /// waiting, they leave the list.
    async fn look(&mut self, id: &str, intent: Intent) {
        let sent = self.api.get(&format!("/api/v1/bookings/{id}")).await;
        let Some(answer) = self.answered(&intent, sent) else {
            return;
        };
        match answer.body["status"].as_str() {
            Some("booked") => {
                self.count(&intent).promoted += 1;
                self.expect_arrival(id.to_owned(), intent);
            }
            Some("waitlisted") => {
                let sent = self.api.delete(&format!("/api/v1/bookings/{id}")).await;
                match self.answered(&intent, sent) {
                    Some(left) if left.status.is_success() => {
                        self.count(&intent).left_waitlist += 1
                    }
                    Some(left) => self.unexpected(&intent, "leaving a waitlist", &left),
                    None => {}
                }
            }
            _ => self.unexpected(&intent, "a look at a waitlisted booking", &answer),
        }
    }

    async fn arrive(&mut self, id: &str, intent: &Intent) {
        let sent = self
            .api
            .post(&format!("/api/v1/bookings/{id}/checkin"), &Value::Null)
            .await;
        let Some(answer) = self.answered(intent, sent) else {
            return;
        };
        if answer.status.is_success() {
            self.count(intent).checked_in += 1;
        } else {
            self.unexpected(intent, "a kiosk check-in", &answer);
        }
    }

    /// Waits until the device checked the resident in and the hub has it
    /// (the hub unlocked the device at the slot's start, the clock now
    /// being past it): the clock must not pass the grace before.
    async fn confirm(&mut self, id: &str, intent: &Intent, stop: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        while tokio::time::Instant::now() < deadline && !stop.is_cancelled() {
            if self.attendance.arrived(id) {
                let status = match self.api.get(&format!("/api/v1/bookings/{id}")).await {
                    Ok(answer) => answer.body["status"].as_str().map(str::to_owned),
                    Err(_) => None,
                };
                if status.as_deref() == Some("checked_in") {
                    return;
                }
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
        if !stop.is_cancelled() {
            tracing::warn!(
                booking = id,
                "the hub did not get a device's check-in in time"
            );
            self.count(intent).unexpected += 1;
        }
    }
}

fn booking_id(body: &Value) -> Option<String> {
    body["id"].as_str().map(str::to_owned)
}
