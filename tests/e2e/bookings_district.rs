//! The simulated district books (issue 11, item 6): a hub with no rooms or
//! resources in its file and its schedule on a `fixed:` clock; `device-sim
//! run` sets up three centers through the API and runs them from Friday
//! 17:00 to Saturday midnight at speed 1800 — Friday's yoga, Saturday's
//! 10:30 rush at the study seats — while its residents book, wait, cancel,
//! come or do not. The run ends hours after every slot begun has passed its
//! grace, so the hub's booking counters and lists must agree with the
//! simulator's ground truth exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use device_sim::stats::BookingDay;
use device_sim::GroundTruth;
use serde_json::Value;
use tests::*;

const START: &str = "2026-11-27T17:00:00+08:00";

/// `yizhan_bookings_total` of `center` with `outcome`, over every kind.
fn outcome(metrics: &str, center: &str, outcome: &str) -> u64 {
    let of_center: String = metrics
        .lines()
        .filter(|line| line.contains(&format!("center=\"{center}\"")))
        .collect::<Vec<_>>()
        .join("\n");
    sum_metric(
        &of_center,
        "yizhan_bookings_total",
        &format!("outcome=\"{outcome}\""),
    ) as u64
}

/// The statuses of `center`'s bookings with slots on local `day`, as the
/// hub lists them.
async fn statuses(
    hub: &HubProcess,
    center: &str,
    day: NaiveDate,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let next = day + Days::new(1);
    let list = hub
        .get_json(&format!(
            "/api/v1/bookings?center={center}&from={day}&to={next}&limit=10000"
        ))
        .await?;
    let mut counts = BTreeMap::new();
    for booking in list["bookings"].as_array().into_iter().flatten() {
        assert_eq!(booking["center"], center, "the list keeps to its center");
        let status = booking["status"].as_str().unwrap_or("?").to_owned();
        *counts.entry(status).or_default() += 1;
    }
    Ok(counts)
}

/// The statuses a day's bookings must have by the end, from what the
/// residents did: every place booked or promoted is checked in, released
/// (no-show), cancelled, or — its slot still to come — booked; every
/// waitlist place was taken, left, or still waits.
fn expected_statuses(b: &BookingDay) -> BTreeMap<String, u64> {
    let still_booked =
        b.booked + b.promoted - b.cancelled - b.late_cancels - b.checked_in - b.no_shows;
    let still_waiting = b.waitlisted - b.promoted - b.left_waitlist;
    [
        ("booked", still_booked),
        ("checked_in", b.checked_in),
        ("no_show", b.no_shows),
        ("cancelled", b.cancelled + b.late_cancels + b.left_waitlist),
        ("waitlisted", still_waiting),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(status, n)| (status.to_owned(), n))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_booking_metrics_and_lists_match_the_residents_ground_truth() -> anyhow::Result<()>
{
    let _heavy = heavy();
    let hub = HubProcess::start(HubOptions {
        extra_config: format!(
            "{SIMULATED_CLOCKS}[schedule]\nclock = \"fixed:{START}\"\ntick_ms = 20\n"
        ),
        ..HubOptions::default()
    })
    .await?;
    let args = format!(
        "--centers 3 --speed 1800 --seed 42 --start {START} --sim-duration 31h --telemetry-interval 200ms"
    );
    let run = run_device_sim(&hub, &args, Duration::from_secs(240)).await?;
    let truth: GroundTruth = serde_json::from_value(run.truth)?;
    eprintln!("{}", run.stdout);

    // The gyms' rooms came through the API: their gates open.
    let totals = &truth.totals;
    assert!(totals.access_opened > 0, "{totals:?}");
    assert_eq!(totals.access_denied, 0, "{totals:?}");

    let metrics = hub.metrics().await?;
    let booking_totals = truth.booking_totals();
    assert_eq!(booking_totals.len(), 3, "three centers booked");
    let mut all = BookingDay::default();
    for (center, b) in &booking_totals {
        all += b;
        let pairs = [
            ("booked", b.booked),
            ("full", b.full),
            ("waitlisted", b.waitlisted),
            ("promoted", b.promoted),
            ("cancelled", b.cancelled),
            ("late_cancel", b.late_cancels),
            ("checked_in", b.checked_in),
            ("no_show", b.no_shows),
            ("refused", b.refused),
        ];
        for (name, truth) in pairs {
            let hub = outcome(&metrics, center, name);
            eprintln!("{center} {name:<12} truth {truth:>5}  hub {hub:>5}");
            assert_eq!(
                hub, truth,
                "{center}: yizhan_bookings_total{{outcome=\"{name}\"}}"
            );
        }
        let waiting = b.waitlisted - b.promoted - b.left_waitlist;
        let gauge = sum_metric(
            &metrics,
            "yizhan_booking_waitlist",
            &format!("center=\"{center}\""),
        );
        assert_eq!(gauge as u64, waiting, "{center}: yizhan_booking_waitlist");
    }
    assert_eq!(all.unexpected, 0, "every answer was one the plan expected");
    assert_eq!(all.refused, all.ineligible, "only the age rule refused");
    for (name, n) in [
        ("booked", all.booked),
        ("full", all.full),
        ("waitlisted", all.waitlisted),
        ("left_waitlist", all.left_waitlist),
        ("cancelled", all.cancelled),
        ("late", all.late_cancels),
        ("checked_in", all.checked_in),
        ("no_show", all.no_shows),
        ("refused", all.refused),
    ] {
        assert!(n > 0, "the run exercised {name}: {all:?}");
    }

    for (center, days) in &truth.bookings {
        for (day, b) in days {
            let listed = statuses(&hub, center, *day).await?;
            assert_eq!(listed, expected_statuses(b), "{center} {day}: {b:?}");
        }
    }
    let later = hub
        .get_json("/api/v1/bookings?center=center01&from=2026-12-01&to=2026-12-02")
        .await?;
    assert_eq!(
        later["count"],
        Value::from(0),
        "no bookings beyond the plan"
    );
    Ok(())
}
