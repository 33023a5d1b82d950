//! The behaviours of every kind, driven as the device loop drives them.

use super::robot::SETPOINT_C;
use super::*;
use crate::crowd::Profile;
use crate::crowd::{member_credential, GymVisit};
use crate::simtime::Calendar;
use chrono::NaiveTime;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

fn world(overheat_chance: f64) -> World {
    World {
        crowd: Arc::new(CenterCrowd::new(
            5,
            0,
            Calendar::default(),
            Profile::default(),
        )),
        gates: 2,
        seed: 1,
        overheat_chance,
        answer_timeout_ms: 10 * MINUTE_MS,
        attendance: Arc::new(Attendance::default()),
    }
}

/// Saturday 2026-11-28 at `h`:`m`, Shanghai time.
fn saturday(h: u32, m: u32) -> u64 {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    Calendar::default().at(day, NaiveTime::from_hms_opt(h, m, 0).unwrap())
}

fn device(kind: DeviceKind, room: &str, number: usize) -> Behaviour {
    Behaviour::new(&DeviceSpec {
        id: "d".into(),
        center: "center01".into(),
        room: room.into(),
        kind,
        number,
        seed: 0,
    })
}

fn cmd(op: &str, expires_at: u64) -> Command {
    Command {
        id: format!("cmd-{op}"),
        op: op.to_owned(),
        args: json!({}),
        expires_at,
    }
}

/// Runs `b` from `from` to `to` in `step` windows; returns its events.
fn run(
    b: &mut Behaviour,
    w: &World,
    (from, to): (u64, u64),
    step: u64,
    c: &mut Counters,
) -> Vec<EventDraft> {
    let mut rng = StdRng::seed_from_u64(3);
    (from..to)
        .step_by(step as usize)
        .flat_map(|t| b.step(w, "center01", (t, (t + step).min(to)), &mut rng, c))
        .collect()
}

/// The telemetry field `name` (panics when the kind does not report it).
fn field(b: &Behaviour, name: &str) -> FieldValue {
    b.telemetry_fields()
        .into_iter()
        .find_map(|(n, v)| (n == name).then_some(v))
        .unwrap_or_else(|| panic!("{} reports no `{name}`", b.kind()))
}

fn number(b: &Behaviour, name: &str) -> f64 {
    match field(b, name) {
        FieldValue::Number(n) => n,
        other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn expired_commands_are_refused_and_change_nothing() {
    let mut piano = device(DeviceKind::Piano, "music", 1);
    let mut c = Counters::default();
    let out = piano.apply_command(&cmd("unlock", 1_000), (1_001, 0), &world(0.0), &mut c);
    assert_eq!(out.ack.error.as_deref(), Some("expired"));
    assert!(!out.ack.ok && out.events.is_empty());
    assert_eq!(field(&piano, "session_active"), FieldValue::Bool(false));
    let at_expiry = piano.apply_command(&cmd("unlock", 1_000), (1_000, 0), &world(0.0), &mut c);
    assert!(
        at_expiry.ack.ok,
        "a command at its expiry instant is obeyed"
    );
}

#[test]
fn piano_unlock_starts_a_session_and_lock_or_deny_ends_it() {
    let mut piano = device(DeviceKind::Piano, "music", 1);
    let mut c = Counters::default();
    let out = piano.apply_command(&cmd("unlock", 10), (5, 77), &world(0.0), &mut c);
    assert_eq!(out.events[0].event_type, "session_start");
    assert_eq!(out.events[0].body["cmd"], json!("cmd-unlock"));
    assert_eq!(out.events[0].at_ms, 77, "stamped with simulated time");
    assert_eq!(c.sessions, 1);
    let again = piano.apply_command(&cmd("unlock", 10), (5, 78), &world(0.0), &mut c);
    assert!(again.ack.ok && again.events.is_empty(), "no second session");
    let out = piano.apply_command(&cmd("lock", 10), (5, 79), &world(0.0), &mut c);
    assert_eq!(out.events[0].event_type, "session_end");
    assert_eq!(field(&piano, "session_active"), FieldValue::Bool(false));

    piano.apply_command(&cmd("unlock", 10), (5, 80), &world(0.0), &mut c);
    let denied = piano.apply_command(&cmd("deny", 10), (5, 81), &world(0.0), &mut c);
    assert_eq!(denied.events[0].body["reason"], json!("denied"));
}

/// An `unlock` or `lock` for booking `booking`, the slot ending `until`.
fn booked(op: &str, booking: &str, until: u64) -> Command {
    Command {
        id: format!("cmd-{op}-{booking}"),
        op: op.to_owned(),
        args: json!({"booking": booking, "until": until}),
        expires_at: 10,
    }
}

fn types(events: &[EventDraft]) -> Vec<&str> {
    events.iter().map(|e| e.event_type).collect()
}

#[test]
fn a_booked_resident_who_comes_takes_the_piano_and_names_the_booking() {
    let w = world(0.0);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    w.attendance.expect("b1", "center01", day, true);
    w.attendance.expect("b2", "center01", day, false);
    let mut piano = device(DeviceKind::Piano, "music", 1);
    let mut c = Counters::default();
    let walk_in = piano.apply_command(&cmd("unlock", 10), (5, 10), &w, &mut c);
    assert_eq!(types(&walk_in.events), ["session_start"]);
    let away = piano.apply_command(&booked("unlock", "b2", 500), (5, 20), &w, &mut c);
    assert!(away.ack.ok && away.events.is_empty(), "nobody came for b2");
    let came = piano.apply_command(&booked("unlock", "b1", 500), (5, 30), &w, &mut c);
    assert_eq!(types(&came.events), ["session_end", "session_start"]);
    assert_eq!(came.events[0].body["reason"], json!("booked"));
    assert_eq!(came.events[1].body["booking"], json!("b1"));
    assert!(w.attendance.arrived("b1"));
    let again = piano.apply_command(&booked("unlock", "b1", 500), (5, 31), &w, &mut c);
    assert!(again.events.is_empty(), "checked in once");
    let other = piano.apply_command(&booked("lock", "b0", 0), (5, 40), &w, &mut c);
    assert!(
        other.events.is_empty(),
        "the previous slot's lock leaves b1 playing"
    );
    let lock = piano.apply_command(&booked("lock", "b1", 0), (5, 500), &w, &mut c);
    assert_eq!(types(&lock.events), ["session_end"]);
}

#[test]
fn a_booked_robot_slot_ends_its_walk_in_treats_the_resident_and_stays_free_after() {
    let w = world(0.0);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    w.attendance.expect("b1", "center01", day, true);
    w.attendance.expect("b2", "center01", day, false);
    let mut rng = StdRng::seed_from_u64(3);
    let mut c = Counters::default();
    let mut robot = device(DeviceKind::TherapyRobot, "therapy", 1);
    let mut t = saturday(8, 30);
    while c.sessions == 0 {
        robot.step(&w, "center01", (t, t + MINUTE_MS), &mut rng, &mut c);
        t += MINUTE_MS;
    }
    let until = t + 30 * MINUTE_MS;
    let came = robot.apply_command(&booked("unlock", "b1", until), (5, t), &w, &mut c);
    assert_eq!(types(&came.events), ["session_end", "session_start"]);
    assert_eq!(came.events[1].body["booking"], json!("b1"));
    let treated = run(&mut robot, &w, (t, until + 2 * HOUR_MS), MINUTE_MS, &mut c);
    assert_eq!(treated[0].event_type, "session_end");
    assert!(
        treated[0].at_ms <= t + 20 * MINUTE_MS,
        "well before the slot ends"
    );
    assert!(
        treated.iter().skip(1).all(|e| e.at_ms >= until),
        "no walk-in in the rest of the booked slot: {treated:?}"
    );

    let later = until + 2 * HOUR_MS;
    let away = robot.apply_command(
        &booked("unlock", "b2", later + HOUR_MS),
        (5, later),
        &w,
        &mut c,
    );
    assert!(away.events.iter().all(|e| e.event_type == "session_end"));
    assert_eq!(field(&robot, "session_active"), FieldValue::Bool(false));
    let quiet = run(&mut robot, &w, (later, later + HOUR_MS), MINUTE_MS, &mut c);
    assert!(quiet.is_empty(), "the no-show's slot stays free: {quiet:?}");
}

#[test]
fn unknown_ops_are_refused_per_kind() {
    for (kind, op) in [
        (DeviceKind::Piano, "open"),
        (DeviceKind::TherapyRobot, "open"),
        (DeviceKind::Gate, "stop"),
        (DeviceKind::Counter, "lock"),
    ] {
        let mut b = device(kind, "x", 1);
        let out = b.apply_command(&cmd(op, 10), (5, 5), &world(0.0), &mut Counters::default());
        assert_eq!(out.ack.error.as_deref(), Some("unknown op"), "{kind} {op}");
        assert!(out.events.is_empty());
    }
}

#[test]
fn walk_in_pianos_play_in_opening_hours_only() {
    let w = world(0.0);
    let mut piano = device(DeviceKind::Piano, "music", 1);
    let mut c = Counters::default();
    let night = run(
        &mut piano,
        &w,
        (saturday(0, 0), saturday(8, 0)),
        5 * MINUTE_MS,
        &mut c,
    );
    assert!(night.is_empty(), "closed at night: {night:?}");
    let day = run(
        &mut piano,
        &w,
        (saturday(8, 30), saturday(21, 30)),
        5 * MINUTE_MS,
        &mut c,
    );
    let types: Vec<_> = day.iter().map(|e| e.event_type).collect();
    assert!(types.len() >= 6, "a day sees several sessions: {types:?}");
    for pair in types.windows(2) {
        assert_ne!(pair[0], pair[1], "starts and ends alternate: {types:?}");
    }
    assert!(day.windows(2).all(|p| p[0].at_ms <= p[1].at_ms));
    assert!(number(&piano, "key_presses") > 0.0);
    assert_eq!(
        c.sessions as usize,
        types.iter().filter(|t| **t == "session_start").count()
    );
}

#[test]
fn a_robot_holds_its_setpoint_and_a_faulty_one_overheats_until_stopped() {
    let mut c = Counters::default();
    let mut robot = TherapyRobot::default();
    robot.start(0, 30 * MINUTE_MS, false);
    robot.drift_temperature(30.0);
    assert_eq!(robot.temp_c, SETPOINT_C);

    let w = world(1.0);
    let mut faulty = device(DeviceKind::TherapyRobot, "therapy", 1);
    let mut rng = StdRng::seed_from_u64(3);
    let mut t = saturday(8, 30);
    while c.sessions == 0 && t < saturday(21, 30) {
        faulty.step(&w, "center01", (t, t + MINUTE_MS), &mut rng, &mut c);
        t += MINUTE_MS;
    }
    assert_eq!(c.faults_injected, 1);
    let later = t + 40 * MINUTE_MS;
    let events = run(&mut faulty, &w, (t, later), MINUTE_MS, &mut c);
    assert!(events.is_empty(), "a faulty session runs on: {events:?}");
    assert!(number(&faulty, "temp_c") > 45.0, "and past the limit");
    let stopped = faulty.apply_command(&cmd("stop", 10), (5, later), &world(0.0), &mut c);
    assert_eq!(stopped.events[0].body["reason"], json!("stop"));
    assert_eq!(field(&faulty, "heating"), FieldValue::Bool(false));
    assert_eq!(c.stops_received, 1);
    run(
        &mut faulty,
        &w,
        (later, later + 30 * MINUTE_MS),
        MINUTE_MS,
        &mut c,
    );
    assert!(number(&faulty, "temp_c") < 45.0, "it cools once stopped");
}

#[test]
fn gates_ask_the_hub_and_follow_its_answers_in_order() {
    let w = world(0.0);
    let (from, to) = (saturday(0, 0), saturday(0, 0) + DAY_MS);
    let mine: Vec<GymVisit> = w
        .crowd
        .day(w.crowd.calendar.day(from))
        .gym
        .iter()
        .step_by(2)
        .copied()
        .collect();
    let mut gate = device(DeviceKind::Gate, "gym", 1);
    let mut c = Counters::default();
    let asked = gate.step(
        &w,
        "center01",
        (from, mine[2].arrive_ms + 1),
        &mut StdRng::seed_from_u64(1),
        &mut c,
    );
    assert_eq!(asked.len(), 3);
    assert!(asked.iter().all(|e| e.event_type == "access_request"));
    assert_eq!(
        asked[0].body["credential"],
        json!(member_credential(1, "center01", mine[0].member))
    );
    assert_eq!(c.access_requests, 3);

    let opened = gate.apply_command(
        &cmd("open", 10),
        (5, mine[0].arrive_ms + 1),
        &world(0.0),
        &mut c,
    );
    assert_eq!(opened.events[0].passage_direction(), Some("in"));
    assert_eq!(field(&gate, "door"), FieldValue::Text("open".into()));
    let denied = gate.apply_command(
        &cmd("deny", 10),
        (5, mine[1].arrive_ms + 1),
        &world(0.0),
        &mut c,
    );
    assert!(denied.events.is_empty());
    assert_eq!((c.access_opened, c.access_denied), (1, 1));

    // The third is never answered; the first member leaves later.
    let rest = gate.step(
        &w,
        "center01",
        (mine[2].arrive_ms + 1, to),
        &mut StdRng::seed_from_u64(1),
        &mut c,
    );
    let outs: Vec<_> = rest
        .iter()
        .filter(|e| e.passage_direction() == Some("out"))
        .collect();
    assert_eq!(outs.len(), 1);
    let let_out_from = mine[2].arrive_ms + 1;
    assert_eq!(outs[0].at_ms, mine[0].leave_ms.max(let_out_from));
    assert!(c.access_unanswered >= 1);
    assert_eq!(
        c.access_requests,
        mine.len() as u64,
        "every visit of this gate asked"
    );
}

#[test]
fn counters_report_their_door_exactly_across_windows() {
    let w = world(0.0);
    let from = saturday(0, 0);
    let crowd = w.crowd.day(w.crowd.calendar.day(from));
    for (room, log) in [
        ("entrance", &crowd.entrance),
        ("yoga", &crowd.rooms["yoga"]),
    ] {
        let mut counter = device(DeviceKind::Counter, room, 1);
        let mut entered = 0;
        let mut left = 0;
        for t in (from..from + DAY_MS).step_by(7 * MINUTE_MS as usize) {
            counter.step(
                &w,
                "center01",
                (t, (t + 7 * MINUTE_MS).min(from + DAY_MS)),
                &mut StdRng::seed_from_u64(1),
                &mut Counters::default(),
            );
            let flow = counter.commit_report();
            entered += flow.entered;
            left += flow.left;
        }
        assert_eq!(entered, log.ins.len() as u64, "{room}");
        assert_eq!(left, log.outs.len() as u64, "{room}");
        assert!(entered > 0);
        assert_eq!(
            counter.commit_report(),
            Flow::default(),
            "commit resets the deltas"
        );
    }
}
