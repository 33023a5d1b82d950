//! What the hub does in answer to its devices: the glue between ingest and
//! the command service, the safety interlock, gate access, occupancy and
//! the bookings. The decisions are the rules' (`interlock`, `access`,
//! `counting`); this module gathers their facts (for a gate: the resident
//! by credential hash, whether they hold a booking now, the room's
//! occupancy) and carries out what they decide.
//!
//! Ingest hands every accepted telemetry message, new event, command ack and
//! presence change here, with the device's twin. Reactions (a `stop`, an
//! `open`/`deny`) are queued in the command service and ingest publishes
//! them right after the message that caused them — before the batch's fsync —
//! then calls `observe_reactions` to time them. Owned by the ingest thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Histogram;
use protocol::api::{CommandOrigin, CommandRecord};
use protocol::calendar::Calendar;
use protocol::{CommandAck, DeviceKind, Event};
use serde_json::{json, Value};

use crate::access::{self, AccessFacts, DenyReason};
use crate::bookings::{Bookings, Health};
use crate::commands::{expires_in, Commands, NewCommand};
use crate::counting::Direction;
use crate::hours::time_of_day;
use crate::input::{CheckedTelemetry, Detail, DeviceTs, Flow, PianoSession, Reading, RobotReading};
use crate::interlock::{Interlock, Trip, Verdict};
use crate::metrics::Metrics;
use crate::occupancy::{Counters, Occupancy};
use crate::records::{Alarm, StoredEvent, TripReason, Twin};
use crate::settings::{RoomRules, Rooms, Settings};
use crate::store::{Store, StoreError};
use crate::usage::Usage;

pub struct Actions {
    commands: Commands,
    interlock: Interlock,
    calendar: Calendar,
    occupancy: Occupancy,
    counters: Counters,
    usage: Usage,
    store: Arc<Store>,
    metrics: Metrics,
    stop_ttl: Duration,
    answer_ttl: Duration,
    /// Reactions queued for publishing, with the arrival of their cause.
    reactions: Vec<(Histogram, Instant)>,
    /// Something was written that should be fsynced with this batch.
    needs_flush: bool,
    /// The booking desk: device check-ins, bookings at gates, outages.
    bookings: Option<Arc<Bookings>>,
}

impl Actions {
    /// `rooms`: the file's entries, then those set through the API.
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        settings: &Settings,
        rooms: Rooms,
    ) -> Result<Actions, StoreError> {
        let calendar = settings.calendar;
        Ok(Actions {
            commands: Commands::load(store.clone(), metrics.clone(), settings.commands.clone())?,
            interlock: Interlock::new(settings.interlock.clone()),
            occupancy: Occupancy::load(store.clone(), metrics.clone(), rooms)?,
            counters: Counters::load(store.clone(), metrics.clone(), calendar)?,
            usage: Usage::new(store.clone(), metrics.clone(), calendar),
            calendar,
            store,
            metrics,
            stop_ttl: Duration::from_secs(settings.interlock.stop_ttl_secs),
            answer_ttl: settings.gate_answer_ttl,
            reactions: Vec::new(),
            needs_flush: false,
            bookings: None,
        })
    }

    /// Ties device events to bookings: check-ins, gates bound to bookable
    /// resources, outages.
    pub fn set_bookings(&mut self, bookings: Arc<Bookings>) {
        self.bookings = Some(bookings);
    }

    /// Accepted telemetry: the interlock watches therapy robots, counters
    /// move occupancy and visits.
    pub fn on_telemetry(
        &mut self,
        twin: &mut Twin,
        telemetry: &CheckedTelemetry,
        arrived: Instant,
        now_ms: u64,
    ) {
        match &telemetry.reading {
            Reading::Robot(reading) => self.watch_robot(twin, reading, arrived, now_ms),
            Reading::Counter(flow) => self.count(twin, *flow, telemetry.ts),
            Reading::Plain => {}
        }
    }

    fn count(&mut self, twin: &Twin, flow: Flow, ts: DeviceTs) {
        if let Err(error) = self
            .counters
            .on_counter(&mut self.occupancy, twin, flow, ts)
        {
            tracing::warn!(device = %twin.id, %error, "counter message not counted");
        }
    }

    fn watch_robot(
        &mut self,
        twin: &mut Twin,
        reading: &RobotReading,
        arrived: Instant,
        now_ms: u64,
    ) {
        let alarm_active = twin.alarm.is_some();
        if let Some(trip) = self
            .interlock
            .on_telemetry(&twin.id, reading, alarm_active, now_ms)
        {
            // The robot just spoke: it is connected.
            self.trip(twin, trip, true, now_ms);
            self.reaction(self.metrics.interlock_latency.clone(), arrived);
        }
    }

    /// A newly stored device event (duplicates are not passed here) and
    /// what `input` read in it.
    pub fn on_event(
        &mut self,
        twin: &mut Twin,
        event: &Event,
        detail: &Detail,
        arrived: Instant,
        now_ms: u64,
    ) {
        self.device_health(twin, event);
        match (twin.kind, event.event_type.as_str(), detail) {
            (DeviceKind::TherapyRobot, "session_start" | "session_end", _) => {
                self.robot_session(twin, event, arrived, now_ms);
                self.booking_check_in(twin, event);
            }
            (_, _, Detail::AccessRequest { credential_hash }) => {
                let credential_hash = credential_hash.as_deref();
                self.access_request(twin, event, credential_hash, arrived, now_ms)
            }
            (DeviceKind::Gate, "passage", _) => self.passage(twin, event),
            (_, _, Detail::PianoSession(session)) => {
                if let Err(error) = self.usage.on_piano_session(twin, session) {
                    tracing::error!(%error, "recording piano usage failed");
                }
                self.booking_check_in(twin, event);
                self.refuse_walk_in_into_booking(twin, event, session, now_ms);
            }
            _ => {}
        }
    }

    pub fn on_ack(&mut self, device: &str, ack: &CommandAck, now_ms: u64) {
        self.commands.on_ack(device, ack, now_ms);
    }

    /// A command issued through the API (already recorded `pending`).
    pub fn adopt_command(&mut self, record: CommandRecord, online: bool, now_ms: u64) {
        self.commands.adopt(record, online, now_ms);
    }

    pub fn device_online(&mut self, device: &str, now_ms: u64) {
        self.commands.device_online(device, now_ms);
        if let Some(bookings) = &self.bookings {
            bookings.device_health(device, Health::Online);
        }
    }

    pub fn device_offline(&mut self, device: &str) {
        self.commands.device_offline(device);
        if let Some(bookings) = &self.bookings {
            bookings.device_health(device, Health::Offline);
        }
    }

    /// Resends and expiries of commands; robots whose session went silent
    /// (ingest trips them with `trip_watchdog`, it holds their twins).
    pub fn tick(&mut self, online: &HashSet<String>, now_ms: u64) -> Vec<String> {
        self.commands.tick(online, now_ms);
        self.interlock.watchdog(now_ms)
    }

    pub fn trip_watchdog(&mut self, twin: &mut Twin, online: bool, now_ms: u64) {
        if twin.alarm.is_none() {
            let trip = Trip {
                reason: TripReason::Watchdog,
                temp_c: None,
            };
            self.trip(twin, trip, online, now_ms);
        }
    }

    /// A booked place on this device is over (the desk locks it): a
    /// therapy robot still in session is stopped and alarmed. Returns
    /// whether the twin changed.
    pub fn place_ended(&mut self, twin: &mut Twin, online: bool, now_ms: u64) -> bool {
        let running = twin.kind == DeviceKind::TherapyRobot
            && twin.alarm.is_none()
            && self.interlock.slot_ended(&twin.id);
        if running {
            let trip = Trip {
                reason: TripReason::PastSlot,
                temp_c: None,
            };
            self.trip(twin, trip, online, now_ms);
        }
        running
    }

    /// A room's entry set through the API: gate decisions and occupancy use
    /// it from the next message on.
    pub fn set_room(&mut self, center: &str, room: &str, rules: RoomRules) {
        self.occupancy.set_room(center, room, rules);
    }

    /// Staff acknowledged the robot's alarm: it may start again. Returns
    /// false when there was none.
    pub fn acknowledge_alarm(&mut self, twin: &mut Twin, now_ms: u64) -> bool {
        let Some(alarm) = twin.alarm.take() else {
            return false;
        };
        let body = json!({"reason": alarm.reason.as_str(), "tripped_at": alarm.at});
        self.store_hub_event(twin, "alarm_ack", body, now_ms);
        tracing::info!(device = %twin.id, reason = alarm.reason.as_str(), "interlock alarm acknowledged");
        true
    }

    /// What must be published now.
    pub fn take_outgoing(&mut self) -> Vec<(String, Vec<u8>)> {
        self.commands.take_outgoing()
    }

    /// Call right after publishing `take_outgoing`: times the reactions.
    pub fn observe_reactions(&mut self) {
        for (histogram, arrived) in self.reactions.drain(..) {
            histogram.observe(arrived.elapsed().as_secs_f64());
        }
    }

    /// Writes the room counts and visits changed since the last call (with
    /// ingest's twins, before a batch's fsync or at most every 100 ms).
    pub fn flush_counts(&mut self) -> Result<(), StoreError> {
        self.occupancy.flush()?;
        self.counters.flush()
    }

    /// Whether this batch wrote hub events that should be fsynced with it.
    pub fn take_needs_flush(&mut self) -> bool {
        std::mem::take(&mut self.needs_flush)
    }

    fn reaction(&mut self, histogram: Histogram, arrived: Instant) {
        self.reactions.push((histogram, arrived));
    }

    fn trip(&mut self, twin: &mut Twin, trip: Trip, online: bool, now_ms: u64) {
        let reason = trip.reason.as_str();
        let limit = self.interlock.max_temp_c();
        let args = json!({"reason": reason, "temp_c": trip.temp_c, "limit_c": limit});
        let command = self.stop(twin, args, online, now_ms);
        twin.alarm = Some(Alarm {
            reason: trip.reason,
            at: now_ms,
            temp_c: trip.temp_c,
            command: command.clone(),
        });
        let body =
            json!({"reason": reason, "temp_c": trip.temp_c, "limit_c": limit, "command": command});
        self.store_hub_event(twin, "interlock_trip", body, now_ms);
        self.metrics
            .interlock_trips
            .with_label_values(&[&twin.center, reason])
            .inc();
        tracing::warn!(device = %twin.id, reason, temp_c = ?trip.temp_c, "interlock tripped: robot stopped");
    }

    fn stop(&mut self, twin: &Twin, args: Value, online: bool, now_ms: u64) -> String {
        let command = NewCommand {
            device: twin.id.clone(),
            op: "stop".into(),
            args,
            expires_at: expires_in(now_ms, self.stop_ttl),
            origin: CommandOrigin::Interlock,
        };
        self.commands.issue(command, online, now_ms)
    }

    fn robot_session(&mut self, twin: &mut Twin, event: &Event, arrived: Instant, now_ms: u64) {
        let alarm_active = twin.alarm.is_some();
        let verdict =
            self.interlock
                .on_session_event(&twin.id, &event.event_type, alarm_active, now_ms);
        if verdict == Verdict::RefuseRestart {
            let args = json!({"reason": "alarm_unacknowledged", "request": event.id});
            self.stop(twin, args, true, now_ms);
            self.metrics.interlock_restarts_refused.inc();
            self.reaction(self.metrics.interlock_latency.clone(), arrived);
            tracing::warn!(device = %twin.id, "session started before the alarm was acknowledged: stopped");
        }
    }

    fn access_request(
        &mut self,
        twin: &Twin,
        event: &Event,
        credential_hash: Option<&str>,
        arrived: Instant,
        now_ms: u64,
    ) {
        let decision = self.gate_decision(twin, credential_hash, now_ms);
        let (op, reason) = match decision {
            Ok(resident) => {
                if let Some(bookings) = &self.bookings {
                    bookings.gate_passage(&resident, &twin.id);
                }
                ("open", "allowed")
            }
            Err(deny) => ("deny", deny.as_str()),
        };
        let command = NewCommand {
            device: twin.id.clone(),
            op: op.into(),
            args: json!({"reason": reason, "request": event.id}),
            expires_at: expires_in(now_ms, self.answer_ttl),
            origin: CommandOrigin::Access,
        };
        // The gate just spoke: it is connected.
        self.commands.issue(command, true, now_ms);
        self.metrics
            .access_decisions
            .with_label_values(&[&twin.center, &twin.room, op, reason])
            .inc();
        self.reaction(self.metrics.access_latency.clone(), arrived);
    }

    /// Gathers the facts of a request at gate `twin` and decides it (the
    /// `access` rules). `credential_hash` is the keyed hash of the
    /// request's credential, `None` when it carried none. `Ok` names the
    /// resident let in.
    fn gate_decision(
        &self,
        twin: &Twin,
        credential_hash: Option<&str>,
        now_ms: u64,
    ) -> Result<String, DenyReason> {
        let hash = credential_hash.ok_or(DenyReason::BadRequest)?;
        let resident = self.store.resident_by_credential(hash).map_err(|error| {
            tracing::error!(%error, "resident lookup failed; denying");
            DenyReason::HubError
        })?;
        let booking = match (&self.bookings, &resident) {
            (Some(bookings), Some(resident)) => bookings
                .holds_booking_now(&twin.id, &resident.id)
                .map_err(|error| {
                    tracing::error!(%error, "booking lookup failed; denying");
                    DenyReason::HubError
                })?,
            _ => None,
        };
        let facts = AccessFacts {
            resident: resident.as_ref(),
            room: self.occupancy.rooms().get(&twin.center, &twin.room),
            local_time: time_of_day(&self.calendar, now_ms),
            occupancy: self.occupancy.people(&twin.center, &twin.room),
            booking,
        };
        access::decide(&facts)?;
        Ok(resident.map(|r| r.id).unwrap_or_default())
    }

    fn passage(&mut self, twin: &Twin, event: &Event) {
        let direction = event.body.get("direction").and_then(Value::as_str);
        let Some(direction) = direction.and_then(Direction::parse) else {
            tracing::warn!(device = %twin.id, event = %event.id, "passage without direction in/out: occupancy unchanged");
            return;
        };
        if let Err(error) = self.occupancy.passage(&twin.center, &twin.room, direction) {
            tracing::error!(%error, "recording occupancy failed");
        }
    }

    /// `fault` and `fault_cleared` events of a device bound to a bookable
    /// resource block and reopen its slots.
    fn device_health(&self, twin: &Twin, event: &Event) {
        let change = match event.event_type.as_str() {
            "fault" => Health::Fault,
            "fault_cleared" => Health::FaultCleared,
            _ => return,
        };
        if let Some(bookings) = &self.bookings {
            bookings.device_health(&twin.id, change);
        }
    }

    /// A `session_start` naming a booking (a piano's, a therapy robot's)
    /// checks it in; the resident is there, whatever the interlock decides.
    fn booking_check_in(&self, twin: &Twin, event: &Event) {
        let booking = event.body.get("booking").and_then(Value::as_str);
        if let (Some(bookings), "session_start", Some(booking)) =
            (&self.bookings, event.event_type.as_str(), booking)
        {
            bookings.device_check_in(booking, &twin.id);
        }
    }

    /// A walk-in `session_start` that would run into a booked slot of the
    /// piano (within its `minutes`, else `schedule.walk_in_minutes`) is
    /// answered with `deny`.
    fn refuse_walk_in_into_booking(
        &mut self,
        twin: &Twin,
        event: &Event,
        session: &PianoSession,
        now_ms: u64,
    ) {
        let PianoSession::Start { minutes, .. } = session else {
            return;
        };
        let walk_in = event.body.get("source").and_then(Value::as_str) == Some("walk_in");
        let Some(bookings) = self.bookings.as_ref().filter(|_| walk_in) else {
            return;
        };
        match bookings.walk_in_conflict(&twin.id, *minutes) {
            Ok(false) => {}
            Ok(true) => {
                let command = NewCommand {
                    device: twin.id.clone(),
                    op: "deny".into(),
                    args: json!({"reason": "booked", "request": event.id}),
                    expires_at: expires_in(now_ms, self.answer_ttl),
                    origin: CommandOrigin::Schedule,
                };
                // The piano just spoke: it is connected.
                self.commands.issue(command, true, now_ms);
                tracing::info!(device = %twin.id, "walk-in refused: the piano is booked");
            }
            Err(error) => tracing::error!(%error, "booking lookup for a walk-in failed"),
        }
    }

    fn store_hub_event(&mut self, twin: &Twin, event_type: &str, body: Value, now_ms: u64) {
        let Value::Object(body) = body else {
            return;
        };
        let event = StoredEvent::from_hub(twin, event_type, body, now_ms);
        match self.store.insert_event_once(&event) {
            Ok(_) => self.needs_flush = true,
            Err(error) => tracing::error!(%error, event_type, "storing a hub event failed"),
        }
    }
}
