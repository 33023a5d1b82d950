//! The rules as tables: messages in, the store's view out.

use serde_json::{json, Value};

use super::*;
use crate::message::{decode, Decoded, Incoming};
use crate::store::Store;

/// 2026-11-28 10:00 in Shanghai.
const MORNING: u64 = 1_795_831_200_000;
const DAY_MS: u64 = 86_400_000;

fn message(topic: &str, payload: Value) -> Message {
    let incoming = Incoming {
        topic: topic.into(),
        payload: serde_json::to_vec(&payload).unwrap(),
    };
    match decode(&incoming) {
        Decoded::Message(message) => *message,
        other => panic!("{topic}: {other:?}"),
    }
}

fn event(id: &str, alarm_type: Option<&str>, at: u64) -> Message {
    let what = if alarm_type.is_some() {
        "alarm"
    } else {
        "event"
    };
    message(
        &format!("yz/v1/c1/r1/{what}"),
        json!({"id": id, "hub": "h1", "center": "c1", "device": "r1", "kind": "therapy_robot",
               "received_at": at,
               "event": {"id": id, "ts": at, "seq": 1, "type": alarm_type.unwrap_or("session_start")}}),
    )
}

fn booking(booking: &str, rev: u64, status: &str, slot_start: u64) -> Message {
    message(
        "yz/v1/c1/booking",
        json!({"id": format!("h1/bk/{booking}/{rev}"), "hub": "h1", "center": "c1",
               "booking": booking, "rev": rev, "resource": "yoga", "kind": "class",
               "slot_start": slot_start, "slot_end": slot_start + 3_600_000, "group": "adult",
               "status": status, "at": MORNING}),
    )
}

fn visits(day: &str, visits: u64) -> Message {
    message(
        "yz/v1/c1/visits",
        json!({"id": format!("h1/vi/c1/{day}/{visits}"), "hub": "h1", "center": "c1",
               "day": day, "visits": visits, "at": MORNING}),
    )
}

fn twin(device: &str, online: bool, at: u64) -> Message {
    let change = if online { "online" } else { "offline" };
    message(
        &format!("yz/v1/c1/{device}/twin"),
        json!({"id": format!("h1/tw/{device}/{at}/{change}"), "hub": "h1", "center": "c1",
               "device": device, "kind": "piano", "room": "music", "change": change,
               "online": online, "at": at}),
    )
}

/// Applies `messages` in one batch each, in order; their outcomes.
fn run(store: &Store, messages: &[Message]) -> Vec<&'static str> {
    let context = Context {
        calendar: Calendar::default(),
        now: MORNING,
    };
    let mut new = NewNames::default();
    messages
        .iter()
        .map(|m| {
            let mut batch = store.batch();
            let outcome = apply(m, &context, &mut batch, &mut new).unwrap();
            store.commit(batch).unwrap();
            outcome.as_str()
        })
        .collect()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn tally(store: &Store, on: &str) -> DayTally {
    let on = day(on);
    store
        .days(Some("c1"), on, on)
        .unwrap()
        .get("c1")
        .and_then(|days| days.get(&on).cloned())
        .unwrap_or_default()
}

#[test]
fn a_resent_message_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let trip = event("h1/ev/r1/t1", Some("interlock_trip"), MORNING);
    let outcomes = run(
        &store,
        &[trip.clone(), event("h1/ev/r1/e1", None, MORNING), trip],
    );
    assert_eq!(outcomes, ["applied", "applied", "duplicate"]);
    let today = tally(&store, "2026-11-28");
    assert_eq!((today.alarms, today.events, today.alarm_acks), (1, 1, 0));
    assert_eq!(store.alarms(0, u64::MAX, None, 10).unwrap().len(), 1);
    run(&store, &[event("h1/ev/r1/a1", Some("alarm_ack"), MORNING)]);
    assert_eq!(tally(&store, "2026-11-28").alarm_acks, 1);
}

#[test]
fn events_count_on_the_local_day_they_were_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 23:59 and 00:01 Shanghai time.
    let before_midnight = MORNING + 14 * 3_600_000 - 60_000;
    run(
        &store,
        &[
            event("a", None, before_midnight),
            event("b", None, before_midnight + 120_000),
        ],
    );
    assert_eq!(tally(&store, "2026-11-28").events, 1);
    assert_eq!(tally(&store, "2026-11-29").events, 1);
}

#[test]
fn visits_keep_the_highest_total_of_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let outcomes = run(
        &store,
        &[
            visits("2026-11-28", 10),
            visits("2026-11-28", 25),
            visits("2026-11-28", 17),
            visits("2026-11-29", 3),
        ],
    );
    assert_eq!(outcomes, ["applied"; 4]);
    assert_eq!(tally(&store, "2026-11-28").visits, 25);
    assert_eq!(tally(&store, "2026-11-29").visits, 3);
}

#[test]
fn bookings_count_by_their_latest_status_and_every_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let evening = MORNING + 9 * 3_600_000;
    let outcomes = run(
        &store,
        &[
            booking("b1", 1, "booked", evening),
            booking("b2", 1, "booked", evening),
            booking("b1", 2, "checked_in", evening),
            booking("b2", 3, "cancelled", evening),
            booking("b2", 2, "waitlisted", evening),
            booking("b2", 3, "cancelled", evening),
        ],
    );
    assert_eq!(
        outcomes,
        [
            "applied",
            "applied",
            "applied",
            "applied",
            "stale",
            "duplicate"
        ]
    );
    let today = tally(&store, "2026-11-28");
    assert_eq!(today.booking_writes, 5);
    let statuses: Vec<(&str, u64)> = today
        .bookings
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    assert_eq!(statuses, [("cancelled", 1), ("checked_in", 1)]);
}

#[test]
fn a_booking_moved_to_another_day_leaves_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    run(
        &store,
        &[
            booking("b1", 1, "booked", MORNING),
            booking("b1", 2, "booked", MORNING + DAY_MS),
        ],
    );
    assert!(tally(&store, "2026-11-28").bookings.is_empty());
    assert_eq!(tally(&store, "2026-11-29").bookings["booked"], 1);
}

#[test]
fn a_hub_status_counts_devices_and_who_is_online() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let outcomes = run(
        &store,
        &[
            twin("p1", true, 10),
            twin("p2", true, 11),
            twin("p1", false, 20),
            twin("p1", true, 15),
            twin("p2", true, 30),
        ],
    );
    assert_eq!(
        outcomes,
        ["applied", "applied", "applied", "stale", "applied"]
    );
    let hubs = store.statuses(true).unwrap();
    let hub = &hubs["h1"];
    assert_eq!((hub.devices, hub.online), (2, 1));
    assert_eq!(hub.messages["twin"], 4);
    assert_eq!(hub.last_message_at, 30);
    assert!(hub.peers.contains("c1"));
    let centers = store.statuses(false).unwrap();
    assert_eq!((centers["c1"].devices, centers["c1"].online), (2, 1));
    assert!(centers["c1"].peers.contains("h1"));
}

fn outcome(command: &str, status: &str) -> Message {
    message(
        "yz/v1/c1/p1/cmd/outcome",
        json!({"id": format!("h1/co/p1/{command}"), "hub": "h1", "center": "c1",
               "device": "p1", "command": command, "op": "unlock", "status": status,
               "attempts": 1, "at": MORNING}),
    )
}

fn refused(n: u64, command: &str, reason: &str) -> Message {
    message(
        "yz/v1/c1/cmd_refused",
        json!({"id": format!("h1/cr/{MORNING}/{n}"), "hub": "h1", "center": "c1",
               "device": "p1", "command": command, "reason": reason, "at": MORNING}),
    )
}

fn sent(store: &Store, id: &str) {
    let command = crate::records::CommandState {
        id: id.into(),
        center: "c1".into(),
        device: "p1".into(),
        op: "unlock".into(),
        args: json!({}),
        issued_at: MORNING,
        expires_at: MORNING + 60_000,
        key: "k".into(),
        status: "sent".into(),
        outcome: None,
        refusals: Vec::new(),
    };
    assert!(store.insert_command(&command).unwrap());
}

#[test]
fn a_hubs_outcome_settles_a_command_and_a_later_refusal_of_its_id_is_only_noted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (ran, refused_id, unknown) = (
        "0000000000000000a1",
        "0000000000000000b2",
        "0000000000000000c3",
    );
    sent(&store, ran);
    sent(&store, refused_id);
    let outcomes = run(
        &store,
        &[
            outcome(ran, "acked"),
            outcome(ran, "acked"),
            refused(1, ran, "replayed"),
            refused(2, refused_id, "forged"),
            outcome(unknown, "expired"),
        ],
    );
    assert_eq!(
        outcomes,
        ["applied", "duplicate", "applied", "applied", "applied"]
    );
    let ran = store.command(ran).unwrap().unwrap();
    assert_eq!(
        ran.status, "acked",
        "a replay refused later changes nothing"
    );
    assert_eq!(ran.outcome.unwrap().hub, "h1");
    assert_eq!(ran.refusals.len(), 1);
    assert_eq!(ran.refusals[0].reason, "replayed");
    let refused_command = store.command(refused_id).unwrap().unwrap();
    assert_eq!(refused_command.status, "refused");
    let unknown = store.command(unknown).unwrap().unwrap();
    assert_eq!((unknown.status.as_str(), unknown.issued_at), ("expired", 0));
    assert!(
        !store
            .advance_command(refused_id, "publishing", "sent")
            .unwrap(),
        "the API never overwrites the hub's word"
    );
}
