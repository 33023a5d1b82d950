//! The `hub` binary: parses arguments, loads the configuration, sets up
//! tracing and runs the library until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hub::config::{Config, LogFormat, DEFAULT_CONFIG_TOML};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "hub",
    version,
    about = "Yizhan hub: one process per neighbourhood service center"
)]
struct Cli {
    /// TOML configuration file (every key optional; see print-default-config).
    #[arg(long, short, global = true, env = "YIZHAN_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Overrides `broker.listen` (devices, mTLS).
    #[arg(long, global = true)]
    mqtt_listen: Option<std::net::SocketAddr>,
    /// Overrides `api.listen`.
    #[arg(long, global = true)]
    api_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Run,
    /// Run the hub with a simulated center of devices connecting over mTLS.
    Demo {
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
    },
    /// Print the complete, commented default configuration.
    PrintDefaultConfig,
    /// Read a password on stdin and print its Argon2 hash (for broker.plain.users).
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.as_ref().unwrap_or(&Command::Run);
    match command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            return ExitCode::SUCCESS;
        }
        Command::HashPassword => return report(hash_password()),
        Command::Run | Command::Demo { .. } => {}
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hub: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return report(Err(error.into())),
    };
    let result = match command {
        Command::Demo {
            centers,
            device_dir,
            speed,
        } => runtime.block_on(demo(config, *centers, device_dir.clone(), *speed)),
        _ => runtime.block_on(run(config)),
    };
    // rumqttd's listener threads never stop; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    report(result)
}

/// Exit status after a supervised component went down (any non-zero
/// status makes systemd or Kubernetes restart the hub; this one says why).
const COMPONENT_DOWN: u8 = 3;

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hub: {error:#}");
            match error.downcast_ref::<hub::HubError>() {
                Some(hub::HubError::ComponentsDown(_)) => ExitCode::from(COMPONENT_DOWN),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(addr) = cli.mqtt_listen {
        config.broker.listen = addr;
    }
    if let Some(addr) = cli.api_listen {
        config.api.listen = addr;
    }
    config.validate()?;
    Ok(config)
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::new(&config.log.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // rumqttd opens an ERROR-level span per routed message, with the
    // topic formatted into it: kept, they cost its router thread a tenth
    // of its time under load. Its events (errors) still get through.
    let no_router_spans = tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target().starts_with("rumqttd"))
    });
    match config.log.format {
        LogFormat::Json => builder.json().finish().with(no_router_spans).init(),
        LogFormat::Text => builder.finish().with(no_router_spans).init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let hub = hub::Hub::start(config).await?;
    bound_shutdown(&hub);
    hub.run_until(stop.cancelled_owned())
        .await
        .context("hub failed")
}

/// The rooms of the simulated centers: the 24-hour gym behind the gates and
/// the seated rooms, open in the centers' hours.
fn simulated_rooms(centers: usize) -> Vec<hub::config::RoomConfig> {
    let profile = device_sim::crowd::Profile::default();
    let hhmm = |t: chrono::NaiveTime| t.format("%H:%M").to_string();
    device_sim::plan::default_center_names(centers)
        .into_iter()
        .flat_map(|center| {
            let gym = hub::config::RoomConfig {
                center: center.clone(),
                id: "gym".into(),
                capacity: device_sim::crowd::GYM_CAPACITY,
                hours: Some("24h".into()),
                open: None,
                close: None,
            };
            let seated = profile
                .rooms
                .iter()
                .map(move |room| hub::config::RoomConfig {
                    center: center.clone(),
                    id: room.name.clone(),
                    capacity: room.seats,
                    hours: None,
                    open: Some(hhmm(profile.opens)),
                    close: Some(hhmm(profile.closes)),
                });
            std::iter::once(gym).chain(seated.collect::<Vec<_>>())
        })
        .collect()
}

/// The hub plus a simulated center whose devices provision themselves
/// through the API and connect over mTLS.
async fn demo(
    mut config: Config,
    centers: usize,
    device_dir: PathBuf,
    speed: f64,
) -> anyhow::Result<()> {
    let token = std::env::var(hub::config::ADMIN_TOKEN_ENV)
        .unwrap_or_else(|_| hub::secrets::random_secret());
    config.api.admin_token_sha256 = hub::secrets::sha256_hex(&token);
    config.ingest = config.ingest.for_simulated_clocks();
    if config.rooms.is_empty() {
        config.rooms = simulated_rooms(centers);
    }
    if config.rooms.is_empty() {
        config.rooms = simulated_rooms(centers);
    }
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let hub = hub::Hub::start(config).await?;
    bound_shutdown(&hub);
    let api = format!("http://{}", hub.api_addr());
    println!("Demo hub running. Admin token: {token}");
    println!("  curl -H 'Authorization: Bearer {token}' {api}/api/v1/devices");
    println!("  curl -H 'Authorization: Bearer {token}' {api}/metrics");
    let fleet = device_sim::FleetConfig {
        api_url: api,
        admin_token: token,
        mqtt_host: "localhost".into(),
        mqtt_port: hub.device_addr().port(),
        centers,
        cert_dir: device_dir,
        speed,
        ..device_sim::FleetConfig::default()
    };
    let fleet_stop = stop.child_token();
    let fleet = tokio::spawn(device_sim::run_fleet(fleet, fleet_stop));
    let hub_stop = stop.clone();
    hub.run_until(async move {
        hub_stop.cancelled().await;
        // Let the simulated devices say goodbye before the hub stops.
        let _ = tokio::time::timeout(Duration::from_secs(2), fleet).await;
    })
    .await
    .context("hub failed")
}

/// Once the hub stops for any reason (a signal, a component going down),
/// it has the grace period to finish.
fn bound_shutdown(hub: &hub::Hub) {
    let stopping = hub.stopping();
    tokio::spawn(async move {
        stopping.cancelled().await;
        exit_after_grace_period();
    });
}

/// After the shutdown signal the hub has 5 s to stop cleanly; past that the
/// process exits with an error rather than hang. Armed once.
fn exit_after_grace_period() {
    static ARMED: std::sync::Once = std::sync::Once::new();
    ARMED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(4_500));
            eprintln!("hub: shutdown took longer than 4.5 s; exiting");
            std::process::exit(1);
        });
    });
}

async fn cancel_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = sigint.recv() => tracing::info!("SIGINT"),
        _ = sigterm.recv() => tracing::info!("SIGTERM"),
    }
    stop.cancel();
    exit_after_grace_period();
}

fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let hash = hub::secrets::hash_password(password.trim_end_matches(['\r', '\n']))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}
