//! Booking throughput and availability latency of a real hub process with
//! 100,000 existing bookings (issue 4), over HTTP on loopback:
//!
//! 1. **seed**: N bookings (default 100,000) spread evenly over the slots of
//!    one resource (capacity 100, 30-minute slots, 31 days), C requests in
//!    flight (default 64).
//! 2. **book**: per run, B more bookings (default 10,000) at C in flight;
//!    rate = 201s / wall time. Every answer must be 201.
//! 3. **availability**: per run, Q sequential queries (default 2,000) of
//!    one local day (48 slots, ~70–90 bookings each) at random days;
//!    client-observed latency, p50 and p99.
//!
//! Peer, measured in the same run: the naive durable write, one sled
//! transaction + fsync per booking, serially, in this process (no HTTP, no
//! rules) — what the desk's group commit is for. And, to split the cost,
//! the desk alone: the same bookings through `Bookings::book` in this
//! process (rules, group commit, no HTTP) on a store seeded alike.
//!
//! `cargo bench -p hub --bench schedule -- [seed] [book] [queries] [runs] [in_flight]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use hub::bookings::{BookRequest, Bookings};
use hub::records::{Booker, Booking, Group, Milestone, Slot};
use hub::settings::Settings as HubSettings;
use hub::store::Store;
use serde_json::json;
use tests::{HubOptions, HubProcess};

const CONFIG: &str = r#"
[schedule]
clock = "fixed:2027-01-01T00:00:00+08:00"

[[resources]]
id = "seats"
center = "c1"
kind = "seat"
room = "study"
capacity = 100
slot_minutes = 30
hours = "24h"
horizon_days = 31
price = 0.0
market_price = 10.0
"#;

/// 2027-01-01T00:00+08:00 and the slot length.
const START_MS: u64 = 1_798_732_800_000;
const SLOT_MS: u64 = 30 * 60_000;
/// Slots from the first one after the clock to the horizon (31 days).
const SLOTS: u64 = 31 * 48 - 1;

#[derive(Clone, Copy)]
struct Settings {
    seed: usize,
    book: usize,
    queries: usize,
    runs: usize,
    in_flight: usize,
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let settings = Settings {
        seed: *args.first().unwrap_or(&100_000),
        book: *args.get(1).unwrap_or(&10_000),
        queries: *args.get(2).unwrap_or(&2_000),
        runs: *args.get(3).unwrap_or(&3),
        in_flight: *args.get(4).unwrap_or(&64),
    };
    tokio::runtime::Runtime::new()?.block_on(bench(settings))
}

async fn bench(settings: Settings) -> Result<()> {
    let hub = Arc::new(
        HubProcess::start(HubOptions {
            extra_config: CONFIG.into(),
            ..HubOptions::default()
        })
        .await?,
    );
    let seed = book_many(&hub, 0, settings.seed, settings.in_flight).await?;
    println!(
        "seeded {} bookings in {:.1} s: {:.0}/s",
        settings.seed,
        seed.as_secs_f64(),
        settings.seed as f64 / seed.as_secs_f64()
    );
    let mut rates = Vec::new();
    let mut p99s = Vec::new();
    for run in 0..settings.runs {
        let first = settings.seed + run * settings.book;
        let took = book_many(&hub, first, settings.book, settings.in_flight).await?;
        let rate = settings.book as f64 / took.as_secs_f64();
        let (p50, p99) = availability(&hub, settings.queries).await?;
        let naive = naive_rate(2_000)?;
        let desk = desk_rate(settings).await?;
        println!(
            "run {}: book {rate:.0}/s | availability p50 {p50:.2} ms p99 {p99:.2} ms | naive fsync-per-booking {naive:.0}/s, ratio {:.1} | desk alone {desk:.0}/s",
            run + 1,
            rate / naive
        );
        rates.push(rate);
        p99s.push(p99);
    }
    println!(
        "median: book {:.0}/s, availability p99 {:.2} ms",
        median(rates),
        median(p99s)
    );
    Ok(())
}

/// Books `count` places for residents `first..first+count`, spread over the
/// slots; returns the wall time. Every answer must be 201.
async fn book_many(
    hub: &Arc<HubProcess>,
    first: usize,
    count: usize,
    in_flight: usize,
) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (hub, next) = (hub.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let slot = START_MS + SLOT_MS * (1 + i as u64 % SLOTS);
                let body = json!({"resource": "seats", "slot_start": slot, "resident": format!("r{i}"), "group": "adult"});
                let response = hub.post("/api/v1/bookings").json(&body).send().await?;
                ensure!(
                    response.status() == 201,
                    "booking {i}: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// p50 and p99 (ms) of `queries` one-day availability queries.
async fn availability(hub: &HubProcess, queries: usize) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(queries);
    for _ in 0..queries {
        let day = rand::random::<u64>() % 30;
        let from = START_MS + day * 48 * SLOT_MS;
        let to = from + 48 * SLOT_MS;
        let path = format!("/api/v1/resources/seats/availability?from={from}&to={to}");
        let started = Instant::now();
        let response = hub.get(&path).send().await?;
        ensure!(
            response.status() == 200,
            "availability: {}",
            response.status()
        );
        let _ = response.bytes().await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    Ok((at(0.5), at(0.99)))
}

/// The desk alone: `settings.seed` bookings, then `settings.book` more
/// timed, `in_flight` at once, through `Bookings::book` in this process.
async fn desk_rate(settings: Settings) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut config: hub::settings::Config = toml::from_str(CONFIG)?;
    config.data_dir = dir.path().to_path_buf();
    let hub_settings = HubSettings::parse(config)?;
    let store = Arc::new(Store::open(&dir.path().join("db"))?);
    let stop = tokio_util::sync::CancellationToken::new();
    let metrics = hub::metrics::Metrics::new();
    let supervisor = hub::supervise::Supervisor::new(stop.clone(), &metrics, None);
    let (schedule, desk) = Bookings::start(
        store,
        metrics,
        &hub_settings,
        Box::new(|_| {}),
        Arc::new(tokio::sync::Notify::new()),
        &supervisor,
    )?;
    let run = |first: usize, count: usize| {
        let schedule = schedule.clone();
        async move {
            let next = Arc::new(AtomicUsize::new(first));
            let mut workers = tokio::task::JoinSet::new();
            let started = Instant::now();
            for _ in 0..settings.in_flight {
                let (schedule, next) = (schedule.clone(), next.clone());
                workers.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= first + count {
                            return anyhow::Ok(());
                        }
                        let request = BookRequest {
                            resource: "seats".into(),
                            slot_start: START_MS + SLOT_MS * (1 + i as u64 % SLOTS),
                            who: booker(i),
                            idempotency_key: None,
                        };
                        schedule.book(request).await?;
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done??;
            }
            anyhow::Ok(started.elapsed())
        }
    };
    run(0, settings.seed).await?;
    let took = run(settings.seed, settings.book).await?;
    stop.cancel();
    let _ = tokio::task::spawn_blocking(move || desk.join()).await;
    Ok(settings.book as f64 / took.as_secs_f64())
}

/// The peer: one transaction + fsync per booking, serially.
fn naive_rate(count: usize) -> Result<f64> {
    let seats = HubSettings::parse(toml::from_str(CONFIG)?)?.resources[0]
        .config
        .clone();
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let started = Instant::now();
    for i in 0..count {
        let slot_start = START_MS + SLOT_MS * (1 + i as u64 % SLOTS);
        let slot = Slot {
            start: slot_start,
            end: slot_start + SLOT_MS,
        };
        let booking = Booking::booked(format!("{i:021}"), &seats, slot, booker(i), START_MS);
        let dues = [
            (slot_start + 600_000, Milestone::Grace),
            (slot_start + SLOT_MS, Milestone::End),
        ];
        store.put_booking(&booking, &dues)?;
        store.flush()?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The `i`-th resident, an adult.
fn booker(i: usize) -> Booker {
    Booker {
        resident: format!("r{i}"),
        group: Group::Adult,
        child_birthdate: None,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
