//! What the binaries print and exit with: the statuses a process manager
//! reads (any non-zero one makes systemd or Kubernetes restart the
//! service; these say why), and `check-config`'s answer.

use std::process::ExitCode;

use serde::Serialize;

use crate::config::ConfigError;

/// The configuration is invalid (the message names the field), or the
/// start was refused for what an operator must fix.
pub const INVALID_CONFIGURATION: u8 = 2;

/// The service stopped by itself: a part it needs went down.
pub const STOPPED_BY_ITSELF: u8 = 3;

/// `{program}: invalid configuration: …` on stderr; exit 2.
pub fn invalid_configuration(program: &str, error: &ConfigError) -> ExitCode {
    eprintln!("{program}: invalid configuration: {error}");
    ExitCode::from(INVALID_CONFIGURATION)
}

/// `check-config`'s answer: the configuration as checked, its secrets
/// already masked, printed as TOML under a header naming where it came
/// from (`vars`: the variables' pattern); or the refusal, exit 2.
pub fn check_config<C: Serialize>(
    program: &str,
    vars: &str,
    checked: Result<C, ConfigError>,
) -> ExitCode {
    let masked = match checked {
        Ok(masked) => masked,
        Err(error) => return invalid_configuration(program, &error),
    };
    match toml::to_string(&masked) {
        Ok(text) => {
            println!("# The effective configuration: defaults, the file, {vars} variables");
            println!("# and the command line; secrets masked. It is valid.");
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}
