//! What the drain bench watches over time: the hub's uplink metrics
//! (backlog, sent, dropped, connected, telemetry ingested), its memory and
//! CPU from `/proc`, and what the district's subscriber received; one
//! sample every `every`, kept for the figures and read by the phases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::tally::Arrivals;
use super::DrainError;
use crate::bench::processes::rss_bytes;
use crate::bench::received::{sum_metric, HubMetrics};

/// One look at the hub and the subscriber.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub at: f64,
    /// `yizhan_uplink_backlog_messages`.
    pub backlog: u64,
    pub backlog_bytes: u64,
    /// `yizhan_uplink_sent_total`, every class: acknowledged by the broker.
    pub sent: u64,
    pub dropped: u64,
    pub connected: bool,
    /// Telemetry the hub ingested (`yizhan_messages_received_total`).
    pub ingested: u64,
    /// Messages the subscriber received, duplicates included, and distinct.
    pub received: u64,
    pub distinct: u64,
    /// The hub's VmRSS.
    pub rss: u64,
    /// CPU time so far (user + system), seconds: the hub's, the upstream
    /// broker's and this bench's (its load, the subscriber, the sampling).
    pub cpu: f64,
    pub broker_cpu: f64,
    pub bench_cpu: f64,
}

/// Samples in a task of its own until stopped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the sampler reads.
pub struct Sources {
    pub metrics: HubMetrics,
    pub pid: u32,
    /// The upstream broker's process.
    pub broker_pid: u32,
    pub arrivals: Arrivals,
}

impl Sampler {
    pub fn start(sources: Sources, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(sample(sources, every, Arc::clone(&samples)));
        Sampler { samples, task }
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .copied()
    }

    /// Waits for a sample newer than the call for which `holds`; fails
    /// after `timeout`, naming `what` and showing the last sample.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        holds: impl Fn(&Sample) -> bool,
    ) -> Result<Sample, DrainError> {
        let since = self.latest().map_or(-1.0, |s| s.at);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(sample) = self.latest().filter(|s| s.at > since && holds(s)) {
                return Ok(sample);
            }
            if Instant::now() > deadline {
                return Err(DrainError::Timeout {
                    what: what.to_string(),
                    seconds: timeout.as_secs(),
                    last: self.latest().unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The highest backlog sampled between `from` and `to` (seconds).
    pub fn highest_backlog(&self, from: f64, to: f64) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        highest_backlog(&samples, from, to)
    }

    /// Every sample taken, in order.
    pub fn stop(self) -> Vec<Sample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

async fn sample(sources: Sources, every: Duration, samples: Arc<Mutex<Vec<Sample>>>) {
    let started = Instant::now();
    let ticks = clock_ticks();
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // A scrape that fails (the hub busy or gone) is skipped: the
        // phases wait on samples and time out naming what they waited for.
        let Ok(text) = sources.metrics.scrape().await else {
            continue;
        };
        let metric = |name: &str| sum_metric(&text, name, "") as u64;
        let (received, distinct) = sources.arrivals.get();
        let sample = Sample {
            at: started.elapsed().as_secs_f64(),
            backlog: metric("yizhan_uplink_backlog_messages"),
            backlog_bytes: metric("yizhan_uplink_backlog_bytes"),
            sent: metric("yizhan_uplink_sent_total"),
            dropped: metric("yizhan_uplink_dropped_total"),
            connected: metric("yizhan_uplink_connected") == 1,
            ingested: sum_metric(
                &text,
                "yizhan_messages_received_total",
                r#"channel="telemetry""#,
            ) as u64,
            received,
            distinct,
            rss: rss_bytes(sources.pid).unwrap_or(0),
            cpu: process_cpu(sources.pid, ticks).unwrap_or(0.0),
            broker_cpu: process_cpu(sources.broker_pid, ticks).unwrap_or(0.0),
            bench_cpu: process_cpu(std::process::id(), ticks).unwrap_or(0.0),
        };
        samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
    }
}

/// The highest backlog among `samples` between `from` and `to` (seconds).
pub fn highest_backlog(samples: &[Sample], from: f64, to: f64) -> u64 {
    samples
        .iter()
        .filter(|s| (from..=to).contains(&s.at))
        .map(|s| s.backlog)
        .max()
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`; 100,
/// Linux's usual value, if that cannot be asked).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// User + system CPU seconds in a `/proc/…/stat` line (fields 14 and 15,
/// counted after the command name in parentheses), and that name.
fn stat_cpu(stat: &str, ticks: f64) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the name: state is field 3, utime 14, stime 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((name, (utime + stime) / ticks))
}

/// CPU seconds of process `pid` so far (its finished threads included).
pub fn process_cpu(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu(&stat, ticks).map(|(_, seconds)| seconds)
}

/// CPU seconds of process `pid`'s live threads, summed by thread name.
pub fn thread_cpu(pid: u32, ticks: f64) -> HashMap<String, f64> {
    let mut by_name = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, seconds)) = stat_cpu(&stat, ticks) {
            *by_name.entry(name).or_insert(0.0) += seconds;
        }
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 12";
        let (name, seconds) = stat_cpu(stat, 100.0).unwrap();
        assert_eq!(name, "tokio (rt) w");
        assert!((seconds - 3.0).abs() < 1e-9, "{seconds}");
        assert_eq!(stat_cpu("garbage", 100.0), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_named_threads() {
        let ticks = clock_ticks();
        let busy = (0..2_000_000u64).fold(0u64, |a, b| a.wrapping_add(b * b));
        assert!(busy > 0);
        let pid = std::process::id();
        assert!(process_cpu(pid, ticks).is_some());
        assert!(!thread_cpu(pid, ticks).is_empty());
    }
}
