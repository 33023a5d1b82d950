//! `device-sim drain-bench`: how fast a hub's uplink drains a backlog after
//! an outage, and what that does to its devices (issue 12: ≥ 5× the normal
//! forwarding rate, device ingest p99 raised by at most 2×).
//!
//! Each run starts mosquitto (the district's broker) on a free loopback
//! port, a TCP proxy in front of it that the bench cuts and restores, a
//! persistent-session subscriber standing for the district (`tally`), and
//! a release hub forwarding through the proxy with raw telemetry on. One
//! steady load — telemetry (QoS 1) from every device at a fixed total rate
//! and events timed to their PUBACK and durable ack — runs through every
//! phase, its round trips split by phase:
//!
//! 1. **steady**: the normal forwarding rate (`yizhan_uplink_sent_total`
//!    per second) and the round trips;
//! 2. **outage**: the proxy goes dark; a second load (`fill` devices, at a
//!    higher rate, stopped once it is enough) fills the outbox to the
//!    backlog asked for — the backlog a long outage at the steady rate
//!    would leave, in a minute;
//! 3. **drain**: the proxy is back; until the backlog is down to its
//!    steady level, the rate it falls at and the round trips;
//! 4. **control**: as long as the steady phase again, the backlog gone:
//!    how far the round trips move between two phases without a drain
//!    (the machine's noise, for reading the drain's ratios).
//!
//! Then the load stops, the backlog empties, and the subscriber's tally is
//! checked against the hub's counters and the bench's own ground truth
//! (`report`). The `sampler` reads the hub's metrics and `/proc` meanwhile.

pub mod report;
pub mod sampler;
pub mod tally;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;

use super::connect::Pacing;
use super::connection::{Broker, Counters};
use super::load::{Load, Stop};
use super::peer::report_hub_log;
use super::processes::{peak_rss_bytes, HubChild, HubSettings, Mosquitto, ProcessError};
use super::received::HubMetrics;
use super::tcp_proxy::TcpProxy;
use super::{run, Auth, BenchConfig, BenchError, BenchReport, HubAccess, Session};
use report::{Outcome, RunFigures};
use sampler::{clock_ticks, thread_cpu, Sample, Sampler, Sources};
use tally::Tally;

/// The district broker's one user (the hub's uplink and the subscriber).
const DISTRICT_USER: &str = "district";
const DISTRICT_PASSWORD: &str = "drain-bench-district-password";
/// The hub's tools listener user (the load's connections).
const TOOLS_USER: &str = "bench";
const TOOLS_PASSWORD: &str = "drain-bench-tools-password";
const ADMIN_TOKEN: &str = "drain-bench-admin-token-0123456789";
/// The hub's uplink client id: the first part of every message id.
const HUB_ID: &str = "drainbench";
/// mosquitto delivers to the subscriber without its default window of 20.
const MOSQUITTO_EXTRA: &str = "max_inflight_messages 1000\n";
/// How often the hub and the subscriber are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How long the hub's first uplink session, the backlog reaching its size
/// after the fill load, the reconnect after the restore, and the final
/// forwarding may each take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The backlog counts as drained at or below the larger of this and twice
/// the steady phase's highest.
const DRAINED_FLOOR: u64 = 1_000;

/// What the drain bench runs.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    pub hub_binary: PathBuf,
    pub runs: usize,
    /// Devices of the steady load, one connection each.
    pub devices: usize,
    /// Telemetry messages per second over all of them.
    pub rate: f64,
    /// Events per second, from one more device, timed.
    pub event_rate: f64,
    pub warmup: Duration,
    pub steady: Duration,
    /// Messages in the outbox before the uplink is restored.
    pub backlog: u64,
    /// The fill load's total rate and connections.
    pub fill_rate: f64,
    pub fill_connections: usize,
    /// A drain not done by then fails the run.
    pub drain_timeout: Duration,
    /// Lines added to the hub's `[uplink]` (keys the bench does not set,
    /// e.g. `max_in_flight = 1024`).
    pub uplink_settings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("invalid drain bench configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the TCP proxy: {0}")]
    Proxy(std::io::Error),
    #[error("the district's subscriber: {0}")]
    Subscriber(String),
    #[error("the district's runtime: {0}")]
    District(String),
    #[error("a load: {0}")]
    Load(#[from] BenchError),
    #[error("waited {seconds} s for {what}; the last sample: {last:?}")]
    Timeout {
        what: String,
        seconds: u64,
        last: Sample,
    },
}

/// The phases round trips are split by (`PhaseTimes` indices).
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Warmup = 0,
    Steady = 1,
    Outage = 2,
    Drain = 3,
    Control = 4,
}

/// Every run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainResult {
    pub runs: Vec<RunFigures>,
}

/// Runs the bench `config.runs` times, each on fresh processes.
pub async fn drain_bench(config: &DrainConfig) -> Result<DrainResult, DrainError> {
    validate(config)?;
    crate::mqtt::ensure_crypto_provider();
    let mut runs = Vec::with_capacity(config.runs);
    for run in 1..=config.runs {
        eprintln!("run {run} of {}", config.runs);
        let figures = one_run(config).await?;
        eprintln!("  {}", figures.summary());
        runs.push(figures);
    }
    Ok(DrainResult { runs })
}

fn validate(config: &DrainConfig) -> Result<(), DrainError> {
    let invalid = |what: &str| Err(DrainError::InvalidConfig(what.to_string()));
    let positive = |rate: f64| rate.is_finite() && rate > 0.0;
    if config.runs == 0 || config.devices == 0 || config.fill_connections == 0 {
        return invalid("--runs, --devices and --fill-connections must be at least 1");
    }
    if !positive(config.rate) || !positive(config.fill_rate) {
        return invalid("--rate and --fill-rate must be above zero");
    }
    if !(config.event_rate.is_finite() && config.event_rate >= 0.0) {
        return invalid("--event-rate must be zero or more");
    }
    if config.backlog == 0 || config.steady < Duration::from_secs(1) {
        return invalid("--backlog must be at least 1 and --steady at least 1 s");
    }
    if let Some(line) = config.uplink_settings.iter().find(|l| !l.contains('=')) {
        return Err(DrainError::InvalidConfig(format!(
            "--uplink-setting {line:?}: expected key = value"
        )));
    }
    Ok(())
}

/// The district's side of a run — the proxy and the subscriber — on a
/// runtime of its own: at 10,000 messages a second their tasks would
/// otherwise queue ahead of the load's, whose round trips are what is
/// measured (an event's PUBACK timed late because the subscriber was
/// parsing on the same worker).
struct DistrictSide {
    runtime: Option<tokio::runtime::Runtime>,
}

impl DistrictSide {
    fn start() -> Result<DistrictSide, DrainError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("district")
            .enable_all()
            .build()
            .map_err(|e| DrainError::District(e.to_string()))?;
        Ok(DistrictSide {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` (and whatever it spawns) on the district's runtime.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, DrainError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| DrainError::District("stopped".into()))?;
        runtime
            .spawn(work)
            .await
            .map_err(|e| DrainError::District(e.to_string()))
    }
}

impl Drop for DistrictSide {
    fn drop(&mut self) {
        // Dropped on the load's runtime, which must not block on another.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The processes of one run, stopped when dropped (hub first).
struct Stage {
    hub: HubChild,
    tally: Tally,
    proxy: TcpProxy,
    mosquitto: Mosquitto,
    certs: tempfile::TempDir,
    _district: DistrictSide,
}

impl Stage {
    async fn start(config: &DrainConfig) -> Result<Stage, DrainError> {
        let mosquitto = Mosquitto::start_with(DISTRICT_USER, DISTRICT_PASSWORD, MOSQUITTO_EXTRA)?;
        let district = DistrictSide::start()?;
        let port = mosquitto.port;
        let proxy = district
            .run(TcpProxy::start(port))
            .await?
            .map_err(DrainError::Proxy)?;
        let tally = district
            .run(Tally::connect(port, DISTRICT_USER, DISTRICT_PASSWORD))
            .await??;
        let hub = HubChild::start(&HubSettings {
            binary: config.hub_binary.clone(),
            admin_token: ADMIN_TOKEN.into(),
            username: TOOLS_USER.into(),
            password: TOOLS_PASSWORD.into(),
            max_connections: 2 * (config.devices + config.fill_connections) + 100,
            extra_config: uplink_section(config, &proxy),
        })
        .await?;
        let certs = tempfile::tempdir().map_err(|source| ProcessError::Io {
            what: "temp dir".into(),
            source,
        })?;
        Ok(Stage {
            hub,
            tally,
            proxy,
            mosquitto,
            certs,
            _district: district,
        })
    }

    /// A load of `connections` devices `<prefix>N` at `rate`, QoS 1.
    fn load(&self, prefix: &str, connections: usize, rate: f64, stop: Stop) -> BenchConfig {
        BenchConfig {
            broker: Broker {
                host: "127.0.0.1".into(),
                port: self.hub.plain_port,
                keepalive: Duration::from_secs(60),
            },
            auth: Auth::Password {
                username: TOOLS_USER.into(),
                password: TOOLS_PASSWORD.into(),
            },
            hub: Some(HubAccess {
                api_url: self.hub.api_url.clone(),
                admin_token: ADMIN_TOKEN.into(),
                cert_dir: self.certs.path().to_path_buf(),
            }),
            connections,
            pacing: Pacing {
                concurrency: 64,
                timeout: Duration::from_secs(120),
            },
            load: Load {
                qos: QoS::AtLeastOnce,
                // The smallest contract telemetry: a counter's in/out.
                payload_bytes: 0,
                rate: Some(rate),
                stop,
            },
            idle: false,
            event_rate: 0.0,
            id_prefix: prefix.into(),
            progress: false,
        }
    }
}

/// The hub's `[uplink]`: through the proxy, raw telemetry on, a bound no
/// backlog of the bench reaches, quick to notice the cut and to come back.
fn uplink_section(config: &DrainConfig, proxy: &TcpProxy) -> String {
    let mut section = format!(
        "[uplink]\nenabled = true\nurls = [{url:?}]\nclient_id = {HUB_ID:?}\n\
         username = {DISTRICT_USER:?}\npassword = {DISTRICT_PASSWORD:?}\n\
         raw_telemetry = true\nmax_backlog_bytes = {bound}\n\
         keepalive_secs = 5\nconnect_timeout_secs = 2\n\
         backoff_initial_ms = 100\nbackoff_max_ms = 1000\n",
        url = proxy.url(),
        bound = 64u64 << 30,
    );
    for line in &config.uplink_settings {
        section.push_str(line);
        section.push('\n');
    }
    section
}

async fn one_run(config: &DrainConfig) -> Result<RunFigures, DrainError> {
    let stage = Stage::start(config).await?;
    let measured = measure(config, &stage).await;
    report_hub_log(&stage.hub);
    measured
}

async fn measure(config: &DrainConfig, stage: &Stage) -> Result<RunFigures, DrainError> {
    let sampler = Sampler::start(
        Sources {
            metrics: HubMetrics::new(&stage.hub.api_url, ADMIN_TOKEN),
            pid: stage.hub.pid(),
            broker_pid: stage.mosquitto.pid(),
            arrivals: stage.tally.arrivals(),
        },
        SAMPLE_EVERY,
    );
    sampler
        .wait_for("the uplink's first session", STEP_TIMEOUT, |s| s.connected)
        .await?;
    // The stop is the phases' end (`load_while`).
    let mut steady = stage.load("dev", config.devices, config.rate, Stop::Count(0));
    steady.event_rate = config.event_rate;
    let session = Session::open(&steady).await?;
    let counters = session.counters();
    let phases = Phases {
        config,
        stage,
        sampler: &sampler,
        counters: Arc::clone(&counters),
        ticks: clock_ticks(),
    };
    let (marks, load) = session.load_while(phases.run()).await?;
    let marks = marks?;
    drop(phases);
    let end = sampler
        .wait_for("everything forwarded and received", STEP_TIMEOUT, |s| {
            s.backlog == 0 && s.distinct >= s.sent
        })
        .await
        // A shortfall is a finding, reported below, not a failed run.
        .unwrap_or_else(|_| sampler.latest().unwrap_or_default());
    Ok(RunFigures::of(&Outcome {
        marks: &marks,
        samples: &sampler.stop(),
        end: &end,
        times: &counters.phases.snapshot(),
        load: &load,
        counted: &stage.tally.counted(),
        peak_rss: peak_rss_bytes(stage.hub.pid()).unwrap_or(0),
    }))
}

/// The moments the figures are taken between, and what happened then.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    pub steady_start: Sample,
    pub steady_end: Sample,
    pub cut: Sample,
    /// The backlog full, the proxy restored.
    pub restored: Sample,
    /// The first sample after the restore with more sent.
    pub reconnected: Sample,
    pub drained: Sample,
    pub control_start: Sample,
    pub control_end: Sample,
    /// The backlog at or below which it counted as drained.
    pub threshold: u64,
    pub fill: Option<BenchReport>,
    /// CPU cores per hub thread name over the steady phase and the drain.
    pub threads_steady: Vec<(String, f64)>,
    pub threads_drain: Vec<(String, f64)>,
}

/// The phases of one run, while the steady load goes on.
struct Phases<'a> {
    config: &'a DrainConfig,
    stage: &'a Stage,
    sampler: &'a Sampler,
    counters: Arc<Counters>,
    ticks: f64,
}

impl Phases<'_> {
    fn enter(&self, phase: Phase) {
        eprintln!("  {phase:?}");
        self.counters.phases.enter(phase as usize);
    }

    /// The next sample.
    async fn sample(&self) -> Result<Sample, DrainError> {
        self.sampler
            .wait_for("a sample of the hub", STEP_TIMEOUT, |_| true)
            .await
    }

    async fn run(&self) -> Result<Marks, DrainError> {
        let mut marks = Marks::default();
        self.enter(Phase::Warmup);
        tokio::time::sleep(self.config.warmup).await;
        self.enter(Phase::Steady);
        marks.steady_start = self.sample().await?;
        let threads = self.threads();
        tokio::time::sleep(self.config.steady).await;
        marks.steady_end = self.sample().await?;
        marks.threads_steady = self.cores_since(&threads, &marks.steady_start, &marks.steady_end);
        self.enter(Phase::Outage);
        self.stage.proxy.cut();
        marks.cut = self.sample().await?;
        marks.fill = self.fill().await?;
        let target = self.config.backlog;
        marks.restored = self
            .sampler
            .wait_for("the backlog", STEP_TIMEOUT, |s| s.backlog >= target)
            .await?;
        self.enter(Phase::Drain);
        self.stage.proxy.restore();
        let threads = self.threads();
        let sent = marks.restored.sent;
        marks.reconnected = self
            .sampler
            .wait_for("the uplink back", STEP_TIMEOUT, |s| s.sent > sent)
            .await?;
        let steady_highest = self
            .sampler
            .highest_backlog(marks.steady_start.at, marks.steady_end.at);
        marks.threshold = DRAINED_FLOOR.max(2 * steady_highest);
        let threshold = marks.threshold;
        marks.drained = self
            .sampler
            .wait_for("the drain", self.config.drain_timeout, |s| {
                s.backlog <= threshold
            })
            .await?;
        marks.threads_drain = self.cores_since(&threads, &marks.restored, &marks.drained);
        self.enter(Phase::Control);
        marks.control_start = self.sample().await?;
        tokio::time::sleep(self.config.steady).await;
        marks.control_end = self.sample().await?;
        Ok(marks)
    }

    /// The fill load: enough messages at the fill rate for the backlog
    /// to reach its size (each raw telemetry message is one entry).
    async fn fill(&self) -> Result<Option<BenchReport>, DrainError> {
        let backlog = self.sample().await?.backlog;
        let missing = self.config.backlog.saturating_sub(backlog);
        if missing == 0 {
            return Ok(None);
        }
        let load = self.stage.load(
            "fill",
            self.config.fill_connections,
            self.config.fill_rate,
            Stop::Count(missing),
        );
        Ok(Some(run(&load).await?))
    }

    fn threads(&self) -> std::collections::HashMap<String, f64> {
        thread_cpu(self.stage.hub.pid(), self.ticks)
    }

    /// CPU cores per thread name between two samples, busiest first.
    fn cores_since(
        &self,
        before: &std::collections::HashMap<String, f64>,
        from: &Sample,
        to: &Sample,
    ) -> Vec<(String, f64)> {
        let seconds = (to.at - from.at).max(1e-3);
        let mut cores: Vec<(String, f64)> = self
            .threads()
            .into_iter()
            .map(|(name, cpu)| {
                let used = cpu - before.get(&name).copied().unwrap_or(0.0);
                (name, used / seconds)
            })
            .filter(|(_, cores)| *cores >= 0.005)
            .collect();
        cores.sort_by(|a, b| b.1.total_cmp(&a.1));
        cores
    }
}
