//! The `hub` binary: parses arguments, loads and parses the configuration
//! (exit 2 naming the field when it is invalid, and when the start is
//! refused for the data dir or the credential key), sets up tracing
//! (`RUST_LOG` over `log.filter`) and runs the library until SIGINT or
//! SIGTERM.
//! `check-config` stops after the parse and prints the effective
//! configuration with its secrets masked; `print-routes` lists the API,
//! `print-openapi` prints its OpenAPI document.
//! The simulated center of the README's first command is `device-sim
//! demo`, which starts this binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hub::settings::{Config, ConfigError, Settings, DEFAULT_CONFIG_TOML};
use service::exit::{INVALID_CONFIGURATION, STOPPED_BY_ITSELF};
use service::log::LogFilter;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "hub",
    version = VERSION,
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

/// `hub --version`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HUB_BUILD_COMMIT"),
    ")"
);

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Run,
    /// Check the configuration (file, YIZHAN_* variables, command line):
    /// print it with secrets masked and exit 0, or name the bad field and
    /// exit 2.
    CheckConfig,
    /// Print the complete, commented default configuration.
    PrintDefaultConfig,
    /// Print every route of the HTTP API, one `METHOD /path roles` a line
    /// (`anyone`, or the roles that may call it, comma-separated).
    PrintRoutes,
    /// Print the HTTP API's OpenAPI document (what `GET
    /// /api/v1/openapi.json` serves).
    PrintOpenapi,
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
        Command::PrintRoutes => {
            for route in hub::api::endpoints() {
                println!("{} {} {}", route.method, route.path, route.allowed);
            }
            return ExitCode::SUCCESS;
        }
        Command::PrintOpenapi => return report(print_openapi()),
        Command::HashPassword => return report(hash_password()),
        Command::CheckConfig => return check_config(&cli),
        Command::Run => {}
    }
    let (settings, filter) = match load_settings(&cli) {
        Ok(loaded) => loaded,
        Err(error) => return service::exit::invalid_configuration("hub", &error),
    };
    init_tracing(&settings, filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return report(Err(error.into())),
    };
    let result = runtime.block_on(run(settings));
    // rumqttd's listener threads never stop; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    report(result)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hub: {error:#}");
            match error.downcast_ref::<hub::HubError>() {
                Some(hub::HubError::ComponentsDown(_)) => ExitCode::from(STOPPED_BY_ITSELF),
                Some(refused) if refused.needs_operator() => ExitCode::from(INVALID_CONFIGURATION),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `hub check-config`: the effective configuration, secrets masked, after
/// the same checks as a start.
fn check_config(cli: &Cli) -> ExitCode {
    let checked = merged_config(cli).and_then(|config| {
        service::log::filter(&config.log.filter)?;
        Settings::parse(config.clone())?;
        Ok(config.masked())
    });
    service::exit::check_config("hub", "YIZHAN_*", checked)
}

/// The file and `YIZHAN_*` variables, then the command line's overrides.
fn merged_config(cli: &Cli) -> Result<Config, ConfigError> {
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
    Ok(config)
}

/// The merged configuration with every value parsed once, and the log
/// filter.
fn load_settings(cli: &Cli) -> Result<(Settings, LogFilter), ConfigError> {
    let config = merged_config(cli)?;
    let filter = service::log::filter(&config.log.filter)?;
    Ok((Settings::parse(config)?, filter))
}

/// Writes the log: rumqttd's spans are dropped unless `RUST_LOG` asks for
/// rumqttd. It opens an ERROR-level span per routed message, with the
/// topic formatted into it: kept, they cost its router thread a tenth of
/// its time under load. Its events (errors) still get through.
fn init_tracing(settings: &Settings, filter: LogFilter) {
    let keep_spans = filter
        .rust_log
        .is_some_and(|directives| directives.contains("rumqttd"));
    service::log::init(settings.log.format, filter.filter, move |metadata| {
        keep_spans || !(metadata.is_span() && metadata.target().starts_with("rumqttd"))
    });
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let hub = hub::Hub::start(settings).await?;
    bound_shutdown(&hub);
    hub.run_until(stop.cancelled_owned())
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
    service::signal::terminated().await;
    stop.cancel();
    exit_after_grace_period();
}

fn print_openapi() -> anyhow::Result<()> {
    println!("{}", hub::api::document().to_pretty_json()?);
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let hash = hub::secrets::hash_password(password.trim_end_matches(['\r', '\n']))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}
