//! The drain bench's figures: per phase (rates from the samples, round
//! trips from the phase's histograms), the ratios the targets are about,
//! the end-of-run checks (nothing dropped, every message received, the
//! subscriber's tally against the hub's counters and the bench's ground
//! truth), and the Markdown table of every run and their median.

use std::collections::BTreeMap;

use super::sampler::{highest_backlog, Sample};
use super::tally::Counted;
use super::{DrainConfig, DrainResult, Marks, Phase};
use crate::bench::connection::PhaseTime;
use crate::bench::latency::Percentiles;
use crate::bench::BenchReport;

/// What one run left, for the figures.
pub struct Outcome<'a> {
    pub marks: &'a Marks,
    pub samples: &'a [Sample],
    /// Everything forwarded and received (or the last sample, if not).
    pub end: &'a Sample,
    /// Round trips by phase (`Phase` indices).
    pub times: &'a [PhaseTime],
    /// The steady load's report (its events sent and acknowledged).
    pub load: &'a BenchReport,
    pub counted: &'a Counted,
    /// The hub's VmHWM.
    pub peak_rss: u64,
}

/// The three round trips of a phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Trips {
    pub telemetry_puback: Option<Percentiles>,
    pub event_puback: Option<Percentiles>,
    pub event_ack: Option<Percentiles>,
}

impl Trips {
    fn of(times: &[PhaseTime], phase: Phase) -> Trips {
        let Some(time) = times.get(phase as usize) else {
            return Trips::default();
        };
        Trips {
            telemetry_puback: time.telemetry_puback.percentiles(),
            event_puback: time.event_puback.percentiles(),
            event_ack: time.event_ack.percentiles(),
        }
    }
}

/// Rates and round trips between two samples.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseFigures {
    pub seconds: f64,
    /// Acknowledged by the broker (`yizhan_uplink_sent_total`) per second.
    pub forwarded_per_second: f64,
    /// Arrived at the subscriber, duplicates included, per second.
    pub received_per_second: f64,
    /// Telemetry the hub ingested per second.
    pub ingested_per_second: f64,
    /// CPU in cores: the hub's, the upstream broker's, this bench's.
    pub hub_cores: f64,
    pub broker_cores: f64,
    pub bench_cores: f64,
    pub backlog_highest: u64,
    pub trips: Trips,
}

impl PhaseFigures {
    fn between(from: &Sample, to: &Sample, samples: &[Sample], trips: Trips) -> PhaseFigures {
        let seconds = (to.at - from.at).max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
        PhaseFigures {
            seconds,
            forwarded_per_second: rate(from.sent, to.sent),
            received_per_second: rate(from.received, to.received),
            ingested_per_second: rate(from.ingested, to.ingested),
            hub_cores: (to.cpu - from.cpu) / seconds,
            broker_cores: (to.broker_cpu - from.broker_cpu) / seconds,
            bench_cores: (to.bench_cpu - from.bench_cpu) / seconds,
            backlog_highest: highest_backlog(samples, from.at, to.at),
            trips,
        }
    }
}

/// What reached the district, checked at the end of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Check {
    /// `yizhan_uplink_dropped_total` (the bound is never reached: 0).
    pub dropped: u64,
    /// Left in the outbox at the end.
    pub backlog: u64,
    /// Acknowledged by the broker, per the hub.
    pub sent: u64,
    /// Distinct ids the subscriber received, and the copies beyond them.
    pub distinct: u64,
    pub duplicates: u64,
    /// Sent, never received.
    pub not_received: u64,
    /// Telemetry the hub ingested; distinct raw telemetry received; `seq`s
    /// missing below a device's highest.
    pub telemetry_ingested: u64,
    pub telemetry_received: u64,
    pub telemetry_gaps: u64,
    /// Events the bench published (each acknowledged durable by the hub);
    /// distinct events received; gaps.
    pub events_sent: u64,
    pub events_acknowledged: u64,
    pub events_received: u64,
    pub event_gaps: u64,
    pub unreadable: u64,
    /// Distinct messages per class.
    pub classes: BTreeMap<String, u64>,
}

impl Check {
    /// Messages the bench knows of that never arrived.
    pub fn lost(&self) -> u64 {
        self.not_received
            + self
                .telemetry_ingested
                .saturating_sub(self.telemetry_received)
            + self.telemetry_gaps
            + self.events_sent.saturating_sub(self.events_received)
            + self.event_gaps
    }
}

/// One run's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunFigures {
    pub steady: PhaseFigures,
    pub drain: PhaseFigures,
    /// After the drain, as long as the steady phase.
    pub control: PhaseFigures,
    /// Cut → backlog full.
    pub outage_seconds: f64,
    /// At the restore.
    pub backlog: u64,
    pub backlog_bytes: u64,
    /// Restore → the first message acknowledged again.
    pub reconnect_seconds: f64,
    /// Restore → the backlog down to `threshold`.
    pub drain_seconds: f64,
    pub threshold: u64,
    /// Messages the backlog lost per second over the drain (net of what
    /// the steady load added meanwhile).
    pub drain_per_second: f64,
    /// `drain_per_second` / the steady forwarding rate (target ≥ 5).
    pub drain_ratio: f64,
    /// Forwarded during the drain / forwarded in the steady phase.
    pub forwarding_ratio: f64,
    /// p99 during the drain / p99 steady (target ≤ 2), per round trip.
    pub p99_ratio: P99Ratios,
    /// p99 in the control phase / p99 steady: the noise between phases.
    pub control_ratio: P99Ratios,
    /// The hub's RSS at the end of the steady phase, with the backlog
    /// full, and at its highest (VmHWM).
    pub rss_steady: u64,
    pub rss_backlog: u64,
    pub rss_peak: u64,
    pub check: Check,
    pub threads_steady: Vec<(String, f64)>,
    pub threads_drain: Vec<(String, f64)>,
    pub fill: Option<BenchReport>,
}

/// p99 during the drain over p99 steady.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct P99Ratios {
    pub telemetry_puback: Option<f64>,
    pub event_puback: Option<f64>,
    pub event_ack: Option<f64>,
}

fn p99_ratio(steady: Option<Percentiles>, drain: Option<Percentiles>) -> Option<f64> {
    let (steady, drain) = (steady?, drain?);
    Some(drain.p99_us as f64 / steady.p99_us.max(1) as f64)
}

impl P99Ratios {
    /// `phase`'s p99 over `base`'s, per round trip.
    fn of(base: &Trips, phase: &Trips) -> P99Ratios {
        P99Ratios {
            telemetry_puback: p99_ratio(base.telemetry_puback, phase.telemetry_puback),
            event_puback: p99_ratio(base.event_puback, phase.event_puback),
            event_ack: p99_ratio(base.event_ack, phase.event_ack),
        }
    }
}

impl RunFigures {
    pub fn of(outcome: &Outcome) -> RunFigures {
        let (marks, samples) = (outcome.marks, outcome.samples);
        let steady = PhaseFigures::between(
            &marks.steady_start,
            &marks.steady_end,
            samples,
            Trips::of(outcome.times, Phase::Steady),
        );
        let drain = PhaseFigures::between(
            &marks.restored,
            &marks.drained,
            samples,
            Trips::of(outcome.times, Phase::Drain),
        );
        let control = PhaseFigures::between(
            &marks.control_start,
            &marks.control_end,
            samples,
            Trips::of(outcome.times, Phase::Control),
        );
        let drained = marks.restored.backlog.saturating_sub(marks.drained.backlog);
        let drain_per_second = drained as f64 / drain.seconds;
        let per_steady = |rate: f64| rate / steady.forwarded_per_second.max(1e-9);
        RunFigures {
            outage_seconds: marks.restored.at - marks.cut.at,
            backlog: marks.restored.backlog,
            backlog_bytes: marks.restored.backlog_bytes,
            reconnect_seconds: marks.reconnected.at - marks.restored.at,
            drain_seconds: drain.seconds,
            threshold: marks.threshold,
            drain_per_second,
            drain_ratio: per_steady(drain_per_second),
            forwarding_ratio: per_steady(drain.forwarded_per_second),
            p99_ratio: P99Ratios::of(&steady.trips, &drain.trips),
            control_ratio: P99Ratios::of(&steady.trips, &control.trips),
            rss_steady: marks.steady_end.rss,
            rss_backlog: marks.restored.rss,
            rss_peak: outcome.peak_rss,
            check: check(outcome),
            threads_steady: marks.threads_steady.clone(),
            threads_drain: marks.threads_drain.clone(),
            fill: marks.fill.clone(),
            steady,
            drain,
            control,
        }
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let p99 = |trips: &Trips| {
            trips
                .event_puback
                .map_or("—".to_owned(), |p| format!("{:.2} ms", ms(p.p99_us)))
        };
        format!(
            "steady {:.0} msgs/s forwarded, event PUBACK p99 {}; backlog {} drained in {:.1} s: \
             {:.0} msgs/s net ({:.1}×), event PUBACK p99 {} ({:.2}×); RSS peak {:.0} MB; \
             dropped {}, duplicates {}, lost {}",
            self.steady.forwarded_per_second,
            p99(&self.steady.trips),
            self.backlog,
            self.drain_seconds,
            self.drain_per_second,
            self.drain_ratio,
            p99(&self.drain.trips),
            self.p99_ratio.event_puback.unwrap_or(f64::NAN),
            mb(self.rss_peak),
            self.check.dropped,
            self.check.duplicates,
            self.check.lost()
        )
    }
}

fn check(outcome: &Outcome) -> Check {
    let (end, counted, load) = (outcome.end, outcome.counted, outcome.load);
    Check {
        dropped: end.dropped,
        backlog: end.backlog,
        sent: end.sent,
        distinct: counted.distinct,
        duplicates: counted.duplicates,
        not_received: end.sent.saturating_sub(counted.distinct),
        telemetry_ingested: end.ingested,
        telemetry_received: counted.telemetry,
        telemetry_gaps: counted.telemetry_gaps,
        events_sent: load.events_sent,
        events_acknowledged: load.events_acknowledged,
        events_received: counted.events,
        event_gaps: counted.event_gaps,
        unreadable: counted.unreadable,
        classes: counted.classes.clone(),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// One line of the table.
struct Row {
    label: &'static str,
    pick: fn(&RunFigures) -> Option<f64>,
    decimals: usize,
    target: &'static str,
}

/// CPU microseconds per message forwarded in the drain beyond what the
/// same process used per second in the steady phase.
fn per_message(figures: &RunFigures, cores: fn(&PhaseFigures) -> f64) -> f64 {
    let extra = cores(&figures.drain) - cores(&figures.steady);
    extra * 1e6 / figures.drain.forwarded_per_second.max(1e-9)
}

const fn row(
    label: &'static str,
    decimals: usize,
    target: &'static str,
    pick: fn(&RunFigures) -> Option<f64>,
) -> Row {
    Row {
        label,
        pick,
        decimals,
        target,
    }
}

fn p99_ms(trips: Option<Percentiles>) -> Option<f64> {
    trips.map(|p| ms(p.p99_us))
}

const ROWS: &[Row] = &[
    row("steady: forwarded (msgs/s)", 0, "", |f| {
        Some(f.steady.forwarded_per_second)
    }),
    row("steady: telemetry ingested (msgs/s)", 0, "", |f| {
        Some(f.steady.ingested_per_second)
    }),
    row("steady: event PUBACK p99 (ms)", 2, "", |f| {
        p99_ms(f.steady.trips.event_puback)
    }),
    row("steady: event durable ack p99 (ms)", 2, "", |f| {
        p99_ms(f.steady.trips.event_ack)
    }),
    row("steady: telemetry PUBACK p99 (ms)", 2, "", |f| {
        p99_ms(f.steady.trips.telemetry_puback)
    }),
    row("steady: hub CPU (cores)", 2, "", |f| {
        Some(f.steady.hub_cores)
    }),
    row("steady: mosquitto CPU (cores)", 2, "", |f| {
        Some(f.steady.broker_cores)
    }),
    row("steady: bench CPU (load, subscriber; cores)", 2, "", |f| {
        Some(f.steady.bench_cores)
    }),
    row("backlog at the restore (messages)", 0, "", |f| {
        Some(f.backlog as f64)
    }),
    row("backlog at the restore (MB)", 0, "", |f| {
        Some(mb(f.backlog_bytes))
    }),
    row("outage: cut → backlog full (s)", 1, "", |f| {
        Some(f.outage_seconds)
    }),
    row("restore → first PUBACK (s)", 1, "", |f| {
        Some(f.reconnect_seconds)
    }),
    row("restore → drained (s)", 1, "", |f| Some(f.drain_seconds)),
    row("drain: backlog falls (msgs/s, net)", 0, "", |f| {
        Some(f.drain_per_second)
    }),
    row("drain: forwarded (msgs/s)", 0, "", |f| {
        Some(f.drain.forwarded_per_second)
    }),
    row("**drain rate / steady forwarding rate**", 1, "≥ 5", |f| {
        Some(f.drain_ratio)
    }),
    row("drain: event PUBACK p99 (ms)", 2, "", |f| {
        p99_ms(f.drain.trips.event_puback)
    }),
    row("**event PUBACK p99, drain / steady**", 2, "≤ 2", |f| {
        f.p99_ratio.event_puback
    }),
    row("drain: event durable ack p99 (ms)", 2, "", |f| {
        p99_ms(f.drain.trips.event_ack)
    }),
    row("event durable ack p99, drain / steady", 2, "≤ 2", |f| {
        f.p99_ratio.event_ack
    }),
    row("drain: telemetry PUBACK p99 (ms)", 2, "", |f| {
        p99_ms(f.drain.trips.telemetry_puback)
    }),
    row("telemetry PUBACK p99, drain / steady", 2, "≤ 2", |f| {
        f.p99_ratio.telemetry_puback
    }),
    row(
        "control (after the drain): event PUBACK p99 / steady",
        2,
        "",
        |f| f.control_ratio.event_puback,
    ),
    row("control: event durable ack p99 / steady", 2, "", |f| {
        f.control_ratio.event_ack
    }),
    row("control: telemetry PUBACK p99 / steady", 2, "", |f| {
        f.control_ratio.telemetry_puback
    }),
    row("drain: hub CPU (cores)", 2, "", |f| Some(f.drain.hub_cores)),
    row("drain: mosquitto CPU (cores)", 2, "", |f| {
        Some(f.drain.broker_cores)
    }),
    row("drain: bench CPU (load, subscriber; cores)", 2, "", |f| {
        Some(f.drain.bench_cores)
    }),
    row(
        "drain: hub CPU per forwarded message, beyond steady (µs)",
        1,
        "",
        |f| Some(per_message(f, |p| p.hub_cores)),
    ),
    row(
        "drain: mosquitto CPU per forwarded message, beyond steady (µs)",
        1,
        "",
        |f| Some(per_message(f, |p| p.broker_cores)),
    ),
    row(
        "drain: bench CPU per forwarded message, beyond steady (µs)",
        1,
        "",
        |f| Some(per_message(f, |p| p.bench_cores)),
    ),
    row("hub RSS, steady (MB)", 0, "", |f| Some(mb(f.rss_steady))),
    row("hub RSS, backlog full (MB)", 0, "", |f| {
        Some(mb(f.rss_backlog))
    }),
    row("hub RSS, highest (VmHWM, MB)", 0, "", |f| {
        Some(mb(f.rss_peak))
    }),
    row("dropped", 0, "0", |f| Some(f.check.dropped as f64)),
    row("duplicates received", 0, "", |f| {
        Some(f.check.duplicates as f64)
    }),
    row(
        "lost (not received, telemetry or events missing)",
        0,
        "0",
        |f| Some(f.check.lost() as f64),
    ),
];

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The Markdown table: every run and the median, with the targets.
pub fn table(result: &DrainResult, config: &DrainConfig) -> String {
    let runs = &result.runs;
    let mut out = format!(
        "{} devices, {:.0} telemetry msgs/s (QoS 1, raw telemetry forwarded), {:.0} events/s; \
         backlog {} messages\n\n| figure |",
        config.devices, config.rate, config.event_rate, config.backlog
    );
    for run in 1..=runs.len() {
        out.push_str(&format!(" run {run} |"));
    }
    out.push_str(" median | target |\n| --- |");
    out.push_str(&" ---: |".repeat(runs.len() + 1));
    out.push_str(" --- |\n");
    for row in ROWS {
        let values: Vec<Option<f64>> = runs.iter().map(row.pick).collect();
        let show = |v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map_or("—".to_owned(), |v| format!("{v:.*}", row.decimals))
        };
        out.push_str(&format!("| {} |", row.label));
        for value in &values {
            out.push_str(&format!(" {} |", show(*value)));
        }
        let median = median(values.into_iter().flatten().collect());
        out.push_str(&format!(" {} | {} |\n", show(median), row.target));
    }
    out.push_str(&threads(runs));
    out
}

/// The hub's busiest threads in each run's steady phase and drain.
fn threads(runs: &[RunFigures]) -> String {
    let top = |threads: &[(String, f64)]| {
        threads
            .iter()
            .take(5)
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("\nHub threads (cores), busiest first:\n");
    for (index, run) in runs.iter().enumerate() {
        out.push_str(&format!(
            "- run {}: steady {}; drain {}\n",
            index + 1,
            top(&run.threads_steady),
            top(&run.threads_drain)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, backlog: u64, sent: u64) -> Sample {
        Sample {
            at,
            backlog,
            sent,
            ..Sample::default()
        }
    }

    #[test]
    fn the_drain_ratio_is_the_net_fall_over_the_steady_forwarding() {
        let marks = Marks {
            steady_start: sample(10.0, 5, 1_000),
            steady_end: sample(20.0, 7, 3_000),
            cut: sample(21.0, 0, 3_000),
            restored: sample(40.0, 100_000, 3_000),
            reconnected: sample(41.0, 99_000, 4_000),
            drained: sample(60.0, 1_000, 107_000),
            threshold: 1_000,
            ..Marks::default()
        };
        let load = BenchReport {
            broker: "hub".into(),
            transport: "tcp".into(),
            connections: 1,
            qos: 1,
            payload_bytes: 0,
            target_rate: None,
            connect: Default::default(),
            connection_errors: 0,
            publish_seconds: 1.0,
            sent: 0,
            acknowledged: 0,
            received: 0,
            received_seconds: 0.0,
            sent_per_second: 0.0,
            received_per_second: 0.0,
            seq_gaps: None,
            puback: None,
            events_sent: 10,
            events_acknowledged: 10,
            event_ack: None,
        };
        let counted = Counted {
            distinct: 107_000,
            events: 9,
            ..Counted::default()
        };
        let end = sample(70.0, 0, 107_010);
        let figures = RunFigures::of(&Outcome {
            marks: &marks,
            samples: &[marks.steady_start, marks.steady_end],
            end: &end,
            times: &[],
            load: &load,
            counted: &counted,
            peak_rss: 0,
        });
        assert_eq!(figures.steady.forwarded_per_second, 200.0);
        assert_eq!(figures.steady.backlog_highest, 7);
        assert_eq!(figures.drain_per_second, 99_000.0 / 20.0);
        assert!((figures.drain_ratio - 24.75).abs() < 1e-9);
        assert!((figures.forwarding_ratio - 26.0).abs() < 1e-9);
        assert_eq!(figures.reconnect_seconds, 1.0);
        assert_eq!(figures.check.not_received, 10);
        assert_eq!(figures.check.lost(), 11, "10 not received, 1 event missing");
        assert_eq!(figures.p99_ratio.event_puback, None, "nothing timed");
    }

    #[test]
    fn medians_take_the_middle_run() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
