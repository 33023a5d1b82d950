//! The `district` binary: parses arguments, loads and parses the
//! configuration (exit 2 naming the field when it is invalid), sets up
//! tracing (`RUST_LOG` over `log.filter`) and runs the library until
//! SIGINT or SIGTERM. Exit 3 when the service stopped by itself (its store
//! failed), so a process manager restarts it. `keygen` makes the downlink's
//! signing key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use district::settings::{Config, ConfigError, LogFormat, Settings, DEFAULT_CONFIG_TOML};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "district",
    version,
    about = "Yizhan district service: the district's view from every center's uplink"
)]
struct Cli {
    /// TOML configuration file (every key optional; see print-default-config).
    #[arg(long, short, global = true, env = "DISTRICT_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Overrides `api.listen`.
    #[arg(long, global = true)]
    api_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Check the configuration: print it with secrets masked and exit 0,
    /// or name the bad field and exit 2.
    CheckConfig,
    /// Print the complete, commented default configuration.
    PrintDefaultConfig,
    /// Make an Ed25519 key pair for signing commands: the private key into
    /// a new file (mode 0600) for `[downlink] key_file`; prints the key id
    /// and public key for the hubs' `[uplink.downlink] keys`.
    Keygen {
        /// The private key's file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Exit status of an invalid configuration.
const INVALID_CONFIGURATION: u8 = 2;
/// Exit status after the service stopped by itself.
const STOPPED_BY_ITSELF: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig => check_config(&cli),
        Command::Run => run(&cli),
        Command::Keygen { out } => keygen(out),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    match district::keygen::write_new_key(out) {
        Ok(public) => {
            println!("key id: {}", public.key_id);
            println!("public key: {}", public.hex);
            println!("# the hubs' [uplink.downlink]:");
            println!("keys = {{ \"{}\" = \"{}\" }}", public.key_id, public.hex);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("district: keygen: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> ExitCode {
    let (settings, filter) = match load(cli) {
        Ok(loaded) => loaded,
        Err(error) => return invalid(&error),
    };
    init_tracing(settings.log.format, filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("district: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let district = district::District::start(settings).await?;
        district.run_until(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ district::DistrictError::Source(_)) => {
            eprintln!("district: {error}");
            ExitCode::from(STOPPED_BY_ITSELF)
        }
        Err(error) => {
            eprintln!("district: {error}");
            ExitCode::FAILURE
        }
    }
}

fn invalid(error: &ConfigError) -> ExitCode {
    eprintln!("district: invalid configuration: {error}");
    ExitCode::from(INVALID_CONFIGURATION)
}

fn merged(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(addr) = cli.api_listen {
        config.api.listen = addr;
    }
    Ok(config)
}

fn load(cli: &Cli) -> Result<(Settings, EnvFilter), ConfigError> {
    let config = merged(cli)?;
    let filter = log_filter(&config)?;
    Ok((Settings::parse(config)?, filter))
}

fn check_config(cli: &Cli) -> ExitCode {
    let checked = merged(cli).and_then(|config| {
        log_filter(&config)?;
        Settings::parse(config.clone())?;
        Ok(config)
    });
    let config = match checked {
        Ok(config) => config,
        Err(error) => return invalid(&error),
    };
    match toml::to_string(&config.masked()) {
        Ok(text) => {
            println!("# The effective configuration: defaults, the file, DISTRICT_* variables");
            println!("# and the command line; secrets masked. It is valid.");
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("district: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` when set, else `log.filter`; a bad one names its source.
fn log_filter(config: &Config) -> Result<EnvFilter, ConfigError> {
    let (field, directives) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) => (EnvFilter::DEFAULT_ENV, value),
        Err(_) => ("log.filter", config.log.filter.clone()),
    };
    EnvFilter::try_new(&directives).map_err(|error| ConfigError::Invalid {
        field: field.into(),
        reason: error.to_string(),
    })
}

fn init_tracing(format: LogFormat, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = sigint.recv() => tracing::info!("SIGINT"),
        _ = sigterm.recv() => tracing::info!("SIGTERM"),
    }
}
