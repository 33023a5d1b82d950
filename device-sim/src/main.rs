//! `device-sim`: command line of the Yizhan fleet simulator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use device_sim::crowd::Profile;
use device_sim::demo::{random_token, run_demo, DemoOptions};
use device_sim::simtime::{parse_start, Calendar};
use device_sim::{run_fleet, DeviceMix, FleetConfig, GroundTruth};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

mod bench_cli;

#[derive(Parser)]
#[command(name = "device-sim", version, about = "Yizhan device fleet simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision a fleet, set up its centers' rooms and bookable resources
    /// through the API, run the devices and the residents' bookings until
    /// the duration passed or SIGINT/SIGTERM, then print the ground truth.
    /// Residents book when the hub's schedule clock is `fixed:` (moved
    /// along with the simulated time) or the run is at --speed 1 from now.
    Run(RunArgs),
    /// Load mode: N connections publish telemetry at the hub or any MQTT
    /// broker; reports sent, acknowledged, received and latencies.
    Bench(bench_cli::BenchArgs),
    /// The same loads at mosquitto and at the hub (both started here),
    /// median of several runs, a side-by-side table with ratios.
    PeerBench(bench_cli::PeerArgs),
    /// Start the hub binary on its embedded defaults and run simulated
    /// centers against it (the README's first command).
    Demo(DemoArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// Simulated centers (18 devices each).
    #[arg(long, default_value_t = 2)]
    centers: usize,
    /// Where the simulated devices keep their issued credentials.
    #[arg(long, default_value = "./data/sim-devices")]
    device_dir: PathBuf,
    /// Simulated seconds per real second (60: an hour of the centers'
    /// day per minute, so visits and sessions show at once).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// The hub's data dir (its store, CA, `demo.toml`).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// The hub's HTTP API address (default: the hub's, 127.0.0.1:8080).
    #[arg(long)]
    api_listen: Option<String>,
    /// The hub's device (mTLS) address (default: the hub's, 0.0.0.0:8883).
    #[arg(long)]
    mqtt_listen: Option<String>,
    /// The `hub` binary. Default: the one next to this program, built
    /// first (`cargo build -p hub`) when this runs under `cargo run`.
    #[arg(long)]
    hub: Option<PathBuf>,
    /// The hub's admin token; a fresh one when unset.
    #[arg(long, env = "YIZHAN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Hub HTTP API base URL.
    #[arg(long, default_value_t = FleetConfig::default().api_url)]
    api: String,
    /// Admin token for provisioning.
    #[arg(long, env = "YIZHAN_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Broker host name (also the TLS server name; not an IP address).
    #[arg(long, default_value_t = FleetConfig::default().mqtt_host)]
    mqtt_host: String,
    #[arg(long, default_value_t = FleetConfig::default().mqtt_port)]
    mqtt_port: u16,
    /// Number of centers (center01, center02, …).
    #[arg(long, default_value_t = FleetConfig::default().centers)]
    centers: usize,
    /// The first center's number: `--first-center 3` names them center03, …
    /// (simulators of several hubs of one district).
    #[arg(long, default_value_t = FleetConfig::default().first_center)]
    first_center: usize,
    #[arg(long, default_value_t = DeviceMix::default().pianos)]
    pianos: usize,
    #[arg(long, default_value_t = DeviceMix::default().therapy_robots)]
    therapy_robots: usize,
    #[arg(long, default_value_t = DeviceMix::default().gates)]
    gates: usize,
    #[arg(long, default_value_t = DeviceMix::default().counters)]
    counters: usize,
    /// Seed of every random choice the devices make.
    #[arg(long, default_value_t = FleetConfig::default().seed)]
    seed: u64,
    /// Stop after this long, real time (e.g. 60s, 10m); runs until a
    /// signal if neither this nor --sim-duration is set.
    #[arg(long, conflicts_with = "sim_duration")]
    duration: Option<humantime::Duration>,
    /// Stop after this much simulated time (e.g. 7days at --speed 600 runs
    /// for 16m48s).
    #[arg(long)]
    sim_duration: Option<humantime::Duration>,
    /// Simulated seconds per real second: 600 runs ten simulated hours a
    /// minute. Telemetry keeps its real-time interval.
    #[arg(long, default_value_t = FleetConfig::default().speed)]
    speed: f64,
    /// Simulated start: an RFC 3339 time or a local date (its midnight);
    /// now if unset.
    #[arg(long)]
    start: Option<String>,
    /// The centers' time zone (IANA name).
    #[arg(long, default_value_t = FleetConfig::default().calendar.tz)]
    tz: chrono_tz::Tz,
    /// Visits through each center's entrance in an average month.
    #[arg(long, default_value_t = Profile::default().visits_per_month)]
    visits_per_month: f64,
    /// Uses of each center's 24-hour gym per day.
    #[arg(long, default_value_t = Profile::default().gym_visits_per_day)]
    gym_visits_per_day: f64,
    /// Chance that a therapy session runs into an overheat fault (0–1).
    #[arg(long, default_value_t = FleetConfig::default().overheat_chance)]
    overheat_chance: f64,
    #[arg(long, default_value_t = FleetConfig::default().telemetry_interval.into())]
    telemetry_interval: humantime::Duration,
    /// MQTT keepalive (whole seconds).
    #[arg(long, default_value_t = FleetConfig::default().keepalive.into())]
    keepalive: humantime::Duration,
    /// Pause between two devices' connects.
    #[arg(long, default_value_t = FleetConfig::default().connect_pacing.into())]
    connect_pacing: humantime::Duration,
    /// Directory of device credentials (reused across runs).
    #[arg(long, default_value_os_t = FleetConfig::default().cert_dir)]
    cert_dir: PathBuf,
    /// Also write the ground truth as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<FleetConfig> {
        let calendar = Calendar { tz: self.tz };
        let start_ms = self
            .start
            .as_deref()
            .map(|text| parse_start(text, &calendar))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--start: {e}"))?;
        let sim_duration: Option<Duration> = self.sim_duration.map(Into::into);
        let duration = self
            .duration
            .map(Into::into)
            .or_else(|| sim_duration.map(|d| d.div_f64(self.speed)));
        Ok(FleetConfig {
            api_url: self.api,
            admin_token: self.token,
            mqtt_host: self.mqtt_host,
            mqtt_port: self.mqtt_port,
            centers: self.centers,
            first_center: self.first_center,
            mix: DeviceMix {
                pianos: self.pianos,
                therapy_robots: self.therapy_robots,
                gates: self.gates,
                counters: self.counters,
            },
            cert_dir: self.cert_dir,
            telemetry_interval: self.telemetry_interval.into(),
            keepalive: self.keepalive.into(),
            seed: self.seed,
            connect_pacing: self.connect_pacing.into(),
            duration,
            speed: self.speed,
            start_ms,
            calendar,
            profile: Profile {
                visits_per_month: self.visits_per_month,
                gym_visits_per_day: self.gym_visits_per_day,
                ..Profile::default()
            },
            overheat_chance: self.overheat_chance,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The load modes log only trouble: their output is the report.
    let default_filter = match cli.command {
        Command::Run(_) | Command::Demo(_) => "info",
        Command::Bench(_) | Command::PeerBench(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Bench(args) => bench_cli::bench(args).await,
        Command::PeerBench(args) => bench_cli::peer_bench(args).await,
        Command::Demo(args) => demo(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("device-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let json = args.json.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let truth = run_fleet(args.into_config()?, shutdown)
        .await
        .context("fleet run failed")?;
    print!("{truth}");
    if let Some(path) = json {
        write_json(&truth, &path)?;
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        hub: hub_binary(args.hub)?,
        data_dir: args.data_dir,
        api_listen: args.api_listen,
        mqtt_listen: args.mqtt_listen,
        centers: args.centers,
        device_dir: args.device_dir,
        speed: args.speed,
        admin_token: args.token.unwrap_or_else(random_token),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    run_demo(options, shutdown).await.context("demo failed")
}

/// The `hub` binary to start: `explicit`, else the one built next to this
/// program. Under `cargo run` (which sets `CARGO`) it is built first, in
/// this program's profile, so the demo runs the hub of this source tree —
/// together with device-sim, as the README's command and the benchmark
/// scripts build them: cargo unifies dependency features per selection, so
/// building the hub alone would rebuild shared crates each time.
fn hub_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating device-sim")?;
    let dir = exe.parent().context("device-sim's directory")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-p", "hub", "-p", "device-sim", "--manifest-path"]);
        build.arg(&manifest);
        if dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build -p hub")?;
        anyhow::ensure!(status.success(), "cargo build -p hub failed: {status}");
    }
    let hub = dir.join("hub");
    anyhow::ensure!(
        hub.exists(),
        "no hub binary next to device-sim ({}): build it (`cargo build --release -p hub`) or give --hub",
        hub.display()
    );
    Ok(hub)
}

fn write_json(truth: &GroundTruth, path: &Path) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(truth).context("serializing the ground truth")?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "ground truth written");
    Ok(())
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM (devices then say
/// goodbye); exits at once on the second.
async fn cancel_on_signal(shutdown: CancellationToken) {
    if let Err(e) = next_signal().await {
        tracing::error!(error = %e, "cannot listen for signals");
        return;
    }
    tracing::info!("stopping: devices are saying goodbye (signal again to abort)");
    shutdown.cancel();
    if next_signal().await.is_ok() {
        std::process::exit(130);
    }
}

async fn next_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
