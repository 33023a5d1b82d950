//! The configuration file's shape: one serde tree, loaded from a TOML file
//! plus `YIZHAN_*` environment overrides. Unchecked text and numbers:
//! `Settings::parse` turns it into typed values before anything starts.
//!
//! `DEFAULT_CONFIG_TOML` is the commented file `hub print-default-config`
//! prints; a unit test keeps it equal to `Config::default()`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::records::{ResourceConfig, RoomConfig, ShareConfig, SlotConfig};

use super::retention::RetentionConfig;
use super::ConfigError;

/// What `check-config` prints in place of a secret that is set.
pub const MASKED: &str = "<masked>";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for sled, the CA and the broker's TLS files.
    pub data_dir: PathBuf,
    /// The file holding the key residents' credentials are hashed with
    /// (64 hex digits); empty: `credential.key` in `data_dir`.
    pub credential_key_file: String,
    /// The key itself (64 hex digits), instead of a file.
    pub credential_key: String,
    pub broker: BrokerConfig,
    pub ingest: IngestConfig,
    pub commands: CommandsConfig,
    pub interlock: InterlockConfig,
    pub access: AccessConfig,
    pub counting: CountingConfig,
    /// Rooms behind gates: capacity and opening hours.
    pub rooms: Vec<RoomConfig>,
    pub schedule: ScheduleConfig,
    /// Bookable resources (time slots).
    pub resources: Vec<ResourceConfig>,
    /// Volunteer managers' duty shifts per room (the duty roster).
    pub duty: Vec<DutyConfig>,
    pub api: ApiConfig,
    /// How long stored records are kept (`settings::retention`).
    pub retention: RetentionConfig,
    pub log: LogConfig,
    /// Forwarding to the district's broker (docs/upstream.md).
    pub uplink: UplinkConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Public mTLS listener for devices.
    pub listen: SocketAddr,
    /// DNS names and IP addresses in the edge's server certificate: the
    /// names devices dial the hub by.
    pub server_names: Vec<String>,
    /// Days an issued device certificate stays valid.
    pub device_cert_days: u32,
    /// How long a renewed device's previous certificate still connects.
    pub certificate_renewal_grace_secs: u64,
    /// Largest MQTT packet the edge accepts, in bytes.
    pub max_packet_bytes: usize,
    pub max_connections: usize,
    /// In-memory log per subscription filter: segment size and count.
    pub segment_bytes: usize,
    pub segment_count: usize,
    /// Bytes admitted towards ingest and not yet read by it; a client
    /// waits (its socket is not read) while the window is full. At most
    /// `(segment_count - 1) x segment_bytes`, so nothing is skipped.
    pub ingest_window_bytes: usize,
    /// One deadline for a connection's TLS handshake and CONNECT, and the
    /// longest it waits for a place among the connections in handshake.
    pub handshake_timeout_ms: u64,
    /// Connections in handshake at once from one source address.
    pub max_handshakes_per_ip: usize,
    /// Connections in handshake at once in all.
    pub max_handshakes: usize,
    pub limits: LimitsConfig,
    pub plain: PlainListenerConfig,
}

/// What one connection may do, on both listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Publishes per second a connection may send (0 = no limit); faster
    /// clients are slowed through TCP.
    pub messages_per_second: u32,
    /// Publishes a connection may send at once above its rate.
    pub burst: u32,
    /// A connection slowed without pause for this long is disconnected
    /// (0 = never).
    pub flood_disconnect_secs: u64,
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
    /// A device `ts` further behind the hub's clock than this is rejected
    /// (`invalid_ts`): how long a device may hold events it could not send.
    pub max_ts_behind_secs: u64,
    /// A device `ts` further ahead of the hub's clock than this is rejected
    /// (`invalid_ts`): the clock drift a device may have.
    pub max_ts_ahead_secs: u64,
}

impl IngestConfig {
    /// A `ts` window holding every instant the calendar does (10,000 years
    /// either way), for devices on a simulated clock (`device-sim --start`,
    /// `--speed`, `device-sim demo`), which runs ahead of or behind the hub's.
    pub const SIMULATED_CLOCK_WINDOW_SECS: u64 = 10_000 * 365 * 86_400;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Wait before the first resend of an unanswered command; doubled per
    /// resend up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterlockConfig {
    /// A therapy robot reporting `temp_c` above this is stopped.
    pub max_temp_c: f64,
    /// A running session with no telemetry for this long is stopped.
    pub watchdog_ms: u64,
    /// How long an interlock `stop` stays deliverable (an offline robot gets
    /// it when it reconnects within this time).
    pub stop_ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountingConfig {
    /// When a room without a `[[rooms]]` entry closes (local `HH:MM`):
    /// its occupancy starts from zero after it.
    pub closes: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// IANA time zone in which rooms' opening hours are read.
    pub time_zone: String,
    /// How long a gate's `open`/`deny` answer stays valid.
    pub answer_ttl_ms: u64,
}

/// Booking rules common to every resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `system`, or `fixed:<RFC 3339>`: a clock that stands still at that
    /// instant until `POST /api/v1/schedule/clock` moves it (tests, demos).
    pub clock: String,
    /// A booking not checked in this long after its start is released.
    pub grace_minutes: u64,
    /// A cancellation this close to the start counts as late.
    pub late_cancel_minutes: u64,
    /// A no-show strike counts for this many days.
    pub strike_days: u64,
    /// This many active strikes block new bookings ...
    pub strikes_to_block: u32,
    /// ... for this many days after the last one.
    pub block_days: u64,
    /// How often due slot starts, grace ends and slot ends are processed.
    pub tick_ms: u64,
    /// Length assumed for a walk-in piano session whose `session_start`
    /// states no `minutes`: one running into a booking is refused.
    pub walk_in_minutes: u64,
    /// A bound device offline this long is an outage (a `fault` event is
    /// one at once): its resources' slots starting within
    /// `outage_lookahead_minutes` are blocked and their bookings cancelled.
    pub offline_block_minutes: u64,
    pub outage_lookahead_minutes: u64,
    /// `http://` URL the booking front end receives notifications on
    /// (JSON POST, retried from a durable outbox until a 2xx). Empty: none.
    pub webhook_url: String,
    /// First wait before retrying a failed delivery; doubled up to
    /// `webhook_retry_max_ms`.
    pub webhook_retry_ms: u64,
    pub webhook_retry_max_ms: u64,
}

/// A manager on duty in a room from `start` to `end` (local `HH:MM`) on
/// `days` (`mon`..`sun`; empty: every day). A slot of a resource in a room
/// with duty entries is staffed when one shift covers it whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutyConfig {
    pub center: String,
    pub room: String,
    pub manager: String,
    #[serde(default)]
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// SHA-256 (hex) of the admin token. Empty: taken from
    /// `YIZHAN_ADMIN_TOKEN` or `YIZHAN_ADMIN_TOKEN_FILE` (`tokens`), else
    /// generated at first start and printed once.
    pub admin_token_sha256: String,
    /// SHA-256 (hex) of the scrape-only token (`GET /metrics`, nothing
    /// else). Empty: taken from `YIZHAN_METRICS_TOKEN` or
    /// `YIZHAN_METRICS_TOKEN_FILE`, else there is none.
    pub metrics_token_sha256: String,
    /// Serve https with the hub's server certificate (`settings::api`).
    pub tls: bool,
    pub header_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_connections: usize,
    pub audit_retention_days: u64,
}

pub use service::log::LogFormat;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// tracing filter directive, e.g. `info` or `hub=debug,rumqttd=warn`.
    pub filter: String,
}

/// The upstream MQTT 3.1.1 broker the hub forwards to (docs/upstream.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Off: nothing is written to the uplink outbox and nothing forwarded.
    pub enabled: bool,
    /// `mqtt://host[:port]` or `mqtts://host[:port]`, tried in turn.
    pub urls: Vec<String>,
    /// MQTT client id, the same on every URL (its session is persistent)
    /// and the first part of every message id. Empty: the hub's own id.
    pub client_id: String,
    pub username: String,
    /// Empty: `YIZHAN_UPLINK_PASSWORD` or the file
    /// `YIZHAN_UPLINK_PASSWORD_FILE` names, else none.
    pub password: String,
    /// PEM certificates the upstream's certificate chains to (required for
    /// `mqtts://`).
    pub ca_file: String,
    /// A client certificate and its key (PEM), both or neither.
    pub cert_file: String,
    pub key_file: String,
    /// Past this size the outbox drops its oldest telemetry.
    pub max_backlog_bytes: u64,
    /// Messages published and not yet acknowledged, at most.
    pub max_in_flight: u32,
    /// Publishes per second at most (0: no limit), so a drain after an
    /// outage leaves the CPU to the devices.
    pub max_messages_per_second: u32,
    /// Forward every telemetry message as well as the per-window aggregate.
    pub raw_telemetry: bool,
    /// Length of a device's telemetry aggregate window.
    pub telemetry_window_secs: u64,
    pub keepalive_secs: u64,
    /// TCP, TLS and CONNACK of one attempt.
    pub connect_timeout_secs: u64,
    /// Wait after a failed attempt, doubled per failure up to the maximum.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Commands from the district on the same session (docs/upstream.md,
    /// "Downlink").
    pub downlink: DownlinkConfig,
}

/// `[uplink.downlink]`: which signed commands the hub takes from the
/// upstream. Off while no key is trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownlinkConfig {
    /// The centers whose commands the hub takes (`yz/v1/{center}/+/cmd`);
    /// required with a key.
    pub centers: Vec<String>,
    /// Trusted Ed25519 public keys: key id → 64 hex digits.
    pub keys: std::collections::BTreeMap<String, String>,
    /// A file of more keys, one `key_id public_key` per line (`#` starts a
    /// comment).
    pub keys_file: String,
    /// The longest a command may live, from its issue to its expiry.
    pub max_lifetime_secs: u64,
}

impl Default for DownlinkConfig {
    fn default() -> Self {
        DownlinkConfig {
            centers: Vec::new(),
            keys: std::collections::BTreeMap::new(),
            keys_file: String::new(),
            max_lifetime_secs: 3_600,
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            enabled: false,
            urls: Vec::new(),
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            max_backlog_bytes: 1024 * 1024 * 1024,
            max_in_flight: 256,
            max_messages_per_second: 10_000,
            raw_telemetry: false,
            telemetry_window_secs: 60,
            keepalive_secs: 30,
            connect_timeout_secs: 10,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            downlink: DownlinkConfig::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            credential_key_file: String::new(),
            credential_key: String::new(),
            broker: BrokerConfig::default(),
            ingest: IngestConfig::default(),
            commands: CommandsConfig::default(),
            interlock: InterlockConfig::default(),
            access: AccessConfig::default(),
            counting: CountingConfig::default(),
            rooms: Vec::new(),
            schedule: ScheduleConfig::default(),
            resources: Vec::new(),
            duty: Vec::new(),
            api: ApiConfig::default(),
            retention: RetentionConfig::default(),
            log: LogConfig::default(),
            uplink: UplinkConfig::default(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            device_cert_days: 365,
            certificate_renewal_grace_secs: 7 * 86_400,
            max_packet_bytes: 64 * 1024,
            max_connections: 20_000,
            segment_bytes: 256 * 1024,
            segment_count: 4,
            ingest_window_bytes: 512 * 1024,
            handshake_timeout_ms: 5_000,
            max_handshakes_per_ip: 128,
            max_handshakes: 1_024,
            limits: LimitsConfig::default(),
            plain: PlainListenerConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_subscriptions: 8,
            messages_per_second: 100,
            burst: 500,
            flood_disconnect_secs: 30,
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
            max_ts_behind_secs: 7 * 86_400,
            max_ts_ahead_secs: 300,
        }
    }
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            retry_initial_ms: 1_000,
            retry_max_ms: 8_000,
        }
    }
}

impl Default for InterlockConfig {
    fn default() -> Self {
        InterlockConfig {
            max_temp_c: 45.0,
            watchdog_ms: 5_000,
            stop_ttl_secs: 3_600,
        }
    }
}

impl Default for CountingConfig {
    fn default() -> Self {
        CountingConfig {
            closes: "21:30".into(),
        }
    }
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            time_zone: "Asia/Shanghai".into(),
            answer_ttl_ms: 5_000,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            clock: "system".into(),
            grace_minutes: 10,
            late_cancel_minutes: 60,
            strike_days: 90,
            strikes_to_block: 3,
            block_days: 14,
            tick_ms: 200,
            walk_in_minutes: 30,
            offline_block_minutes: 15,
            outage_lookahead_minutes: 60,
            webhook_url: String::new(),
            webhook_retry_ms: 500,
            webhook_retry_max_ms: 60_000,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token_sha256: String::new(),
            metrics_token_sha256: String::new(),
            tls: false,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 512,
            audit_retention_days: 90,
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
# The admin and metrics tokens may be given in plain text as
# YIZHAN_ADMIN_TOKEN and YIZHAN_METRICS_TOKEN, or in files named by
# YIZHAN_ADMIN_TOKEN_FILE and YIZHAN_METRICS_TOKEN_FILE.

# sled database, the hub's CA (key mode 0600) and the broker's TLS files.
# The hub creates it 0700, or tightens it to 0700 at start.
data_dir = "./data"

# The key residents' credentials (QR codes, cards) are hashed with, kept
# apart from the database: a file holding 64 hex digits (openssl rand -hex
# 32). Empty: credential.key in data_dir (mode 0600), made at first start
# (or moved there out of the database of an earlier hub). Or set
# YIZHAN_CREDENTIAL_KEY_FILE, e.g. to a systemd credential
# ($CREDENTIALS_DIRECTORY/credential_key) or a mounted secret. A hub that
# holds credentials refuses to start without the key they were hashed with.
credential_key_file = ""
# The key itself instead (64 hex digits), e.g. from YIZHAN_CREDENTIAL_KEY;
# a file is better (a process's environment is readable in /proc).
credential_key = ""

# Rooms behind gates (gate access decisions). One entry per room (or set
# through the API: PUT /api/v1/centers/{id}/rooms/{room}, which overrides):
#   [[rooms]]
#   center = "lianhua"       # the center and room a gate is provisioned in
#   id = "gym"
#   capacity = 40            # people inside at once
#   hours = "24h"            # or: open = "07:00" and close = "22:00"
rooms = []

# Bookable resources. One entry per resource:
#   [[resources]]
#   id = "piano1"
#   center = "lianhua"
#   kind = "piano"           # piano, therapy, gym, class, childcare, seat...
#   room = "music"
#   devices = ["piano1"]     # unlocked at slot start, locked at slot end
#   capacity = 1             # places per slot
#   slot_minutes = 60        # with hours = "24h" or open/close ...
#   open = "08:00"
#   close = "21:00"
#   # ... or explicit slots (days: mon..sun, empty = every day):
#   # slots = [{ days = ["mon", "wed", "fri"], start = "19:00", end = "20:00" }]
#   horizon_days = 7         # bookable this many days ahead
#   price = 0.0              # yuan per slot, must be below market_price
#   market_price = 60.0
#   child_age_months = [18, 36]   # optional: childcare
#   per_day = 1              # optional quotas per resident
#   per_week = 3
#   max_active = 2
#   shares = [{ group = "senior", percent = 20 }]  # held places per group
#   release_before_minutes = 120                   # ... until this before
resources = []

# Duty roster: volunteer managers' shifts per room. A slot of a resource in
# a room listed here with no manager on duty is flagged "unstaffed" in
# availability and in yizhan_booking_slots_unstaffed.
#   [[duty]]
#   center = "lianhua"
#   room = "pingpong"
#   manager = "m01"
#   days = ["sat", "sun"]    # empty: every day
#   start = "08:00"
#   end = "12:00"
duty = []

[broker]
# Public MQTT-over-mTLS listener for devices.
listen = "0.0.0.0:8883"
# DNS names and IP addresses in the edge's server certificate: every name
# devices dial the hub by.
server_names = ["localhost", "127.0.0.1", "::1"]
# Validity of an issued device certificate, in days.
device_cert_days = 365
# After POST /api/v1/devices/{id}/certificate the certificate it replaces
# still connects this long, in seconds (0 to 7776000, 90 days); a request
# may ask for less. A session on it is ended when the time is up.
certificate_renewal_grace_secs = 604800
# Largest MQTT packet accepted, in bytes.
max_packet_bytes = 65536
max_connections = 20000
# rumqttd keeps an in-memory log per subscription filter of
# segment_bytes x segment_count; older messages are dropped by size.
segment_bytes = 262144
segment_count = 4
# Bytes on their way to ingest at once; clients wait while it is full. At
# most (segment_count - 1) x segment_bytes, so ingest never skips any.
ingest_window_bytes = 524288
# One deadline for a connection's TLS handshake and CONNECT (and for its
# wait for a place among the connections in handshake).
handshake_timeout_ms = 5000
# Connections in handshake at once: from one source address, and in all.
max_handshakes_per_ip = 128
max_handshakes = 1024

[broker.limits]
# Per connection, on both listeners.
max_subscriptions = 8
# Publishes per second (0 = no limit) and burst; a faster client is slowed
# through TCP, and one slowed without pause for flood_disconnect_secs
# (0 = never) is disconnected.
messages_per_second = 100
burst = 500
flood_disconnect_secs = 30

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
# A device's ts must lie within this window around the hub's clock, else the
# message is rejected as "invalid_ts": up to max_ts_behind_secs behind (how
# long a device may keep events it could not send: a week) and up to
# max_ts_ahead_secs ahead (its clock's drift). Devices on a simulated clock
# (device-sim --start/--speed) need both at 315360000000 (10,000 years).
max_ts_behind_secs = 604800
max_ts_ahead_secs = 300

[commands]
# An unanswered command is resent after retry_initial_ms, then after twice
# that, up to retry_max_ms between resends, until it expires.
retry_initial_ms = 1000
retry_max_ms = 8000

[interlock]
# A therapy robot reporting temp_c above this (degrees C) is stopped.
max_temp_c = 45.0
# A running session with no telemetry for this long is stopped.
watchdog_ms = 5000
# An interlock stop stays deliverable this long (seconds) to a robot offline.
stop_ttl_secs = 3600

[access]
# IANA time zone of the centers: rooms' opening hours, visits per local day.
time_zone = "Asia/Shanghai"
# A gate's open/deny answer is valid this long (ms).
answer_ttl_ms = 5000

[counting]
# When rooms without a [[rooms]] entry close (local HH:MM); their occupancy
# starts from zero after it. Counters in room "entrance" count the visits.
closes = "21:30"

[schedule]
# "system", or "fixed:<RFC 3339>" (a clock standing still until
# POST /api/v1/schedule/clock moves it; for tests and demos).
clock = "system"
# A booking not checked in this long after its start is released.
grace_minutes = 10
# A cancellation this close to the slot start counts as late.
late_cancel_minutes = 60
# A no-show is a strike for strike_days; strikes_to_block active strikes
# block new bookings for block_days after the last one.
strike_days = 90
strikes_to_block = 3
block_days = 14
# How often slot starts, grace ends and slot ends are processed (ms).
tick_ms = 200
# A walk-in piano session_start without "minutes" is assumed this long; one
# that would run into a booked slot of the piano is answered with deny.
walk_in_minutes = 30
# Maintenance: a bound device that raised a "fault" event, or has been
# offline offline_block_minutes, blocks its resources' slots starting within
# outage_lookahead_minutes and cancels their bookings (residents notified),
# until it is healthy again ("fault_cleared" event, back online).
offline_block_minutes = 15
outage_lookahead_minutes = 60
# The booking front end's webhook (http://...): notifications (promoted,
# released, cancelled) are POSTed as JSON from a durable outbox and retried,
# waiting webhook_retry_ms then doubling up to webhook_retry_max_ms, until
# it answers 2xx. Empty: notifications are only listed by the API.
webhook_url = ""
webhook_retry_ms = 500
webhook_retry_max_ms = 60000

[api]
listen = "127.0.0.1:8080"
# SHA-256 (hex) of the admin token. Empty: YIZHAN_ADMIN_TOKEN (or the file
# YIZHAN_ADMIN_TOKEN_FILE names) is used, or a token is generated at first
# start, printed once, and its hash kept in the store.
admin_token_sha256 = ""
# SHA-256 (hex) of the scrape-only token: it reads GET /metrics and nothing
# else. Empty: YIZHAN_METRICS_TOKEN (or the file YIZHAN_METRICS_TOKEN_FILE
# names) is used, or there is none (the admin token still reads /metrics).
metrics_token_sha256 = ""
# More tokens, one per desk, kiosk or front end, each with a role (admin,
# staff, frontend, readonly, metrics), are created through the API by an
# admin: POST /api/v1/tokens (README, docs/security.md).
# Serve https instead of http, with the hub's server certificate (signed by
# its CA, ca.pem in data_dir; names from broker.server_names). Turn it on
# when the API is reached over a network; behind a reverse proxy on the
# same machine, leave it off and listen on loopback.
tls = false
# A connection must send a request's headers (and finish its TLS
# handshake) within this, and is closed after this long idle between
# requests: a slow client cannot hold a connection.
header_read_timeout_ms = 10000
# A request is answered within this once its headers arrived (503 past it).
request_timeout_ms = 30000
# Connections served at once; more wait in the listen queue.
max_connections = 512
# Days the audit log (GET /api/v1/audit) keeps an entry; older ones are
# removed by the retention task (see [retention]).
audit_retention_days = 90

[retention]
# How long the hub keeps what it stored, counted from when it stored it:
# a whole number and s, m, h or d; 1s to 3660d. Older records are removed
# at start and then every `every` (1s to 1d), a bounded batch at a time;
# an open command and a notification the webhook has not delivered stay.
# Bookings are not removed (they are the usage record the centers audit).
# GET /api/v1/devices/{id}/events
events = "90d"
# Command records (every gate answer is one): GET …/commands
commands = "30d"
# Notifications to residents: GET /api/v1/notifications
notifications = "30d"
every = "1h"

[log]
# "text" or "json"
format = "text"
filter = "info,rumqttd=warn"

[uplink]
# Forward to the district's MQTT 3.1.1 broker (docs/upstream.md): events,
# alarms, twin changes, booking changes, visits per day and telemetry
# aggregates, under yz/v1/{center}/..., QoS 1, from a durable outbox that
# keeps each message until the broker's PUBACK.
enabled = false
# Tried in turn: on a failure the hub moves to the next, waiting
# backoff_initial_ms, doubled per failure up to backoff_max_ms (jittered).
# urls = ["mqtt://district-a:1883", "mqtts://district-b:8883"]
urls = []
# One persistent session per broker under this id; also the first part of
# every message id. Empty: the hub's id (yizhan-..., made at first start).
client_id = ""
username = ""
# Empty: YIZHAN_UPLINK_PASSWORD, or the file YIZHAN_UPLINK_PASSWORD_FILE names.
password = ""
# mqtts:// needs the PEM certificates the broker's certificate chains to
# (the system's: /etc/ssl/certs/ca-certificates.crt). A client certificate
# and key (PEM) are optional, both or neither.
ca_file = ""
cert_file = ""
key_file = ""
# Past this size (bytes) the outbox drops its oldest telemetry; events,
# alarms, twin changes, bookings and visits are never dropped.
max_backlog_bytes = 1073741824
# Publishes awaiting the broker's PUBACK at once (1-65535), and per second
# at most (0: no limit) so that a backlog drains beside the devices, not
# instead of them.
max_in_flight = 256
max_messages_per_second = 10000
# Telemetry goes up as one aggregate per device and window (count and
# min/max/last of each number); raw_telemetry sends every message too.
raw_telemetry = false
telemetry_window_secs = 60
keepalive_secs = 30
connect_timeout_secs = 10
backoff_initial_ms = 500
backoff_max_ms = 30000

[uplink.downlink]
# Commands from district operators on the same session, each signed with
# Ed25519 by the district service (docs/upstream.md, "Downlink"). Off while
# no key is trusted; with one, the hub subscribes to yz/v1/{center}/+/cmd
# for each of `centers` and delivers what passes through the command
# service. `district keygen` prints a key's line:
# keys = { "3f2a9c0e5b7d1e44" = "<64 hex digits of the public key>" }
keys = {}
# More keys, one "key_id public_key" per line ('#' starts a comment).
keys_file = ""
# The centers whose commands this hub takes (required with a key).
centers = []
# The longest a command may live from its issue to its expiry (1 s-7 d);
# a longer one is refused.
max_lifetime_secs = 3600
"#;

impl Config {
    /// Loads defaults, then `file` (if given), then `YIZHAN_*` variables.
    /// Unchecked: `Settings::parse` checks and parses the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config: Config = service::config::load(
            file,
            "YIZHAN_",
            &[
                "admin_token",
                "admin_token_file",
                "metrics_token",
                "metrics_token_file",
                "config",
                "test_fault",
                "uplink_password",
                "uplink_password_file",
            ],
        )?;
        let env = |name: &str| std::env::var(name).ok();
        super::tokens::from_env(&mut config.api, &env)?;
        super::tokens::uplink_password(&mut config.uplink, &env)?;
        Ok(config)
    }

    /// The configuration with its secrets replaced by `MASKED`: token
    /// hashes, tool password hashes, a password in the webhook URL, the
    /// uplink's password, a credential key given in clear (its file's
    /// path is shown, not its content).
    pub fn masked(&self) -> Config {
        let mask = |secret: &mut String| {
            if !secret.is_empty() {
                *secret = MASKED.into();
            }
        };
        let mut config = self.clone();
        mask(&mut config.api.admin_token_sha256);
        mask(&mut config.api.metrics_token_sha256);
        mask(&mut config.uplink.password);
        mask(&mut config.credential_key);
        for user in &mut config.broker.plain.users {
            mask(&mut user.password_hash);
        }
        config.schedule.webhook_url = mask_url_password(&config.schedule.webhook_url);
        config
    }
}

/// `http://user:secret@host/…` → `http://user:<masked>@host/…`.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{MASKED}{}", &rest[at..]),
        None => url.to_string(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let mut config = Config::default();
        config.api.admin_token_sha256 = "ab".repeat(32);
        config.broker.plain.users.push(PlainUser {
            username: "tool".into(),
            password_hash: "$argon2id$v=19$secret".into(),
        });
        config.schedule.webhook_url = "http://front:s3cret@10.0.0.5:8000/hook".into();
        config.uplink.password = "uplink-s3cret".into();
        config.credential_key = "cd".repeat(32);
        config.credential_key_file = "/etc/yizhan/credential_key".into();
        let masked = config.masked();
        assert_eq!(masked.credential_key, MASKED);
        assert_eq!(masked.credential_key_file, "/etc/yizhan/credential_key");
        assert_eq!(masked.uplink.password, MASKED);
        assert_eq!(masked.api.admin_token_sha256, MASKED);
        assert_eq!(masked.api.metrics_token_sha256, "", "unset stays empty");
        assert_eq!(masked.broker.plain.users[0].password_hash, MASKED);
        assert_eq!(
            masked.schedule.webhook_url,
            "http://front:<masked>@10.0.0.5:8000/hook"
        );
        assert_eq!(mask_url_password("http://host/a@b"), "http://host/a@b");
    }

    #[test]
    fn printed_default_file_equals_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }
}
