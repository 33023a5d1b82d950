//! `device-sim peer-bench`: the same loads at mosquitto and at the hub in
//! one run on one machine, medians of several runs, and a side-by-side
//! table with ratios (hub / mosquitto) and the hub's targets (issue 3).
//!
//! Both brokers get plain TCP with a username and password (the hub's
//! loopback tools listener), so TLS cost is left out of both; a last row
//! connects provisioned devices to the hub over mTLS, as real devices do.

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::QoS;

use super::connect::{ConnectReport, Pacing};
use super::connection::Broker;
use super::load::{Load, Stop};
use super::processes::{rss_bytes, HubChild, HubSettings, Mosquitto, ProcessError};
use super::{run, Auth, BenchConfig, BenchError, BenchReport, HubAccess, Session};

const USERNAME: &str = "bench";
const PASSWORD: &str = "bench-password";
const ADMIN_TOKEN: &str = "peer-bench-admin-token-0123456789";
/// Events per second timed to their ack in the hub's latency row.
const EVENT_RATE: f64 = 50.0;
/// How long idle connections sit before their broker's memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// What the peer benchmark runs.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub hub_binary: PathBuf,
    pub runs: usize,
    /// Connections of the throughput and latency rows.
    pub publishers: usize,
    pub window: Duration,
    pub payload_bytes: usize,
    /// Total rate of the PUBACK latency row.
    pub fixed_rate: f64,
    /// Connections of the memory and connect-time rows.
    pub idle_connections: usize,
    pub pacing: Pacing,
    /// Also connect `idle_connections` provisioned devices over mTLS.
    pub devices: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{broker}: {source}")]
    Bench {
        broker: &'static str,
        source: BenchError,
    },
    #[error("cannot read the memory of {0} (is it still running?)")]
    Rss(&'static str),
}

/// One broker's figures from one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunFigures {
    pub qos0_per_second: f64,
    pub qos1_per_second: f64,
    pub puback_p99_ms: f64,
    pub rss_per_connection_bytes: f64,
    pub connect_seconds: f64,
    pub connect_errors: u64,
    pub not_connected: usize,
    /// Every idle client dropped at once and reconnecting at once.
    pub storm: Option<ConnectReport>,
    /// Hub only: provisioned devices over mTLS.
    pub devices_connect_seconds: Option<f64>,
    pub devices_connect_errors: Option<u64>,
    pub devices_rss_per_connection_bytes: Option<f64>,
    pub devices_storm: Option<ConnectReport>,
    pub reports: Vec<BenchReport>,
}

/// Medians over the runs, per broker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerResult {
    pub hub: Vec<RunFigures>,
    pub mosquitto: Vec<RunFigures>,
}

/// Runs every scenario `runs` times. Each broker is started afresh for
/// the idle rows (memory from a quiet baseline) and again for the load
/// rows (a burst of 5,000 disconnects is still being cleaned up when the
/// next clients arrive otherwise: rumqttd then refuses some connects, see
/// docs/benchmarks.md).
pub async fn peer_bench(config: &PeerConfig) -> Result<PeerResult, PeerError> {
    let mut result = PeerResult {
        hub: Vec::new(),
        mosquitto: Vec::new(),
    };
    for run in 1..=config.runs {
        eprintln!("run {run} of {}: mosquitto", config.runs);
        let mut figures = RunFigures::default();
        for rows in [Rows::Idle, Rows::Load] {
            let mosquitto = Mosquitto::start(USERNAME, PASSWORD)?;
            Target::Mosquitto(&mosquitto)
                .measure(rows, config, &mut figures)
                .await?;
        }
        result.mosquitto.push(figures);
        eprintln!("run {run} of {}: hub", config.runs);
        let mut figures = RunFigures::default();
        for rows in [Rows::Idle, Rows::Load] {
            let hub = HubChild::start(&HubSettings {
                binary: config.hub_binary.clone(),
                admin_token: ADMIN_TOKEN.into(),
                username: USERNAME.into(),
                password: PASSWORD.into(),
                max_connections: 4 * config.idle_connections.max(1_000),
            })
            .await?;
            let certs = tempfile::tempdir().map_err(|source| ProcessError::Io {
                what: "temp dir".into(),
                source,
            })?;
            let access = HubAccess {
                api_url: hub.api_url.clone(),
                admin_token: ADMIN_TOKEN.into(),
                cert_dir: certs.path().to_path_buf(),
            };
            let measured = Target::Hub { hub: &hub, access }
                .measure(rows, config, &mut figures)
                .await;
            report_hub_log(&hub);
            measured?;
        }
        result.hub.push(figures);
    }
    Ok(result)
}

/// Which rows one broker process serves.
#[derive(Debug, Clone, Copy)]
enum Rows {
    /// Memory per idle connection and connect time.
    Idle,
    /// Throughput and latency.
    Load,
}

/// The hub logs only warnings and errors here: count them and show any
/// panic (rumqttd's listeners can panic, see docs/benchmarks.md).
fn report_hub_log(hub: &HubChild) {
    let log = hub.log();
    let lines: Vec<&str> = log.lines().collect();
    if lines.is_empty() {
        return;
    }
    eprintln!("  the hub logged {} warning/error lines", lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            for shown in lines.iter().skip(index).take(2) {
                eprintln!("    {shown}");
            }
        }
    }
}

enum Target<'a> {
    Mosquitto(&'a Mosquitto),
    Hub {
        hub: &'a HubChild,
        access: HubAccess,
    },
}

impl Target<'_> {
    fn name(&self) -> &'static str {
        match self {
            Target::Mosquitto(_) => "mosquitto",
            Target::Hub { .. } => "hub",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Target::Mosquitto(m) => m.pid(),
            Target::Hub { hub, .. } => hub.pid(),
        }
    }

    fn config(&self, connections: usize, load: Load, pacing: Pacing) -> BenchConfig {
        let (port, hub) = match self {
            Target::Mosquitto(m) => (m.port, None),
            Target::Hub { hub, access } => (hub.plain_port, Some(access.clone())),
        };
        BenchConfig {
            broker: Broker {
                host: "127.0.0.1".into(),
                port,
                keepalive: Duration::from_secs(60),
            },
            auth: Auth::Password {
                username: USERNAME.into(),
                password: PASSWORD.into(),
            },
            hub,
            connections,
            pacing,
            load,
            idle: false,
            event_rate: 0.0,
            id_prefix: "bench".into(),
            progress: false,
        }
    }

    async fn bench(&self, config: BenchConfig) -> Result<BenchReport, PeerError> {
        let report = run(&config).await.map_err(|source| PeerError::Bench {
            broker: self.name(),
            source,
        })?;
        eprintln!("  {}", report.to_string().trim_end().replace('\n', "\n  "));
        Ok(report)
    }

    async fn measure(
        &self,
        rows: Rows,
        config: &PeerConfig,
        figures: &mut RunFigures,
    ) -> Result<(), PeerError> {
        match rows {
            Rows::Idle => self.idle_rows(config, figures).await,
            Rows::Load => self.load_rows(config, figures).await,
        }
    }

    fn load(config: &PeerConfig, qos: QoS, rate: Option<f64>) -> Load {
        Load {
            qos,
            payload_bytes: config.payload_bytes,
            rate,
            stop: Stop::After(config.window),
        }
    }

    async fn idle_rows(
        &self,
        config: &PeerConfig,
        figures: &mut RunFigures,
    ) -> Result<(), PeerError> {
        let idle_load = Self::load(config, QoS::AtMostOnce, None);
        let clients = self.config(config.idle_connections, idle_load, config.pacing);
        let (report, rss, storm) = self.idle(clients).await?;
        figures.rss_per_connection_bytes = rss;
        figures.storm = Some(storm);
        figures.connect_seconds = report.connect.seconds;
        figures.connect_errors = report.connect.errors;
        figures.not_connected = report.connect.attempted - report.connect.connected;
        figures.reports.push(report);
        if let (Target::Hub { hub, .. }, true) = (self, config.devices) {
            let mut devices = self.config(config.idle_connections, idle_load, config.pacing);
            devices.broker.host = "localhost".into();
            devices.broker.port = hub.device_port;
            devices.auth = Auth::Devices;
            let (report, rss, storm) = self.idle(devices).await?;
            figures.devices_connect_seconds = Some(report.connect.seconds);
            figures.devices_connect_errors = Some(report.connect.errors);
            figures.devices_rss_per_connection_bytes = Some(rss);
            figures.devices_storm = Some(storm);
            figures.reports.push(report);
        }
        Ok(())
    }

    async fn load_rows(
        &self,
        config: &PeerConfig,
        figures: &mut RunFigures,
    ) -> Result<(), PeerError> {
        let busy = Pacing {
            concurrency: config.publishers,
            timeout: Duration::from_secs(30),
        };
        let qos0 = Self::load(config, QoS::AtMostOnce, None);
        let qos0 = self
            .bench(self.config(config.publishers, qos0, busy))
            .await?;
        let qos1 = Self::load(config, QoS::AtLeastOnce, None);
        let qos1 = self
            .bench(self.config(config.publishers, qos1, busy))
            .await?;
        let fixed = Self::load(config, QoS::AtLeastOnce, Some(config.fixed_rate));
        let mut latency_config = self.config(config.publishers, fixed, busy);
        if let Target::Hub { .. } = self {
            latency_config.event_rate = EVENT_RATE;
        }
        let latency = self.bench(latency_config).await?;
        figures.qos0_per_second = qos0.received_per_second;
        figures.qos1_per_second = qos1.received_per_second;
        figures.puback_p99_ms = latency
            .puback
            .map_or(f64::NAN, |p| p.p99_us as f64 / 1000.0);
        figures.reports.extend([qos0, qos1, latency]);
        Ok(())
    }

    /// Connects idle clients and reads the broker's memory before and
    /// while they are connected, then drops them all at once and
    /// reconnects them all at once; returns the report, bytes per
    /// connection and how the reconnect went.
    async fn idle(
        &self,
        mut config: BenchConfig,
    ) -> Result<(BenchReport, f64, ConnectReport), PeerError> {
        config.idle = true;
        let name = self.name();
        super::provision(&config)
            .await
            .map_err(|source| PeerError::Bench {
                broker: name,
                source,
            })?;
        let baseline = rss_bytes(self.pid()).ok_or(PeerError::Rss(name))?;
        let mut session = Session::open(&config)
            .await
            .map_err(|source| PeerError::Bench {
                broker: name,
                source,
            })?;
        tokio::time::sleep(IDLE_SETTLE).await;
        let loaded = rss_bytes(self.pid()).ok_or(PeerError::Rss(name))?;
        let connected = session.connect_report().connected.max(1);
        let storm = session.reconnect_storm(1).await.remove(0);
        eprintln!(
            "  {name} reconnect storm: {} of {} back in {:.2} s, {} connect errors",
            storm.connected, storm.attempted, storm.seconds, storm.errors
        );
        let report = session.close_idle().await;
        eprintln!("  {}", report.to_string().trim_end().replace('\n', "\n  "));
        let per_connection = loaded.saturating_sub(baseline) as f64 / connected as f64;
        eprintln!(
            "  {name} RSS {:.1} MB idle, {:.1} MB with {connected} connections: {:.1} KB each",
            baseline as f64 / 1e6,
            loaded as f64 / 1e6,
            per_connection / 1024.0
        );
        Ok((report, per_connection, storm))
    }
}

/// One line of the table: what it shows and how.
struct Row {
    label: String,
    pick: fn(&RunFigures) -> Option<f64>,
    decimals: usize,
    target: &'static str,
}

/// The median of one figure over the runs that have it.
fn median(runs: &[RunFigures], pick: fn(&RunFigures) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = runs.iter().filter_map(pick).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The side-by-side table (Markdown) of the medians, with the targets.
pub fn table(result: &PeerResult, config: &PeerConfig) -> String {
    let n = config.idle_connections;
    let rows = [
        Row {
            label: format!("QoS 0 msgs/s, {} publishers (received)", config.publishers),
            pick: |f| Some(f.qos0_per_second),
            decimals: 0,
            target: "≥ 2×",
        },
        Row {
            label: format!(
                "QoS 1 msgs/s, {} publishers (acknowledged and received)",
                config.publishers
            ),
            pick: |f| Some(f.qos1_per_second),
            decimals: 0,
            target: "≥ 1×",
        },
        Row {
            label: format!("PUBACK p99 at {:.0} msgs/s (ms)", config.fixed_rate),
            pick: |f| Some(f.puback_p99_ms),
            decimals: 2,
            target: "≤ 5 ms",
        },
        Row {
            label: format!("RSS per idle connection at {n} (KB)"),
            pick: |f| Some(f.rss_per_connection_bytes / 1024.0),
            decimals: 1,
            target: "≤ 20 KB",
        },
        Row {
            label: format!("{n} clients connected (s)"),
            pick: |f| Some(f.connect_seconds),
            decimals: 2,
            target: "≤ 10 s",
        },
        Row {
            label: format!("{n} clients: connect errors"),
            pick: |f| Some(f.connect_errors as f64),
            decimals: 0,
            target: "0",
        },
        Row {
            label: format!("{n} clients dropped at once: all back (s)"),
            pick: |f| f.storm.map(|s| s.seconds),
            decimals: 2,
            target: "≤ 10 s",
        },
        Row {
            label: format!("{n} clients dropped at once: not back"),
            pick: |f| f.storm.map(|s| (s.attempted - s.connected) as f64),
            decimals: 0,
            target: "0",
        },
        Row {
            label: format!("{n} mTLS devices connected (s)"),
            pick: |f| f.devices_connect_seconds,
            decimals: 2,
            target: "≤ 5 s at 5,000",
        },
        Row {
            label: format!("{n} mTLS devices: connect errors"),
            pick: |f| f.devices_connect_errors.map(|e| e as f64),
            decimals: 0,
            target: "0",
        },
        Row {
            label: format!("{n} mTLS devices dropped at once: all back (s)"),
            pick: |f| f.devices_storm.map(|s| s.seconds),
            decimals: 2,
            target: "≤ 10 s",
        },
        Row {
            label: format!("{n} mTLS devices dropped at once: not back"),
            pick: |f| f.devices_storm.map(|s| (s.attempted - s.connected) as f64),
            decimals: 0,
            target: "0",
        },
        Row {
            label: format!("RSS per idle mTLS device at {n} (KB)"),
            pick: |f| f.devices_rss_per_connection_bytes.map(|b| b / 1024.0),
            decimals: 1,
            target: "≤ 20 KB",
        },
    ];
    let mut out = format!(
        "| figure (median of {}) | hub | mosquitto | hub / mosquitto | hub target |\n| --- | ---: | ---: | ---: | --- |\n",
        config.runs
    );
    for Row {
        label,
        pick,
        decimals,
        target,
    } in rows
    {
        let hub = median(&result.hub, pick);
        let peer = median(&result.mosquitto, pick);
        let show = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.decimals$}"));
        let ratio = match (hub, peer) {
            (Some(h), Some(p)) if p > 0.0 => format!("{:.2}", h / p),
            _ => "—".into(),
        };
        if hub.is_none() && peer.is_none() {
            continue;
        }
        out.push_str(&format!(
            "| {label} | {} | {} | {ratio} | {target} |\n",
            show(hub),
            show(peer)
        ));
    }
    out
}
