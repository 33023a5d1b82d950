//! The booking rules as the desk applies them, in this process on a
//! temporary store and a fixed clock, without HTTP: quotas, ages, the
//! horizon, fair shares held then released, strikes and late cancels.
//! (Moved from the end-to-end tests, which keep what needs a process:
//! races, restarts, devices, webhooks.) Refusals stand for the API's
//! answers: `Refused(Rule)` is its 422 naming the rule, `Refused(Full)` its
//! 409 with the offer, `Ok` its 201.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use super::desk::Desk;
use super::*;
use crate::records::{Booker, Group, Status};
use chrono::NaiveDate;

/// The end-to-end tests' hub: resources of every layout and rule, a clock
/// standing at Monday 2027-01-04 08:00 Shanghai.
const CONFIG: &str = include_str!("../../../tests/fixtures/schedule.toml");

/// A desk and the read side over one temporary store.
struct Harness {
    desk: Desk,
    bookings: Bookings,
    handed_over: Arc<Mutex<Vec<ToIngest>>>,
    _jobs: Receiver<Job>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let settings = Settings::parse(toml::from_str(CONFIG).unwrap()).unwrap();
    let resources = Arc::new(Catalog::default());
    for resource in &settings.resources {
        resources.put(resource.clone());
    }
    let handed_over = Arc::new(Mutex::new(Vec::new()));
    let sink = handed_over.clone();
    let desk = Desk::new(
        store.clone(),
        Metrics::new(),
        resources.clone(),
        &settings,
        Box::new(move |message| sink.lock().unwrap().push(message)),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (jobs, rx) = std::sync::mpsc::channel();
    let bookings = Bookings {
        resources,
        calendar: settings.calendar,
        clock: settings.clock.clone(),
        roster: settings.roster.clone(),
        store,
        jobs,
        grace_ms: settings.schedule.grace_minutes * MINUTE_MS,
        walk_in_minutes: settings.schedule.walk_in_minutes,
        lookahead_ms: settings.schedule.outage_lookahead_minutes * MINUTE_MS,
    };
    Harness {
        desk,
        bookings,
        handed_over,
        _jobs: rx,
        _dir: dir,
    }
}

impl Harness {
    /// Unix ms of `at` (RFC 3339, or `hh:mm` on Monday 2027-01-04).
    fn ms(&self, at: &str) -> u64 {
        let text = if at.len() == 5 {
            format!("2027-01-04T{at}:00+08:00")
        } else {
            at.to_string()
        };
        protocol::calendar::parse_rfc3339(&text).unwrap()
    }

    fn book_for_child(
        &mut self,
        resource: &str,
        at: &str,
        resident: &str,
        group: Group,
        child_birthdate: Option<NaiveDate>,
    ) -> Result<Booking, DeskError> {
        let request = BookRequest {
            resource: resource.into(),
            slot_start: self.ms(at),
            who: Booker {
                resident: resident.into(),
                group,
                child_birthdate,
            },
        };
        let now = self.desk.clock.now_ms();
        self.desk.book(request, now)
    }

    fn book(
        &mut self,
        resource: &str,
        at: &str,
        resident: &str,
        group: Group,
    ) -> Result<Booking, DeskError> {
        self.book_for_child(resource, at, resident, group, None)
    }

    fn set_clock(&self, at: &str) {
        self.desk.clock.advance_to(self.ms(at)).unwrap();
    }

    /// `yizhan_bookings_total{outcome}` over every kind of resource.
    fn outcomes(&self, outcome: &str) -> u64 {
        let bookings = &self.desk.metrics.bookings;
        ["piano", "class", "childcare", "seat"]
            .iter()
            .map(|kind| bookings.with_label_values(&["c1", kind, outcome]).get())
            .sum()
    }
}

/// The rule a refusal names, "full" for a full slot, "ok" for a booking.
fn rule_of(result: &Result<Booking, DeskError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(DeskError::Refused(Refusal::Rule { rule, .. }, _)) => rule,
        Err(DeskError::Refused(Refusal::Full { .. }, _)) => "full",
        Err(_) => "other",
    }
}

fn reason_of(result: &Result<Booking, DeskError>) -> String {
    match result {
        Err(DeskError::Refused(Refusal::Rule { reason, .. } | Refusal::Full { reason }, _)) => {
            reason.clone()
        }
        other => format!("{other:?}"),
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn age_and_quota_refusals_name_the_rule() {
    let mut h = harness();
    let child = Group::Child;
    let young = h.book_for_child("childcare", "08:30", "mum", child, Some(date(2026, 1, 1)));
    assert_eq!(rule_of(&young), "child_age", "{young:?}");
    assert!(reason_of(&young).contains("12 months"), "{young:?}");
    let ok = h.book_for_child("childcare", "08:30", "mum", child, Some(date(2025, 1, 4)));
    assert_eq!(rule_of(&ok), "ok", "{ok:?}");
    let again = h.book_for_child("childcare", "14:00", "mum", child, Some(date(2025, 1, 4)));
    assert_eq!(rule_of(&again), "quota_per_day", "{again:?}");
    let no_slot = h.book_for_child("childcare", "09:00", "mum", child, Some(date(2025, 1, 4)));
    assert_eq!(rule_of(&no_slot), "slot", "{no_slot:?}");
    let far = h.book("yoga", "2027-01-13T19:00:00+08:00", "far", Group::Adult);
    assert_eq!(rule_of(&far), "horizon", "{far:?}");
    assert_eq!(h.outcomes("refused"), 3);
}

#[test]
fn held_shares_keep_places_for_seniors_and_children_until_release() {
    let mut h = harness();
    for i in 0..3 {
        let booked = h.book("seats", "12:00", &format!("adult{i}"), Group::Adult);
        assert_eq!(rule_of(&booked), "ok", "{booked:?}");
    }
    let refused = h.book("seats", "12:00", "adult3", Group::Adult);
    assert_eq!(
        rule_of(&refused),
        "full",
        "2 of 5 places are held: {refused:?}"
    );
    assert!(reason_of(&refused).contains("held"), "{refused:?}");
    let senior = h.book("seats", "12:00", "grandpa", Group::Senior);
    assert_eq!(
        rule_of(&senior),
        "ok",
        "a senior takes a held place: {senior:?}"
    );
    let seats = h.bookings.resources.get("seats").unwrap();
    let noon = h.ms("12:00");
    let slots = h
        .bookings
        .availability(&seats, noon, noon + 60_000)
        .unwrap();
    assert_eq!(slots[0].held.get("child"), Some(&1));
    assert_eq!(slots[0].free, 0);

    h.set_clock("10:30");
    let released = h.book("seats", "12:00", "adult3", Group::Adult);
    assert_eq!(
        rule_of(&released),
        "ok",
        "within 2 h of the start the held place opens to all: {released:?}"
    );
}

#[test]
fn three_no_shows_block_new_bookings_and_late_cancels_are_counted() {
    let mut h = harness();
    for hour in ["09:00", "10:00", "11:00"] {
        let booked = h.book("piano1", hour, "frank", Group::Adult);
        assert_eq!(rule_of(&booked), "ok", "{booked:?}");
    }
    let gus = h.book("piano1", "12:00", "gus", Group::Adult).unwrap();

    h.set_clock("11:30");
    let now = h.desk.clock.now_ms();
    let gus = h.desk.cancel(&gus.id, now).unwrap();
    assert_eq!(
        (gus.status, gus.late_cancel),
        (Status::Cancelled, true),
        "30 min before the start is late"
    );
    h.desk.tick().unwrap();
    assert_eq!(h.outcomes("no_show"), 3, "three no-shows");
    let blocked = h.book("piano1", "15:00", "frank", Group::Adult);
    assert_eq!(rule_of(&blocked), "strikes", "{blocked:?}");
    assert_eq!(h.outcomes("late_cancel"), 1);
}

#[test]
fn the_desk_hands_a_place_ending_to_ingest_before_its_lock() {
    let mut h = harness();
    let booked = h.book("piano1", "09:00", "ann", Group::Adult).unwrap();
    h.set_clock("09:00");
    h.desk.tick().unwrap();
    h.set_clock("09:30");
    let now = h.desk.clock.now_ms();
    h.desk.cancel(&booked.id, now).unwrap();
    let handed: Vec<String> = std::mem::take(&mut h.desk.to_ingest)
        .iter()
        .map(|message| match message {
            ToIngest::Command(record) => format!("{} {}", record.op, record.device),
            ToIngest::PlaceEnded { device } => format!("ended {device}"),
        })
        .collect();
    assert_eq!(handed, ["unlock piano1", "ended piano1", "lock piano1"]);
    assert!(
        h.handed_over.lock().unwrap().is_empty(),
        "only after the batch's fsync"
    );
}

#[test]
fn the_booking_gauges_follow_the_desk_and_match_a_count_from_the_store() {
    let mut h = harness();
    h.desk.count_gauges().unwrap();
    let gauges = |h: &Harness| {
        let metrics = &h.desk.metrics;
        (
            metrics
                .booking_waitlist
                .with_label_values(&["c1", "piano"])
                .get(),
            metrics
                .booking_day_seat_seconds
                .with_label_values(&["c1", "piano", "booked"])
                .get(),
        )
    };
    let alice = h.book("piano1", "09:00", "alice", Group::Adult).unwrap();
    assert_eq!(gauges(&h), (0, 3_600.0));
    let Err(DeskError::Refused(_, Some(offer))) = h.book("piano1", "09:00", "bob", Group::Youth)
    else {
        panic!("the slot is full: an offer");
    };
    let now = h.desk.clock.now_ms();
    h.desk.waitlist(&offer.id, now).unwrap();
    assert_eq!(gauges(&h), (1, 3_600.0));
    h.desk.cancel(&alice.id, now).unwrap();
    assert_eq!(gauges(&h), (0, 3_600.0), "bob promoted into alice's place");
    h.book("piano1", "2027-01-05T09:00:00+08:00", "cy", Group::Adult)
        .unwrap();
    assert_eq!(gauges(&h), (0, 3_600.0), "tomorrow is not today");
    let kept = gauges(&h);
    h.desk.count_gauges().unwrap();
    assert_eq!(gauges(&h), kept, "counted from the store");
    let unstaffed = h
        .desk
        .metrics
        .booking_slots_unstaffed
        .with_label_values(&["c1", "table"])
        .get();
    assert_eq!(
        unstaffed, 2,
        "Monday 10:00 and 11:00 at the ping-pong table"
    );
}
