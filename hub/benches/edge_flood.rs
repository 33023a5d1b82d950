//! One device flooding the hub at ten times its rate limit, and what the
//! other devices see (issue 9): the event → ack round trip of `calm`
//! devices while nobody floods, then while one device publishes telemetry
//! at 10× `[broker.limits] messages_per_second`. Per run: p50 and p99 of
//! both phases, their ratio, and how many of the flooder's messages the hub
//! took (the limit allows `burst + rate × seconds`).
//!
//! `cargo bench -p hub --bench edge_flood -- [runs] [seconds per phase]`
//! (3, 10). Medians over the runs are printed last.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use protocol::{Channel, DeviceKind};
use rumqttc::QoS;
use serde_json::json;
use tests::{HubOptions, HubProcess, TestDevice};

/// The limit under test and the burst it allows.
const RATE: u64 = 50;
/// Devices whose round trips are timed, and each one's event rate.
const CALM: usize = 10;
const CALM_EVENTS_PER_SECOND: u64 = 10;

struct Phase {
    p50_ms: f64,
    p99_ms: f64,
}

struct Run {
    idle: Phase,
    flood: Phase,
    flooder_sent: u64,
    flooder_taken: u64,
}

fn main() -> Result<()> {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let runs = args.next().unwrap_or(3);
    let seconds = args.next().unwrap_or(10);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    for n in 1..=runs {
        let run = runtime.block_on(one_run(Duration::from_secs(seconds)))?;
        println!(
            "run {n}: idle p50 {:.2} ms p99 {:.2} ms | flood p50 {:.2} ms p99 {:.2} ms | p99 ratio {:.2} | flooder sent {} taken {}",
            run.idle.p50_ms,
            run.idle.p99_ms,
            run.flood.p50_ms,
            run.flood.p99_ms,
            run.flood.p99_ms / run.idle.p99_ms,
            run.flooder_sent,
            run.flooder_taken
        );
        results.push(run);
    }
    let median = |pick: fn(&Run) -> f64| {
        let mut v: Vec<f64> = results.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median: idle p99 {:.2} ms, flood p99 {:.2} ms, p99 ratio {:.2}",
        median(|r| r.idle.p99_ms),
        median(|r| r.flood.p99_ms),
        median(|r| r.flood.p99_ms / r.idle.p99_ms)
    );
    Ok(())
}

async fn one_run(phase: Duration) -> Result<Run> {
    let options = HubOptions {
        extra_config: format!(
            "[broker.limits]\nmessages_per_second = {RATE}\nburst = {RATE}\nflood_disconnect_secs = 0\n"
        ),
        ..HubOptions::default()
    };
    let hub = HubProcess::start(options).await?;
    let mut calm = Vec::with_capacity(CALM);
    for n in 0..CALM {
        let creds = hub.provision(&format!("calm{n}"), DeviceKind::Gate).await?;
        calm.push(TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?);
    }
    let flooder_creds = hub.provision("flooder", DeviceKind::Counter).await?;
    let flooder = TestDevice::online(&flooder_creds, hub.mqtt_port, DeviceKind::Counter).await?;

    let (calm, idle) = round_trips(calm, phase, 0).await?;
    let flooding = tokio::spawn(flood(flooder, phase));
    let (_calm, flood_phase) = round_trips(calm, phase, 1_000_000).await?;
    let (flooder_sent, _flooder) = flooding.await?;
    let twin = hub.twin("flooder").await?;
    let flooder_taken = twin["messages"].as_u64().context("messages")?;
    Ok(Run {
        idle: percentiles(&idle)?,
        flood: percentiles(&flood_phase)?,
        flooder_sent,
        flooder_taken,
    })
}

/// Every calm device sends events at its rate for `phase`, one at a time,
/// timing each to its ack.
async fn round_trips(
    devices: Vec<TestDevice>,
    phase: Duration,
    first_seq: u64,
) -> Result<(Vec<TestDevice>, Histogram<u64>)> {
    let mut tasks = Vec::new();
    for mut device in devices {
        tasks.push(tokio::spawn(async move {
            let mut times = Histogram::<u64>::new(3)?;
            let started = Instant::now();
            let mut seq = first_seq;
            let pause = Duration::from_millis(1000 / CALM_EVENTS_PER_SECOND);
            let ack_topic = device.topic(Channel::EventAck);
            while started.elapsed() < phase {
                seq += 1;
                let sent = Instant::now();
                device
                    .event(
                        &format!("e{seq}"),
                        seq,
                        "passage",
                        json!({"direction": "in"}),
                    )
                    .await?;
                device
                    .message_on(&ack_topic, Duration::from_secs(10))
                    .await?;
                times.record(sent.elapsed().as_micros() as u64)?;
                tokio::time::sleep(pause.saturating_sub(sent.elapsed())).await;
            }
            anyhow::Ok((device, times))
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    let mut devices = Vec::new();
    for task in tasks {
        let (device, times) = task.await??;
        all.add(&times)?;
        devices.push(device);
    }
    Ok((devices, all))
}

/// Publishes telemetry at 10× the limit for `phase`; returns how many
/// messages it handed to its client.
async fn flood(device: TestDevice, phase: Duration) -> (u64, TestDevice) {
    let topic = device.topic(Channel::Telemetry);
    let started = Instant::now();
    let pause = Duration::from_micros(1_000_000 / (10 * RATE));
    let mut sent = 0;
    while started.elapsed() < phase {
        sent += 1;
        let payload = tests::telemetry(sent, &[("in", json!(0))]);
        if device
            .client
            .try_publish(&topic, QoS::AtMostOnce, false, payload)
            .is_err()
        {
            // The client's queue is full: TCP is holding it back.
            sent -= 1;
        }
        tokio::time::sleep(pause).await;
    }
    (sent, device)
}

fn percentiles(times: &Histogram<u64>) -> Result<Phase> {
    anyhow::ensure!(!times.is_empty(), "no round trips timed");
    Ok(Phase {
        p50_ms: times.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: times.value_at_quantile(0.99) as f64 / 1000.0,
    })
}
