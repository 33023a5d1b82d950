//! How a checked message changes the district's view, applied to a store
//! batch: exactly once by id (a resend is `Duplicate`), an older write of
//! a booking or an older presence of a device than the one kept is
//! `Stale` (its id is recorded, nothing else moves). Per center and local
//! day: visits (the highest total reported: a hub sends a day's running
//! total), events, alarms and acknowledgements, bookings by latest status
//! and their writes; per hub and per center their status; the alarms; the
//! hubs' outcomes and refusals of the district's commands.

use chrono::NaiveDate;
use protocol::calendar::Calendar;
use protocol::upstream::{
    BookingMessage, CommandOutcomeMessage, CommandRefusedMessage, EventMessage, TwinMessage,
};

use crate::message::{Body, Message};
use crate::records::{
    AlarmRecord, BookingState, CommandOutcome, CommandRefusal, CommandState, DayTally, Status,
    TwinState, MAX_REFUSALS,
};
use crate::store::{
    booking_key, center_key, command_key, day_key, hub_key, twin_key, Batch, StoreError,
};

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    /// Its id was applied before.
    Duplicate,
    /// A newer fact of the same booking or device was applied before.
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
        }
    }
}

/// What `apply` needs besides the batch.
pub struct Context {
    pub calendar: Calendar,
    /// District clock, unix ms.
    pub now: u64,
}

/// A hub or center seen for the first time, for the gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NewNames {
    pub hubs: u64,
    pub centers: u64,
}

pub fn apply(
    message: &Message,
    context: &Context,
    batch: &mut Batch<'_>,
    new: &mut NewNames,
) -> Result<Outcome, StoreError> {
    if batch.seen(&message.id)? {
        return Ok(Outcome::Duplicate);
    }
    batch.mark_seen(&message.id, context.now);
    let (outcome, presence) = match &message.body {
        Body::Event { alarm, event } => (on_event(message, *alarm, event, context, batch)?, None),
        Body::Booking(booking) => (on_booking(booking, context, batch)?, None),
        Body::Visits { day, visits, .. } => {
            on_visits(&message.center, *day, *visits, batch)?;
            (Outcome::Applied, None)
        }
        Body::Twin(twin) => on_twin(twin, batch)?,
        Body::Telemetry { .. } => (Outcome::Applied, None),
        Body::Outcome(outcome) => (on_outcome(outcome, batch)?, None),
        Body::Refused(refused) => (on_refused(refused, batch)?, None),
    };
    if outcome == Outcome::Applied {
        note_status(message, context, presence, batch, new)?;
    }
    Ok(outcome)
}

fn day_of(batch: &Batch<'_>, center: &str, day: NaiveDate) -> Result<DayTally, StoreError> {
    Ok(batch.get_json(&day_key(center, day))?.unwrap_or_default())
}

fn on_event(
    message: &Message,
    alarm: bool,
    event: &EventMessage,
    context: &Context,
    batch: &mut Batch<'_>,
) -> Result<Outcome, StoreError> {
    let day = context.calendar.day(event.received_at);
    let mut tally = day_of(batch, &message.center, day)?;
    let event_type = event.event.event_type.as_str();
    match (alarm, event_type) {
        (false, _) => tally.events += 1,
        (true, "alarm_ack") => tally.alarm_acks += 1,
        (true, _) => tally.alarms += 1,
    }
    batch.put_json(day_key(&message.center, day), &tally);
    if alarm {
        batch.add_alarm(&AlarmRecord {
            id: message.id.clone(),
            hub: message.hub.clone(),
            center: message.center.clone(),
            device: event.device.clone(),
            kind: event.kind.clone(),
            alarm_type: event_type.to_string(),
            at: event.received_at,
            event: serde_json::to_value(&event.event).unwrap_or_default(),
        })?;
    }
    Ok(Outcome::Applied)
}

fn on_booking(
    booking: &BookingMessage,
    context: &Context,
    batch: &mut Batch<'_>,
) -> Result<Outcome, StoreError> {
    let key = booking_key(&booking.hub, &booking.booking);
    let day = context.calendar.day(booking.slot_start);
    let mut tally = day_of(batch, &booking.center, day)?;
    tally.booking_writes += 1;
    let previous: Option<BookingState> = batch.get_json(&key)?;
    let stale = previous.as_ref().is_some_and(|p| p.rev >= booking.rev);
    if !stale {
        if let Some(previous) = &previous {
            uncount(batch, previous, &booking.center, day, &mut tally)?;
        }
        *tally.bookings.entry(booking.status.clone()).or_default() += 1;
        let state = BookingState {
            center: booking.center.clone(),
            day: day.to_string(),
            rev: booking.rev,
            status: booking.status.clone(),
        };
        batch.put_json(key, &state);
    }
    batch.put_json(day_key(&booking.center, day), &tally);
    Ok(if stale {
        Outcome::Stale
    } else {
        Outcome::Applied
    })
}

/// Takes a booking's previous status off the day it was counted on
/// (`tally` when that is the same day).
fn uncount(
    batch: &mut Batch<'_>,
    previous: &BookingState,
    center: &str,
    day: NaiveDate,
    tally: &mut DayTally,
) -> Result<(), StoreError> {
    let previous_day = NaiveDate::parse_from_str(&previous.day, "%Y-%m-%d").unwrap_or(day);
    let same_day = previous.center == center && previous_day == day;
    let mut other = match same_day {
        true => None,
        false => Some(day_of(batch, &previous.center, previous_day)?),
    };
    let counted = other.as_mut().unwrap_or(tally);
    if let Some(n) = counted.bookings.get_mut(&previous.status) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counted.bookings.remove(&previous.status);
        }
    }
    if let Some(other) = other {
        batch.put_json(day_key(&previous.center, previous_day), &other);
    }
    Ok(())
}

fn on_visits(
    center: &str,
    day: NaiveDate,
    visits: u64,
    batch: &mut Batch<'_>,
) -> Result<(), StoreError> {
    let mut tally = day_of(batch, center, day)?;
    tally.visits = tally.visits.max(visits);
    batch.put_json(day_key(center, day), &tally);
    Ok(())
}

/// A hub's outcome of a command: the command's status from now on. A
/// command the district holds no record of (another district's, or one
/// whose record was lost) gets one from the outcome.
fn on_outcome(
    outcome: &CommandOutcomeMessage,
    batch: &mut Batch<'_>,
) -> Result<Outcome, StoreError> {
    let key = command_key(&outcome.command);
    let mut command = batch
        .get_json::<CommandState>(&key)?
        .unwrap_or_else(|| CommandState {
            id: outcome.command.clone(),
            center: outcome.center.clone(),
            device: outcome.device.clone(),
            op: outcome.op.clone(),
            args: serde_json::Value::Null,
            issued_at: 0,
            expires_at: 0,
            key: String::new(),
            status: String::new(),
            outcome: None,
            refusals: Vec::new(),
        });
    command.status = outcome.status.clone();
    command.outcome = Some(CommandOutcome {
        hub: outcome.hub.clone(),
        status: outcome.status.clone(),
        error: outcome.error.clone(),
        attempts: outcome.attempts,
        at: outcome.at,
    });
    batch.put_json(key, &command);
    Ok(Outcome::Applied)
}

/// The statuses a refusal replaces: the hub has not answered yet.
const UNANSWERED: [&str; 3] = ["publishing", "sent", "unconfirmed"];

/// A hub refused a message naming one of the district's commands: noted
/// on it (the first `MAX_REFUSALS`); it is `refused` unless the hub had
/// already answered it (a replay of a command that ran stays `acked`).
fn on_refused(
    refused: &CommandRefusedMessage,
    batch: &mut Batch<'_>,
) -> Result<Outcome, StoreError> {
    let Some(id) = &refused.command else {
        return Ok(Outcome::Applied);
    };
    let key = command_key(id);
    let Some(mut command) = batch.get_json::<CommandState>(&key)? else {
        return Ok(Outcome::Applied);
    };
    if command.refusals.len() < MAX_REFUSALS {
        command.refusals.push(CommandRefusal {
            hub: refused.hub.clone(),
            reason: refused.reason.clone(),
            at: refused.at,
        });
    }
    if UNANSWERED.contains(&command.status.as_str()) {
        command.status = "refused".into();
    }
    batch.put_json(key, &command);
    Ok(Outcome::Applied)
}

/// How a twin change moved its device: newly known, and online before
/// and after.
#[derive(Debug, Clone, Copy)]
struct Presence {
    known_before: bool,
    online_before: bool,
    online: bool,
}

fn on_twin(
    twin: &TwinMessage,
    batch: &mut Batch<'_>,
) -> Result<(Outcome, Option<Presence>), StoreError> {
    let key = twin_key(&twin.hub, &twin.device);
    let previous: Option<TwinState> = batch.get_json(&key)?;
    if previous.as_ref().is_some_and(|p| p.at > twin.at) {
        return Ok((Outcome::Stale, None));
    }
    let presence = Presence {
        known_before: previous.is_some(),
        online_before: previous.as_ref().is_some_and(|p| p.online),
        online: twin.online,
    };
    let state = TwinState {
        center: twin.center.clone(),
        online: twin.online,
        at: twin.at,
    };
    batch.put_json(key, &state);
    Ok((Outcome::Applied, Some(presence)))
}

/// The hub's and the center's status after an applied message.
fn note_status(
    message: &Message,
    context: &Context,
    presence: Option<Presence>,
    batch: &mut Batch<'_>,
    new: &mut NewNames,
) -> Result<(), StoreError> {
    for (key, peer, is_hub) in [
        (hub_key(&message.hub), &message.center, true),
        (center_key(&message.center), &message.hub, false),
    ] {
        let previous: Option<Status> = batch.get_json(&key)?;
        if previous.is_none() {
            match is_hub {
                true => new.hubs += 1,
                false => new.centers += 1,
            }
        }
        let mut status = previous.unwrap_or(Status {
            first_received_at: context.now,
            ..Status::default()
        });
        status.peers.insert(peer.clone());
        status.last_received_at = context.now;
        status.last_message_at = status.last_message_at.max(message.at());
        *status
            .messages
            .entry(message.class.as_str().to_string())
            .or_default() += 1;
        if let Some(p) = presence {
            status.devices += u64::from(!p.known_before);
            status.online =
                (status.online + u64::from(p.online)).saturating_sub(u64::from(p.online_before));
        }
        batch.put_json(key, &status);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
