//! The district service's configuration: one serde tree (unknown fields
//! refused) from defaults, a TOML file and `DISTRICT_*` variables
//! (`DISTRICT_API__LISTEN`), parsed once into typed values before anything
//! starts. A bad value names its field; `district` exits 2.
//!
//! Secrets come from the environment (`protocol::secret`): the API's
//! bearer token (`DISTRICT_TOKEN` or `DISTRICT_TOKEN_FILE`, or its SHA-256
//! as `api.token_sha256`), the scrape-only token (`DISTRICT_METRICS_TOKEN`,
//! `_FILE`), the source's password (`DISTRICT_SOURCE_PASSWORD`, `_FILE`)
//! and the downlink's (`DISTRICT_DOWNLINK_PASSWORD`, `_FILE`). The
//! downlink's signing key is read from `downlink.key_file`, which only its
//! owner may read (0600); it is never printed or logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::calendar::Calendar;
use protocol::secret::{self, SecretVars};
use protocol::upstream::{key_id, parse_signing_key, SigningKey};
use serde::{Deserialize, Serialize};
use service::config::invalid;
pub use service::config::ConfigError;
pub use service::log::LogFormat;

/// The file's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The district's store (sled) and `endpoints.json`.
    pub data_dir: PathBuf,
    /// The centers' time zone: the local day of alarms, events and
    /// bookings (visits come with their day).
    pub time_zone: String,
    pub api: ApiConfig,
    pub source: SourceConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub downlink: DownlinkConfig,
}

/// Commands to devices through the hubs' upstream (docs/upstream.md,
/// "Downlink").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownlinkConfig {
    /// The Ed25519 private key (`district keygen`), a file only its owner
    /// may read. Empty: commands are off.
    pub key_file: String,
    /// The brokers commands are published on, `mqtt://host:port` (tried in
    /// turn). Empty: the source's URLs when `source.kind = "mqtt"`.
    pub urls: Vec<String>,
    /// Empty: the source's username and password.
    pub username: String,
    /// Empty: `DISTRICT_DOWNLINK_PASSWORD` or `_FILE`, else the source's.
    pub password: String,
    /// The publishing session's client id; empty: `{source.consumer}-commands`.
    pub client_id: String,
    /// The longest a command may stay deliverable (1 s to 1 d); the hubs'
    /// `max_lifetime_secs` must be at least this.
    pub max_lifetime_secs: u64,
    /// How long a command request waits for the broker's PUBACK.
    pub publish_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// SHA-256 (hex) of the API's bearer token; empty: `DISTRICT_TOKEN`
    /// or the file `DISTRICT_TOKEN_FILE` names. Required.
    pub token_sha256: String,
    /// SHA-256 of a token that may read `/metrics` only; empty:
    /// `DISTRICT_METRICS_TOKEN` or `_FILE`, else none.
    pub metrics_token_sha256: String,
}

/// Where the hubs' messages are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A JetStream durable consumer (NATS with MQTT enabled).
    Nats,
    /// A persistent MQTT session (EMQX, mosquitto, any MQTT 3.1.1 broker).
    Mqtt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// `nats://host:port` (kind nats) or `mqtt://host:port` (kind mqtt),
    /// every node of the cluster.
    pub urls: Vec<String>,
    pub username: String,
    /// Empty: `DISTRICT_SOURCE_PASSWORD` or `_FILE`, else none.
    pub password: String,
    /// NATS: the stream holding the hubs' QoS 1 messages. NATS's MQTT
    /// keeps them in `$MQTT_msgs` (interest retention: a message is kept
    /// until every consumer interested in it acknowledged it).
    pub stream: String,
    /// NATS: the consumer's filter; MQTT topic `yz/v1/c/x` is subject
    /// `yz.v1.c.x`, stored as `$MQTT.msgs.yz.v1.c.x`.
    pub subject: String,
    /// NATS: the durable consumer's name. MQTT: the client id.
    pub consumer: String,
    /// NATS: replicas of the stream when the district creates it (before
    /// any MQTT client did).
    pub stream_replicas: usize,
    /// NATS: a message not acknowledged within this is delivered again.
    pub ack_wait_secs: u64,
    /// Messages applied and flushed together, at most.
    pub batch: usize,
    pub connect_timeout_secs: u64,
    /// MQTT keepalive.
    pub keepalive_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a message id is remembered to drop a resend.
    pub dedupe_days: u64,
    /// Alarms listed by `/alarms`, at most (older ones are pruned).
    pub max_alarms: usize,
    /// Refused messages kept for inspection, at most.
    pub max_rejected: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing's filter; `RUST_LOG` wins.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./district-data"),
            time_zone: "Asia/Shanghai".into(),
            api: ApiConfig::default(),
            source: SourceConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            downlink: DownlinkConfig::default(),
        }
    }
}

impl Default for DownlinkConfig {
    fn default() -> Self {
        DownlinkConfig {
            key_file: String::new(),
            urls: Vec::new(),
            username: String::new(),
            password: String::new(),
            client_id: String::new(),
            max_lifetime_secs: 600,
            publish_timeout_secs: 5,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            token_sha256: String::new(),
            metrics_token_sha256: String::new(),
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Nats,
            urls: vec!["nats://127.0.0.1:4222".into()],
            username: String::new(),
            password: String::new(),
            stream: "$MQTT_msgs".into(),
            subject: "$MQTT.msgs.yz.v1.>".into(),
            consumer: "district".into(),
            stream_replicas: 3,
            ack_wait_secs: 30,
            batch: 512,
            connect_timeout_secs: 5,
            keepalive_secs: 10,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dedupe_days: 30,
            max_alarms: 100_000,
            max_rejected: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The printed default file (`district print-default-config`).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../district.example.toml");

/// Shown instead of a secret.
pub const MASKED: &str = "<masked>";

const TOKEN: SecretVars = SecretVars {
    field: "api.token_sha256",
    plain: "DISTRICT_TOKEN",
    file: "DISTRICT_TOKEN_FILE",
};

const METRICS_TOKEN: SecretVars = SecretVars {
    field: "api.metrics_token_sha256",
    plain: "DISTRICT_METRICS_TOKEN",
    file: "DISTRICT_METRICS_TOKEN_FILE",
};

const SOURCE_PASSWORD: SecretVars = SecretVars {
    field: "source.password",
    plain: "DISTRICT_SOURCE_PASSWORD",
    file: "DISTRICT_SOURCE_PASSWORD_FILE",
};

const DOWNLINK_PASSWORD: SecretVars = SecretVars {
    field: "downlink.password",
    plain: "DISTRICT_DOWNLINK_PASSWORD",
    file: "DISTRICT_DOWNLINK_PASSWORD_FILE",
};

/// The shortest bearer token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

impl Config {
    /// Defaults, then `file` (if given), then `DISTRICT_*` variables, then
    /// the secrets from the environment. Unchecked: `Settings::parse`
    /// checks the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(file, &|name| std::env::var(name).ok())
    }

    fn load_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = service::config::load(
            file,
            "DISTRICT_",
            &[
                "token",
                "token_file",
                "metrics_token",
                "metrics_token_file",
                "source_password",
                "source_password_file",
                "downlink_password",
                "downlink_password_file",
                "config",
            ],
        )?;
        for (vars, hash) in [
            (TOKEN, &mut config.api.token_sha256),
            (METRICS_TOKEN, &mut config.api.metrics_token_sha256),
        ] {
            if hash.is_empty() {
                if let Some(token) = secret::token(vars, MIN_TOKEN_CHARS, env)? {
                    *hash = secret::sha256_hex(&token);
                }
            }
        }
        for (vars, password) in [
            (SOURCE_PASSWORD, &mut config.source.password),
            (DOWNLINK_PASSWORD, &mut config.downlink.password),
        ] {
            if password.is_empty() {
                if let Some((secret, _)) = secret::read(vars, env)? {
                    *password = secret;
                }
            }
        }
        Ok(config)
    }

    /// The configuration with its secrets replaced by `MASKED`.
    pub fn masked(&self) -> Config {
        let mut config = self.clone();
        for secret in [
            &mut config.api.token_sha256,
            &mut config.api.metrics_token_sha256,
            &mut config.source.password,
            &mut config.downlink.password,
        ] {
            if !secret.is_empty() {
                *secret = MASKED.into();
            }
        }
        config
    }
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// The source, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: SourceKind,
    pub endpoints: Vec<Endpoint>,
    pub credentials: Option<(String, String)>,
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub stream_replicas: usize,
    pub ack_wait: Duration,
    pub batch: usize,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
}

/// The configuration checked and parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub calendar: Calendar,
    pub listen: SocketAddr,
    pub token_sha256: String,
    pub metrics_token_sha256: Option<String>,
    pub source: Source,
    pub dedupe: Duration,
    pub max_alarms: usize,
    pub max_rejected: usize,
    pub log: LogConfig,
    /// Commands to devices; `None` without a key.
    pub downlink: Option<Downlink>,
}

/// The downlink, parsed.
#[derive(Clone)]
pub struct Downlink {
    /// The private key (never printed: no `Debug`).
    pub signer: SigningKey,
    pub endpoints: Vec<Endpoint>,
    pub credentials: Option<(String, String)>,
    pub client_id: String,
    pub max_lifetime: Duration,
    pub publish_timeout: Duration,
}

impl std::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downlink")
            .field("key", &key_id(&self.signer.verifying_key()))
            .field("endpoints", &self.endpoints)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Checks what serde cannot; the first bad value names its field.
    pub fn parse(config: Config) -> Result<Settings, ConfigError> {
        let calendar = Calendar {
            tz: config
                .time_zone
                .parse()
                .map_err(|_| invalid("time_zone", "not an IANA time zone name"))?,
        };
        let token_sha256 =
            check_hash("api.token_sha256", &config.api.token_sha256)?.ok_or_else(|| {
                invalid(
                    "api.token_sha256",
                    "a bearer token is required: set DISTRICT_TOKEN or DISTRICT_TOKEN_FILE",
                )
            })?;
        let metrics_token_sha256 =
            check_hash("api.metrics_token_sha256", &config.api.metrics_token_sha256)?;
        let store = &config.store;
        if !(1..=3650).contains(&store.dedupe_days) {
            return Err(invalid("store.dedupe_days", "must be between 1 and 3650"));
        }
        if store.max_alarms == 0 || store.max_rejected == 0 {
            let field = match store.max_alarms {
                0 => "store.max_alarms",
                _ => "store.max_rejected",
            };
            return Err(invalid(field, "must be at least 1"));
        }
        let source = parse_source(&config.source)?;
        let downlink = parse_downlink(&config.downlink, &config.source)?;
        Ok(Settings {
            data_dir: config.data_dir.clone(),
            calendar,
            listen: config.api.listen,
            token_sha256,
            metrics_token_sha256,
            source,
            dedupe: Duration::from_secs(store.dedupe_days * 86_400),
            max_alarms: store.max_alarms,
            max_rejected: store.max_rejected,
            log: config.log,
            downlink,
        })
    }
}

/// A SHA-256 in hex, or `None` when empty.
fn check_hash(field: &str, hash: &str) -> Result<Option<String>, ConfigError> {
    if hash.is_empty() {
        return Ok(None);
    }
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(field, "expected a SHA-256 as 64 hex digits"));
    }
    Ok(Some(hash.to_ascii_lowercase()))
}

fn parse_source(config: &SourceConfig) -> Result<Source, ConfigError> {
    let scheme = match config.kind {
        SourceKind::Nats => "nats",
        SourceKind::Mqtt => "mqtt",
    };
    if config.urls.is_empty() {
        return Err(invalid("source.urls", "at least one URL is required"));
    }
    let endpoints = config
        .urls
        .iter()
        .enumerate()
        .map(|(index, url)| {
            parse_url(url, scheme)
                .map_err(|reason| invalid(&format!("source.urls[{index}]"), &reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !config.password.is_empty() && config.username.is_empty() {
        return Err(invalid("source.username", "required with a password"));
    }
    let name_ok = |name: &str| {
        (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    };
    if !name_ok(&config.consumer) {
        return Err(invalid(
            "source.consumer",
            "1-64 ASCII letters, digits, '-' or '_'",
        ));
    }
    let subject_ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    if !subject_ok(&config.stream) || config.stream.contains(['.', '*', '>']) {
        return Err(invalid(
            "source.stream",
            "a stream name: no spaces, '.', '*' or '>'",
        ));
    }
    if !subject_ok(&config.subject) {
        return Err(invalid("source.subject", "a NATS subject without spaces"));
    }
    if !(1..=5).contains(&config.stream_replicas) {
        return Err(invalid("source.stream_replicas", "must be between 1 and 5"));
    }
    for (field, value, range) in [
        ("source.ack_wait_secs", config.ack_wait_secs, 1..=3600),
        ("source.batch", config.batch as u64, 1..=10_000),
        (
            "source.connect_timeout_secs",
            config.connect_timeout_secs,
            1..=300,
        ),
        ("source.keepalive_secs", config.keepalive_secs, 1..=65_535),
    ] {
        if !range.contains(&value) {
            let reason = format!("must be between {} and {}", range.start(), range.end());
            return Err(invalid(field, &reason));
        }
    }
    let credentials =
        (!config.username.is_empty()).then(|| (config.username.clone(), config.password.clone()));
    Ok(Source {
        kind: config.kind,
        endpoints,
        credentials,
        stream: config.stream.clone(),
        subject: config.subject.clone(),
        consumer: config.consumer.clone(),
        stream_replicas: config.stream_replicas,
        ack_wait: Duration::from_secs(config.ack_wait_secs),
        batch: config.batch,
        connect_timeout: Duration::from_secs(config.connect_timeout_secs),
        keepalive: Duration::from_secs(config.keepalive_secs),
    })
}

/// `[downlink]`: `None` without a key file.
fn parse_downlink(
    config: &DownlinkConfig,
    source: &SourceConfig,
) -> Result<Option<Downlink>, ConfigError> {
    for (field, value, range) in [
        (
            "downlink.max_lifetime_secs",
            config.max_lifetime_secs,
            1..=86_400,
        ),
        (
            "downlink.publish_timeout_secs",
            config.publish_timeout_secs,
            1..=300,
        ),
    ] {
        if !range.contains(&value) {
            let reason = format!("must be between {} and {}", range.start(), range.end());
            return Err(invalid(field, &reason));
        }
    }
    if config.key_file.is_empty() {
        return Ok(None);
    }
    let signer = read_signing_key(Path::new(&config.key_file))?;
    let urls = match (config.urls.is_empty(), source.kind) {
        (false, _) => &config.urls,
        (true, SourceKind::Mqtt) => &source.urls,
        (true, SourceKind::Nats) => {
            return Err(invalid(
                "downlink.urls",
                "required with a NATS source: the cluster's MQTT addresses",
            ))
        }
    };
    let endpoints = urls
        .iter()
        .enumerate()
        .map(|(index, url)| {
            parse_url(url, "mqtt").map_err(|r| invalid(&format!("downlink.urls[{index}]"), &r))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = match config.username.as_str() {
        "" if !config.password.is_empty() => {
            return Err(invalid("downlink.username", "required with a password"))
        }
        "" => (!source.username.is_empty())
            .then(|| (source.username.clone(), source.password.clone())),
        user => Some((user.to_string(), config.password.clone())),
    };
    let client_id = match config.client_id.as_str() {
        "" => format!("{}-commands", source.consumer),
        id => id.to_string(),
    };
    if !is_client_id(&client_id) {
        return Err(invalid(
            "downlink.client_id",
            "1-64 ASCII letters, digits, '-' or '_'",
        ));
    }
    Ok(Some(Downlink {
        signer,
        endpoints,
        credentials,
        client_id,
        max_lifetime: Duration::from_secs(config.max_lifetime_secs),
        publish_timeout: Duration::from_secs(config.publish_timeout_secs),
    }))
}

fn is_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
}

/// The signing key in `path`: 64 hex digits, the file readable by its
/// owner only. The error never shows the file's content.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let field = "downlink.key_file";
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let reason = format!("{shown} is readable by others (mode {mode:o}): chmod 600 it");
        return Err(invalid(field, &reason));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    parse_signing_key(&text).map_err(|_| {
        let reason = format!("{shown} holds no key: expected 64 hex digits (`district keygen`)");
        invalid(field, &reason)
    })
}

/// `scheme://host:port` (IPv6 in brackets).
fn parse_url(url: &str, scheme: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .ok_or_else(|| format!("expected {scheme}://host:port"))?;
    if rest.contains(['/', '?', '#', '@']) {
        return Err("host:port only: no path, query or credentials".into());
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "the port is missing".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?}: expected 1-65535"))?;
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_VAR: (&str, &str) = ("DISTRICT_TOKEN", "district-token-0123456789");

    fn load(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("district.toml");
        std::fs::write(&file, toml).map_err(|e| e.to_string())?;
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        Config::load_with(Some(&file), &env)
            .and_then(Settings::parse)
            .map_err(|e| e.to_string())
    }

    fn check_refused(toml: &str, vars: &[(&str, &str)], field: &str) {
        let error = load(toml, vars).expect_err("refused");
        assert!(error.contains(field), "{error:?} should name {field:?}");
    }

    #[test]
    fn the_default_file_parses_with_a_token() {
        let settings = load(DEFAULT_CONFIG_TOML, &[TOKEN_VAR]).unwrap();
        assert_eq!(settings.source.kind, SourceKind::Nats);
        assert_eq!(settings.source.stream, "$MQTT_msgs");
        assert_eq!(
            settings.token_sha256,
            secret::sha256_hex("district-token-0123456789")
        );
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(
            parsed,
            Config::default(),
            "the printed file is the defaults"
        );
    }

    #[test]
    fn the_deployed_file_parses() {
        let deployed = include_str!("../../deploy/district/district.toml");
        let settings = load(deployed, &[TOKEN_VAR]).unwrap();
        assert_eq!(settings.source.kind, SourceKind::Nats);
        assert_eq!(settings.source.endpoints.len(), 3);
        assert_eq!(
            settings.source.credentials,
            Some(("district".into(), String::new()))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let token = [TOKEN_VAR];
        check_refused("", &[], "api.token_sha256");
        check_refused("colour = 1", &token, "colour");
        check_refused("[api]\nport = 1", &token, "port");
        check_refused("time_zone = \"Mars/Base\"", &token, "time_zone");
        check_refused("[source]\nurls = []", &token, "source.urls");
        check_refused(
            "[source]\nurls = [\"mqtt://a:1\"]",
            &token,
            "source.urls[0]",
        );
        check_refused(
            "[source]\nkind = \"mqtt\"\nurls = [\"mqtt://a:1\", \"mqtt://b\"]",
            &token,
            "source.urls[1]",
        );
        check_refused("[source]\nkind = \"kafka\"", &token, "kind");
        check_refused("[source]\nconsumer = \"a.b\"", &token, "source.consumer");
        check_refused("[source]\nbatch = 0", &token, "source.batch");
        check_refused("[source]\npassword = \"x\"", &token, "source.username");
        check_refused("[store]\ndedupe_days = 0", &token, "store.dedupe_days");
        check_refused("[api]\ntoken_sha256 = \"abc\"", &[], "api.token_sha256");
        check_refused("", &[("DISTRICT_TOKEN", "short")], "DISTRICT_TOKEN");
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_masked() {
        let settings = load(
            "[source]\nkind = \"mqtt\"\nurls = [\"mqtt://[::1]:1883\"]\nusername = \"district\"",
            &[TOKEN_VAR, ("DISTRICT_SOURCE_PASSWORD", "pw")],
        )
        .unwrap();
        assert_eq!(
            settings.source.credentials,
            Some(("district".into(), "pw".into()))
        );
        assert_eq!(settings.source.endpoints[0].host, "::1");
        let mut config = Config::default();
        config.source.password = "pw".into();
        config.api.token_sha256 = "x".into();
        let masked = config.masked();
        assert_eq!(
            (
                masked.source.password.as_str(),
                masked.api.token_sha256.as_str()
            ),
            (MASKED, MASKED)
        );
        assert_eq!(masked.api.metrics_token_sha256, "");
    }
}
