//! The configuration, parsed once into typed values before anything starts
//! ("parse, don't validate"): the centers' time zone as a `Calendar`, rooms'
//! opening hours as `Rooms`, the schedule's `Clock`, bookable resources as
//! compiled `Resource`s, the duty `Roster`. Every other module takes these
//! types; none reads or re-parses the text they came from, so no value can
//! be read differently in two places and nothing needs a fallback. An
//! invalid value fails the start naming its field (`hub` exits 2).
//!
//! - `file`: the file's shape (serde, defaults, `YIZHAN_*` overrides, the
//!   printed default file)
//! - `opening`: times of day, opening hours, weekday windows
//! - `rooms`: rooms' seats and hours (one check for the file's entries and
//!   the API's)
//! - `resource`: a bookable resource compiled from its entry
//! - `roster`: managers' duty shifts
//! - `tokens`: the API's tokens and the uplink's password from the
//!   environment (plain or `*_FILE`)
//! - `key_source`: where the credential-hashing key comes from
//! - `api`: how the API serves (TLS, header and request timeouts,
//!   connections) and the audit log's retention
//! - `uplink`: the upstream brokers, TLS files and outbox bounds
//! - `downlink`: the keys trusted for the district's signed commands, the
//!   centers taken, the longest lifetime

pub mod api;
pub mod downlink;
pub mod file;
pub mod key_source;
pub mod opening;
pub mod resource;
pub mod retention;
pub mod rooms;
pub mod roster;
pub mod tokens;
pub mod uplink;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::calendar::Calendar;

use crate::clock::Clock;

use service::config::invalid;
pub use service::config::ConfigError;

pub use api::HttpSettings;
pub use downlink::DownlinkSettings;
pub use file::{
    AccessConfig, ApiConfig, BrokerConfig, CommandsConfig, Config, CountingConfig, DownlinkConfig,
    DutyConfig, IngestConfig, InterlockConfig, LimitsConfig, LogConfig, LogFormat,
    PlainListenerConfig, PlainUser, ResourceConfig, RoomConfig, ScheduleConfig, ShareConfig,
    SlotConfig, UplinkConfig, DEFAULT_CONFIG_TOML, MASKED,
};
pub use key_source::KeySource;
pub use opening::{parse_hhmm, DayWindow, OpeningHours};
pub use resource::{Layout, Resource};
pub use retention::{Retention, RetentionConfig};
pub use rooms::{RoomRules, Rooms, MAX_SEATS};
pub use roster::{Roster, Shift};
pub use uplink::{UplinkSettings, UplinkTls, Upstream};

/// A field (relative to its entry) and why its value is refused.
pub type FieldError = (String, String);

/// The longest grace `broker.certificate_renewal_grace_secs` may give a
/// renewed device's previous certificate: 90 days.
pub const MAX_RENEWAL_GRACE_SECS: u64 = 90 * 86_400;

/// The hub's settings: the configuration, checked and parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory for sled, the CA and the broker's TLS files.
    pub data_dir: PathBuf,
    /// Where the credential-hashing key comes from.
    pub credential_key: KeySource,
    pub broker: BrokerConfig,
    pub ingest: IngestConfig,
    pub commands: CommandsConfig,
    pub interlock: InterlockConfig,
    /// How long a gate's `open`/`deny` answer stays valid.
    pub gate_answer_ttl: Duration,
    /// The centers' calendar (`[access] time_zone`).
    pub calendar: Calendar,
    /// Rooms behind gates and counters (`[[rooms]]`, `[counting] closes`).
    pub rooms: Rooms,
    /// The booking rules' numbers and the webhook; the clock they run on is
    /// `clock` (its text here is not read again).
    pub schedule: ScheduleConfig,
    /// The clock the schedule runs on (`[schedule] clock`).
    pub clock: Arc<Clock>,
    /// Bookable resources from `[[resources]]`, in file order.
    pub resources: Vec<Resource>,
    /// Volunteer managers' duty shifts (`[[duty]]`).
    pub roster: Roster,
    pub api: ApiConfig,
    /// How the API serves (`[api]`'s TLS and limits).
    pub http: HttpSettings,
    /// How long each kind of stored record is kept (the audit log's too).
    pub retention: Retention,
    pub log: LogConfig,
    /// The upstream broker, when `[uplink] enabled`.
    pub uplink: Option<UplinkSettings>,
}

impl Settings {
    /// Loads the file (if given) and `YIZHAN_*` variables, then parses.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::parse(Config::load(file)?)
    }

    /// Checks what serde cannot and parses every value that has a type;
    /// the first invalid value names its field.
    pub fn parse(config: Config) -> Result<Settings, ConfigError> {
        check_plain_values(&config)?;
        let calendar = Calendar {
            tz: config
                .access
                .time_zone
                .parse()
                .map_err(|_| invalid("access.time_zone", "not an IANA time zone name"))?,
        };
        let default_close = parse_hhmm(&config.counting.closes)
            .map_err(|_| invalid("counting.closes", "not a time of day as HH:MM"))?;
        let rooms = Rooms::parse(&config.rooms, default_close).map_err(named(""))?;
        let clock = Clock::parse(&config.schedule.clock)
            .map_err(|reason| invalid("schedule.clock", &reason))?;
        check_schedule(&config.schedule)?;
        check_lengths(&config)?;
        let (http, audit_retention) = api::parse(&config.api)?;
        let uplink = uplink::parse(&config.uplink).map_err(named(""))?;
        let retention = Retention::parse(&config.retention, audit_retention)?;
        let credential_key = key_source::parse(&config, &|name: &str| std::env::var(name).ok())?;
        let shifts = config
            .duty
            .iter()
            .enumerate()
            .map(|(index, duty)| {
                Shift::from_config(duty).map_err(named(&format!("duty[{index}].")))
            })
            .collect::<Result<_, _>>()?;
        let mut seen = HashSet::new();
        let mut resources = Vec::with_capacity(config.resources.len());
        for (index, entry) in config.resources.iter().enumerate() {
            let at = format!("resources[{index}].");
            resources.push(Resource::from_config(entry).map_err(named(&at))?);
            if !seen.insert(&entry.id) {
                return Err(invalid(&format!("{at}id"), "another resource has this id"));
            }
        }
        Ok(Settings {
            data_dir: config.data_dir,
            credential_key,
            broker: config.broker,
            ingest: config.ingest,
            commands: config.commands,
            interlock: config.interlock,
            gate_answer_ttl: Duration::from_millis(config.access.answer_ttl_ms),
            calendar,
            rooms,
            schedule: config.schedule,
            clock: Arc::new(clock),
            resources,
            roster: Roster { shifts },
            api: config.api,
            http,
            retention,
            log: config.log,
            uplink,
        })
    }
}

/// Names a field error `prefix` + field.
fn named(prefix: &str) -> impl Fn(FieldError) -> ConfigError + '_ {
    move |(field, reason)| ConfigError::Invalid {
        field: format!("{prefix}{field}"),
        reason,
    }
}

/// The numbers and plain strings of the sections before `[access]`.
fn check_plain_values(config: &Config) -> Result<(), ConfigError> {
    let fail = |field: &str, reason: &str| Err(invalid(field, reason));
    let broker = &config.broker;
    if broker.server_names.is_empty() {
        return fail("broker.server_names", "at least one name is required");
    }
    if broker.segment_bytes < 1024 {
        return fail("broker.segment_bytes", "must be at least 1024");
    }
    if broker.segment_count < 2 {
        return fail("broker.segment_count", "must be at least 2");
    }
    let log_bytes = (broker.segment_count - 1).saturating_mul(broker.segment_bytes);
    if broker.ingest_window_bytes == 0 || broker.ingest_window_bytes > log_bytes {
        return fail(
            "broker.ingest_window_bytes",
            "must be between 1 and (segment_count - 1) x segment_bytes",
        );
    }
    if broker.max_packet_bytes > broker.segment_bytes {
        return fail(
            "broker.max_packet_bytes",
            "must not be larger than broker.segment_bytes",
        );
    }
    if broker.max_handshakes_per_ip == 0 {
        return fail("broker.max_handshakes_per_ip", "must be at least 1");
    }
    if broker.max_handshakes == 0 {
        return fail("broker.max_handshakes", "must be at least 1");
    }
    if broker.limits.burst == 0 {
        return fail("broker.limits.burst", "must be at least 1");
    }
    if broker.device_cert_days == 0 {
        return fail("broker.device_cert_days", "must be at least 1");
    }
    if broker.certificate_renewal_grace_secs > MAX_RENEWAL_GRACE_SECS {
        return fail(
            "broker.certificate_renewal_grace_secs",
            "must be at most 7776000 (90 days)",
        );
    }
    if broker.plain.enabled && !broker.plain.listen.ip().is_loopback() {
        return fail(
            "broker.plain.listen",
            "the plain listener binds loopback only",
        );
    }
    if config.ingest.batch_max == 0 {
        return fail("ingest.batch_max", "must be at least 1");
    }
    if config.ingest.default_keepalive_secs == 0 {
        return fail("ingest.default_keepalive_secs", "must be at least 1");
    }
    if config.ingest.max_ts_behind_secs == 0 {
        return fail("ingest.max_ts_behind_secs", "must be at least 1");
    }
    check_token_hashes(&config.api)?;
    if config.commands.retry_initial_ms == 0 {
        return fail("commands.retry_initial_ms", "must be at least 1");
    }
    if config.commands.retry_max_ms < config.commands.retry_initial_ms {
        return fail(
            "commands.retry_max_ms",
            "must be at least commands.retry_initial_ms",
        );
    }
    if !config.interlock.max_temp_c.is_finite() {
        return fail("interlock.max_temp_c", "must be a finite number");
    }
    if config.interlock.watchdog_ms == 0 {
        return fail("interlock.watchdog_ms", "must be at least 1");
    }
    if config.interlock.stop_ttl_secs == 0 {
        return fail("interlock.stop_ttl_secs", "must be at least 1");
    }
    if config.access.answer_ttl_ms == 0 {
        return fail("access.answer_ttl_ms", "must be at least 1");
    }
    Ok(())
}

/// The token hashes: 64 hex digits each, and two different tokens.
fn check_token_hashes(api: &ApiConfig) -> Result<(), ConfigError> {
    for (field, hash) in [
        (tokens::ADMIN_TOKEN.field, &api.admin_token_sha256),
        (tokens::METRICS_TOKEN.field, &api.metrics_token_sha256),
    ] {
        if !hash.is_empty() && (hash.len() != 64 || hex::decode(hash).is_err()) {
            return Err(invalid(field, "must be 64 hex digits"));
        }
    }
    let metrics = &api.metrics_token_sha256;
    if !metrics.is_empty() && metrics.eq_ignore_ascii_case(&api.admin_token_sha256) {
        return Err(invalid(
            tokens::METRICS_TOKEN.field,
            "the metrics token must differ from the admin token",
        ));
    }
    Ok(())
}

/// `[schedule]`'s numbers and webhook.
fn check_schedule(schedule: &ScheduleConfig) -> Result<(), ConfigError> {
    let fail = |field: &str, reason: &str| Err(invalid(field, reason));
    if schedule.tick_ms == 0 {
        return fail("schedule.tick_ms", "must be at least 1");
    }
    let webhook = &schedule.webhook_url;
    if !webhook.is_empty() && !webhook.starts_with("http://") {
        return fail("schedule.webhook_url", "must start with http://");
    }
    if schedule.webhook_retry_ms == 0 {
        return fail("schedule.webhook_retry_ms", "must be at least 1");
    }
    if schedule.webhook_retry_max_ms < schedule.webhook_retry_ms {
        return fail(
            "schedule.webhook_retry_max_ms",
            "must be at least schedule.webhook_retry_ms",
        );
    }
    if schedule.strikes_to_block == 0 {
        return fail("schedule.strikes_to_block", "must be at least 1");
    }
    Ok(())
}

/// Longest any configured length of time may be: a year. Longer ones mean
/// nothing to a center, and this bound keeps every deadline the hub adds
/// them to (an `Instant`, a unix ms) from overflowing. The devices' `ts`
/// window is left out: simulated clocks open it to the whole calendar.
const MAX_LENGTH_MS: u64 = 366 * 24 * 3_600_000;

/// Every configured length of time (ms, s, minutes, days) at most a year.
fn check_lengths(config: &Config) -> Result<(), ConfigError> {
    const MS: u64 = 1;
    const SECS: u64 = 1_000;
    const MINUTES: u64 = 60_000;
    const DAYS: u64 = 86_400_000;
    let schedule = &config.schedule;
    let lengths = [
        (
            "broker.handshake_timeout_ms",
            config.broker.handshake_timeout_ms,
            MS,
        ),
        (
            "broker.limits.flood_disconnect_secs",
            config.broker.limits.flood_disconnect_secs,
            SECS,
        ),
        (
            "ingest.rejection_log_interval_ms",
            config.ingest.rejection_log_interval_ms,
            MS,
        ),
        ("commands.retry_max_ms", config.commands.retry_max_ms, MS),
        ("interlock.watchdog_ms", config.interlock.watchdog_ms, MS),
        (
            "interlock.stop_ttl_secs",
            config.interlock.stop_ttl_secs,
            SECS,
        ),
        ("access.answer_ttl_ms", config.access.answer_ttl_ms, MS),
        ("schedule.grace_minutes", schedule.grace_minutes, MINUTES),
        (
            "schedule.late_cancel_minutes",
            schedule.late_cancel_minutes,
            MINUTES,
        ),
        ("schedule.strike_days", schedule.strike_days, DAYS),
        ("schedule.block_days", schedule.block_days, DAYS),
        ("schedule.tick_ms", schedule.tick_ms, MS),
        (
            "schedule.walk_in_minutes",
            schedule.walk_in_minutes,
            MINUTES,
        ),
        (
            "schedule.offline_block_minutes",
            schedule.offline_block_minutes,
            MINUTES,
        ),
        (
            "schedule.outage_lookahead_minutes",
            schedule.outage_lookahead_minutes,
            MINUTES,
        ),
        (
            "schedule.webhook_retry_max_ms",
            schedule.webhook_retry_max_ms,
            MS,
        ),
    ];
    for (field, value, unit) in lengths {
        if value > MAX_LENGTH_MS / unit {
            let most = MAX_LENGTH_MS / unit;
            return Err(invalid(
                field,
                format!("at most {most} (a year), got {value}"),
            ));
        }
    }
    Ok(())
}

/// A center, room or similar label: 1–64 letters, digits, `-` or `_`.
pub fn is_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "-_".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_invalid_fields_are_named() {
        let dir = std::env::temp_dir().join(format!("yizhan-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |text: &str, needle: &str| {
            let path = dir.join("c.toml");
            std::fs::write(&path, text).unwrap();
            let err = Settings::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should name {needle:?}");
        };
        check("[api]\nlisten = \"nope\"\n", "api.listen");
        check("[broker]\nbogus = 1\n", "bogus");
        check("[broker]\nsegment_count = 1\n", "broker.segment_count");
        check(
            "[broker]\ncertificate_renewal_grace_secs = 7776001\n",
            "broker.certificate_renewal_grace_secs",
        );
        check("credential_key = \"abc\"\n", "`credential_key`");
        check(
            "[broker]\ningest_window_bytes = 99999999\n",
            "broker.ingest_window_bytes",
        );
        check(
            "[ingest]\nmax_ts_behind_secs = 0\n",
            "ingest.max_ts_behind_secs",
        );
        check(
            "[broker.plain]\nenabled = true\nlisten = \"0.0.0.0:1883\"\n",
            "broker.plain.listen",
        );
        let gym = "[[rooms]]\ncenter = \"c\"\nid = \"gym\"\ncapacity = 4\n";
        check(&format!("{gym}hours = \"24h\"\n{gym}"), "rooms[1].hours");
        check(
            &format!("{gym}open = \"25:00\"\nclose = \"22:00\"\n"),
            "rooms[0].open",
        );
        check(&format!("{gym}hours = \"all day\"\n"), "rooms[0].hours");
        check(
            "[[rooms]]\ncenter = \"c\"\nid = \"gym\"\ncapacity = 0\nhours = \"24h\"\n",
            "rooms[0].capacity",
        );
        check(
            "[access]\ntime_zone = \"Mars/Olympus\"\n",
            "access.time_zone",
        );
        let piano = "[[resources]]\nid = \"p1\"\ncenter = \"c\"\nkind = \"piano\"\nroom = \"music\"\ncapacity = 1\nslot_minutes = 60\nhours = \"24h\"\nmarket_price = 50.0\n";
        check(&format!("{piano}price = 50.0\n"), "resources[0].price");
        check(
            &format!("{piano}price = 0.0\nshares = [{{ group = \"aliens\", percent = 10 }}]\n"),
            "resources[0].shares",
        );
        check(
            "[schedule]\nclock = \"fixed:yesterday\"\n",
            "schedule.clock",
        );
        check(
            "[schedule]\ngrace_minutes = 9223372036854775807\n",
            "schedule.grace_minutes",
        );
        check(
            "[broker]\nhandshake_timeout_ms = 9223372036854775807\n",
            "broker.handshake_timeout_ms",
        );
    }
}
