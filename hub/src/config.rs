//! The hub's configuration: one serde tree, loaded from a TOML file plus
//! `YIZHAN_*` environment overrides, validated before anything starts.
//!
//! `DEFAULT_CONFIG_TOML` is the commented file `hub print-default-config`
//! prints; a unit test keeps it equal to `Config::default()`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Environment variable that carries the admin token in plain text. It is
/// hashed as soon as it is read and never written anywhere.
pub const ADMIN_TOKEN_ENV: &str = "YIZHAN_ADMIN_TOKEN";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for sled, the CA and the broker's TLS files.
    pub data_dir: PathBuf,
    pub broker: BrokerConfig,
    pub ingest: IngestConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Public mTLS listener for devices.
    pub listen: SocketAddr,
    /// DNS names (and IPs) in the broker's server certificate. Devices must
    /// use one of the DNS names as TLS server name.
    pub server_names: Vec<String>,
    /// Days an issued device certificate stays valid.
    pub device_cert_days: u32,
    /// Largest MQTT packet the broker accepts, in bytes.
    pub max_packet_bytes: usize,
    pub max_connections: usize,
    /// In-memory log per subscription filter: segment size and count.
    pub segment_bytes: usize,
    pub segment_count: usize,
    /// Time a client has after TCP connect to send its TLS ClientHello,
    /// and the bound on every later handshake flight.
    pub handshake_timeout_ms: u64,
    /// Handshakes in progress at once from one source address.
    pub max_handshakes_per_ip: usize,
    pub plain: PlainListenerConfig,
}

/// Optional password-only MQTT listener for local tools (loopback only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlainListenerConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub users: Vec<PlainUser>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainUser {
    pub username: String,
    /// Argon2 PHC string (`hub hash-password` prints one).
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Larger payloads are rejected with reason `oversize`.
    pub max_payload_bytes: usize,
    /// Most messages applied to twins per batch (one sled flush per batch
    /// that holds events).
    pub batch_max: usize,
    /// Keepalive assumed for a device whose birth does not state one.
    pub default_keepalive_secs: u16,
    /// At most one log line per rejection reason per this many ms.
    pub rejection_log_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// SHA-256 (hex) of the admin token. Empty: taken from
    /// `YIZHAN_ADMIN_TOKEN`, else generated at first start and printed once.
    pub admin_token_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// tracing filter directive, e.g. `info` or `hub=debug,rumqttd=warn`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            broker: BrokerConfig::default(),
            ingest: IngestConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            server_names: vec!["localhost".into()],
            device_cert_days: 365,
            max_packet_bytes: 64 * 1024,
            max_connections: 20_000,
            segment_bytes: 16 * 1024 * 1024,
            segment_count: 4,
            handshake_timeout_ms: 2_000,
            max_handshakes_per_ip: 64,
            plain: PlainListenerConfig::default(),
        }
    }
}

impl Default for PlainListenerConfig {
    fn default() -> Self {
        PlainListenerConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            users: Vec::new(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_payload_bytes: 16 * 1024,
            batch_max: 1024,
            default_keepalive_secs: 30,
            rejection_log_interval_ms: 5_000,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token_sha256: String::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info,rumqttd=warn".into(),
        }
    }
}

/// The complete, commented configuration file with every default.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Yizhan hub configuration. Every key is optional; these are the defaults.
# Any key can be overridden from the environment: YIZHAN_<SECTION>__<KEY>,
# e.g. YIZHAN_API__LISTEN=0.0.0.0:8080 or YIZHAN_DATA_DIR=/var/lib/yizhan.
# The admin token may be given in plain text as YIZHAN_ADMIN_TOKEN.

# sled database, the hub's CA (key mode 0600) and the broker's TLS files.
data_dir = "./data"

[broker]
# Public MQTT-over-mTLS listener for devices.
listen = "0.0.0.0:8883"
# Names in the broker's server certificate; devices use one as TLS server
# name (the broker refuses an IP address as SNI).
server_names = ["localhost"]
# Validity of an issued device certificate, in days.
device_cert_days = 365
# Largest MQTT packet accepted, in bytes.
max_packet_bytes = 65536
max_connections = 20000
# rumqttd keeps an in-memory log per subscription filter of
# segment_bytes x segment_count; older messages are dropped by size.
segment_bytes = 16777216
segment_count = 4
# A client must send its TLS ClientHello within this time after connecting,
# and every later handshake flight within it too.
handshake_timeout_ms = 2000
# TLS handshakes in progress at once from one source address.
max_handshakes_per_ip = 64

[broker.plain]
# Password-only MQTT listener for local tools. Loopback only. Clients on it
# are not confined to a device's topics, so it is off by default.
enabled = false
listen = "127.0.0.1:1883"
# users = [{ username = "tool", password_hash = "$argon2id$..." }]
users = []

[ingest]
# Larger payloads are rejected with reason "oversize".
max_payload_bytes = 16384
# Most messages applied to twins per batch.
batch_max = 1024
# Keepalive assumed for a device whose birth message states none (seconds).
default_keepalive_secs = 30
# At most one log line per rejection reason per interval.
rejection_log_interval_ms = 5000

[api]
listen = "127.0.0.1:8080"
# SHA-256 (hex) of the admin token. Empty: YIZHAN_ADMIN_TOKEN is used, or a
# token is generated at first start, printed once, and its hash kept in
# data_dir/admin_token.sha256.
admin_token_sha256 = ""

[log]
# "text" or "json"
format = "text"
filter = "info,rumqttd=warn"
"#;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid value for `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Loads defaults, then `file` (if given), then `YIZHAN_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("YIZHAN_")
            .split("__")
            .ignore(&["admin_token", "config"]);
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.broker.server_names.is_empty() {
            return invalid("broker.server_names", "at least one name is required");
        }
        if self.broker.segment_bytes < 1024 {
            return invalid("broker.segment_bytes", "must be at least 1024");
        }
        if self.broker.segment_count == 0 {
            return invalid("broker.segment_count", "must be at least 1");
        }
        if self.broker.max_handshakes_per_ip == 0 {
            return invalid("broker.max_handshakes_per_ip", "must be at least 1");
        }
        if self.broker.device_cert_days == 0 {
            return invalid("broker.device_cert_days", "must be at least 1");
        }
        if self.broker.plain.enabled && !self.broker.plain.listen.ip().is_loopback() {
            return invalid(
                "broker.plain.listen",
                "the plain listener binds loopback only",
            );
        }
        if self.ingest.batch_max == 0 {
            return invalid("ingest.batch_max", "must be at least 1");
        }
        if self.ingest.default_keepalive_secs == 0 {
            return invalid("ingest.default_keepalive_secs", "must be at least 1");
        }
        let hash = &self.api.admin_token_sha256;
        if !hash.is_empty() && (hash.len() != 64 || hex::decode(hash).is_err()) {
            return invalid("api.admin_token_sha256", "must be 64 hex digits");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_default_file_equals_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_and_invalid_fields_are_named() {
        let dir = std::env::temp_dir().join(format!("yizhan-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |text: &str, needle: &str| {
            let path = dir.join("c.toml");
            std::fs::write(&path, text).unwrap();
            let err = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should name {needle:?}");
        };
        check("[api]\nlisten = \"nope\"\n", "api.listen");
        check("[broker]\nbogus = 1\n", "bogus");
        check("[broker]\nsegment_count = 0\n", "broker.segment_count");
        check(
            "[broker.plain]\nenabled = true\nlisten = \"0.0.0.0:1883\"\n",
            "broker.plain.listen",
        );
    }
}
