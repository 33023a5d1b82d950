//! The `district` binary: parses arguments, loads and parses the
//! configuration (exit 2 naming the field when it is invalid), sets up
//! tracing (`RUST_LOG` over `log.filter`) and runs the library until
//! SIGINT or SIGTERM. Exit 3 when the service stopped by itself (its store
//! failed), so a process manager restarts it. `keygen` makes the downlink's
//! signing key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use district::settings::{Config, ConfigError, Settings, DEFAULT_CONFIG_TOML};
use service::exit::STOPPED_BY_ITSELF;
use service::log::LogFilter;

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
        Err(error) => return service::exit::invalid_configuration("district", &error),
    };
    service::log::init(settings.log.format, filter.filter, |_| true);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("district: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let district = district::District::start(settings).await?;
        district.run_until(service::signal::terminated()).await
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

fn load(cli: &Cli) -> Result<(Settings, LogFilter), ConfigError> {
    let config = merged(cli)?;
    let filter = service::log::filter(&config.log.filter)?;
    Ok((Settings::parse(config)?, filter))
}

fn check_config(cli: &Cli) -> ExitCode {
    let checked = merged(cli).and_then(|config| {
        service::log::filter(&config.log.filter)?;
        Settings::parse(config.clone())?;
        Ok(config.masked())
    });
    service::exit::check_config("district", "DISTRICT_*", checked)
}
