//! The log: its filter (`RUST_LOG` over the configuration's `log.filter`)
//! and its format, written to stderr.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::config::{invalid, ConfigError};

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Which log lines are written.
pub struct LogFilter {
    pub filter: EnvFilter,
    /// `RUST_LOG`'s directives, when they are the ones used.
    pub rust_log: Option<String>,
}

/// `RUST_LOG` when set, else `configured` (`log.filter`); a bad one is
/// refused naming the one it came from.
pub fn filter(configured: &str) -> Result<LogFilter, ConfigError> {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let (field, directives) = match &rust_log {
        Some(value) => (EnvFilter::DEFAULT_ENV, value.as_str()),
        None => ("log.filter", configured),
    };
    let filter =
        EnvFilter::try_new(directives).map_err(|error| invalid(field, error.to_string()))?;
    Ok(LogFilter { filter, rust_log })
}

/// Writes the lines `filter` lets through, and of those only the ones
/// `keep` accepts, to stderr in `format` (colours on a terminal only).
pub fn init(
    format: LogFormat,
    filter: EnvFilter,
    keep: impl Fn(&tracing::Metadata<'_>) -> bool + Send + Sync + 'static,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let keep = tracing_subscriber::filter::filter_fn(keep);
    match format {
        LogFormat::Json => builder.json().finish().with(keep).init(),
        LogFormat::Text => builder.finish().with(keep).init(),
    }
}
