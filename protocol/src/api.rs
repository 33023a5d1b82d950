//! Bodies of the hub's HTTP API that clients (device-sim, tests, front ends)
//! send or read.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::DeviceKind;

/// `POST /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    /// 1-48 ASCII letters or digits: the certificate's Organization, the
    /// MQTT client id and username.
    #[schema(pattern = r"^[A-Za-z0-9]{1,48}$", example = "piano2")]
    pub id: String,
    /// 1-64 letters, digits, '-' or '_' (so is every label the API takes).
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "c1")]
    pub center: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "music")]
    pub room: String,
    pub kind: DeviceKind,
}

/// 201 answer to a provisioning request. Shown once: the hub keeps only the
/// certificate's fingerprint and a hash of the password.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Provisioned {
    pub id: String,
    /// PEM client certificate, Organization = the device id.
    pub certificate: String,
    /// PEM PKCS#8 private key of that certificate.
    pub private_key: String,
    /// PEM certificate of the hub's CA (trust anchor for the broker).
    pub ca_certificate: String,
    /// MQTT username (= the device id) and password to send in CONNECT.
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// Certificate expiry, unix milliseconds.
    pub not_after: u64,
}

/// `POST /api/v1/devices/{id}/certificate`: every field optional (an empty
/// body is the defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// How long the certificate being replaced still connects, in seconds:
    /// at most the hub's `broker.certificate_renewal_grace_secs`, which is
    /// also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u64>,
}

/// 200 answer to a renewal: provisioning's answer without the MQTT
/// password, which does not change. Shown once, like provisioning's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Renewed {
    pub id: String,
    /// PEM client certificate, Organization = the device id.
    pub certificate: String,
    /// PEM PKCS#8 private key of that certificate.
    pub private_key: String,
    /// PEM certificate of the hub's CA (unchanged).
    pub ca_certificate: String,
    /// The new certificate's expiry, unix milliseconds.
    pub not_after: u64,
    /// Until when (unix milliseconds) the certificate it replaces still
    /// connects; from then on it is refused, and a session on it is ended.
    pub previous_accepted_until: u64,
}

/// Every API error body: an RFC 9457 problem details object, answered as
/// `application/problem+json`. `type` is a stable URI per kind of problem
/// (the list is in docs/api.md), `title` its short name, `detail` the
/// reason (naming the field at fault), `rule` the booking rule that
/// refused. Some kinds add members of their own (a full slot's `offer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `https://yizhan.dev/problems/<kind>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    /// The HTTP status code of the answer.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    pub detail: String,
    /// The booking rule that refused (`booking-rule` problems only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Where the problem types live: `PROBLEM_BASE` then the kind's name.
pub const PROBLEM_BASE: &str = "https://yizhan.dev/problems/";

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

impl Problem {
    /// The kind's name: the last segment of `type` (`booking-rule`).
    pub fn kind(&self) -> &str {
        self.problem_type
            .strip_prefix(PROBLEM_BASE)
            .unwrap_or(&self.problem_type)
    }
}

/// `POST /api/v1/devices/{id}/commands`. Give exactly one of `expires_in_ms`
/// and `expires_at` (unix ms).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// 1-32 lowercase ASCII letters, digits or '_'.
    #[schema(pattern = r"^[a-z0-9_]{1,32}$", example = "unlock")]
    pub op: String,
    /// A JSON object of at most 4096 bytes (none: `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: serde_json::Value,
    /// How long the command stays deliverable: at most 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800000, example = 60000)]
    pub expires_in_ms: Option<u64>,
    /// Or until when (unix ms, at most 7 days ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl CommandRequest {
    /// The command's `expires_at` at `now_ms`: exactly one of
    /// `expires_in_ms` (≥ 1) and `expires_at` (after now), at most
    /// `max_ttl_ms` ahead; `Err` says why not.
    pub fn expires_at(&self, now_ms: u64, max_ttl_ms: u64) -> Result<u64, String> {
        let expires_at = match (self.expires_in_ms, self.expires_at) {
            (Some(ttl), None) if ttl > 0 => now_ms.saturating_add(ttl),
            (Some(_), None) => return Err("`expires_in_ms` must be at least 1".into()),
            (None, Some(at)) if at > now_ms => at,
            (None, Some(_)) => return Err("`expires_at` is in the past".into()),
            _ => return Err("give exactly one of `expires_in_ms` and `expires_at`".into()),
        };
        if expires_at - now_ms > max_ttl_ms {
            let most = match max_ttl_ms % 86_400_000 {
                0 => format!("{} days", max_ttl_ms / 86_400_000),
                _ => format!("{} s", max_ttl_ms / 1000),
            };
            return Err(format!("a command may stay deliverable at most {most}"));
        }
        Ok(expires_at)
    }
}

/// The longest `op` a command may have.
pub const MAX_COMMAND_OP_LEN: usize = 32;
/// The largest `args` (as JSON) a command may carry: it goes to a device in
/// one MQTT message, and device stacks have small buffers.
pub const MAX_COMMAND_ARGS_BYTES: usize = 4096;

/// Whether `op` is a command name the hub's command service takes: 1–32
/// lowercase ASCII letters, digits or `_`.
pub fn is_command_op(op: &str) -> bool {
    (1..=MAX_COMMAND_OP_LEN).contains(&op.len())
        && op
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A command's `args` as the command service takes them: a JSON object
/// (none: `{}`) of at most `MAX_COMMAND_ARGS_BYTES` as JSON; `Err` says why
/// not.
pub fn command_args(args: serde_json::Value) -> Result<serde_json::Value, String> {
    let args = match args {
        serde_json::Value::Null => serde_json::json!({}),
        serde_json::Value::Object(map) => serde_json::Value::Object(map),
        _ => return Err("`args` must be a JSON object".into()),
    };
    if args.to_string().len() > MAX_COMMAND_ARGS_BYTES {
        return Err(format!(
            "`args` must be at most {MAX_COMMAND_ARGS_BYTES} bytes as JSON"
        ));
    }
    Ok(args)
}

/// Where a command stands. `pending`: not sent yet (the device is offline);
/// `sent`: published at least once, no answer yet; then exactly one of
/// `acked`, `failed` (the device answered `ok:false`) or `expired` (no answer
/// by `expires_at`; never sent after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Sent,
    Acked,
    Failed,
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Sent => "sent",
            CommandStatus::Acked => "acked",
            CommandStatus::Failed => "failed",
            CommandStatus::Expired => "expired",
        }
    }

    /// Whether the command has its final outcome.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Acked | CommandStatus::Failed | CommandStatus::Expired
        )
    }
}

/// Who asked for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandOrigin {
    /// Staff or a front end, through the HTTP API.
    Api,
    /// The therapy-robot safety interlock.
    Interlock,
    /// A gate access decision.
    Access,
    /// A booking's slot started or ended (`unlock`/`lock`).
    Schedule,
    /// A district operator, through the upstream (signed; docs/upstream.md,
    /// "Downlink"). Its id is the district's.
    District,
}

/// A command as the hub records it (the 202 answer and
/// `GET /api/v1/devices/{id}/commands/{cid}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandRecord {
    pub id: String,
    pub device: String,
    pub op: String,
    pub args: serde_json::Value,
    pub origin: CommandOrigin,
    pub status: CommandStatus,
    /// Unix ms: issued, deadline, first and last publish, outcome.
    pub created_at: u64,
    pub expires_at: u64,
    pub first_sent_at: Option<u64>,
    pub last_sent_at: Option<u64>,
    pub completed_at: Option<u64>,
    /// Times the hub published it.
    pub attempts: u32,
    /// The device's `error` when it answered `ok:false`.
    pub error: Option<String>,
}

impl CommandRecord {
    /// What goes on `/tenants/D/cmd`.
    pub fn wire(&self) -> crate::Command {
        crate::Command {
            id: self.id.clone(),
            op: self.op.clone(),
            args: self.args.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// `POST /api/v1/residents`. The credential is kept only as a keyed hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResidentRequest {
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "r2")]
    pub id: String,
    /// What the resident shows a gate (a card number, a QR code's text):
    /// 1-512 bytes.
    #[schema(min_length = 1, max_length = 512, example = "card-0042")]
    pub credential: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub group: Option<String>,
}

/// A resident as the API shows it (never the credential or its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResidentView {
    pub id: String,
    pub group: Option<String>,
    pub blocked: bool,
    pub created_at: u64,
}

/// `GET /api/v1/centers/{id}/occupancy`: people in the center and its rooms
/// now, and its visits today and this month (local days of the centers'
/// time zone, by the hub's clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CenterOccupancy {
    pub center: String,
    /// People inside: the entrance counter's in minus out.
    pub headcount: u64,
    pub visits_today: u64,
    pub visits_this_month: u64,
    pub rooms: Vec<RoomOccupancy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoomOccupancy {
    pub room: String,
    pub people: u64,
    /// Configured seats (`[[rooms]]` capacity), if any.
    pub seats: Option<u64>,
    /// `people / seats`.
    pub ratio: Option<f64>,
    /// Raised at 90% of the seats, cleared below 80%.
    pub saturated: bool,
}

/// `GET /api/v1/centers/{id}/visits?from=YYYY-MM-DD&to=YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CenterVisits {
    pub center: String,
    pub from: String,
    pub to: String,
    /// Every day from `from` to `to`, days without visits as 0.
    pub days: Vec<DayVisits>,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DayVisits {
    pub day: String,
    pub visits: u64,
}

/// `GET /api/v1/centers/{id}/pianos?from=YYYY-MM-DD&to=YYYY-MM-DD`: how
/// long each piano played per local day (ended sessions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CenterPianoUsage {
    pub center: String,
    pub from: String,
    pub to: String,
    /// In day order; pianos that did not play are left out.
    pub usage: Vec<PianoDay>,
    pub total_minutes: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PianoDay {
    pub day: String,
    pub piano: String,
    pub minutes: f64,
}

/// A room behind gates and counters: a `[[rooms]]` entry of the hub's
/// config file, or the body of `PUT /api/v1/centers/{center}/rooms/{id}`.
/// Give `hours = "24h"`, or `open` and `close` as `HH:MM` (local time;
/// `close` before `open` spans midnight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"center": "c1", "id": "spin", "capacity": 20, "hours": "24h"}))]
pub struct RoomConfig {
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "c1")]
    pub center: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "spin")]
    pub id: String,
    /// People allowed in at once.
    #[schema(minimum = 1, maximum = 100000, example = 20)]
    pub capacity: u32,
    /// `"24h"`, or none and `open` and `close`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^24h$", example = "24h")]
    pub hours: Option<String>,
    /// `HH:MM`, local time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-2][0-9]:[0-5][0-9]$")]
    pub open: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-2][0-9]:[0-5][0-9]$")]
    pub close: Option<String>,
}

/// A bookable resource. Give `slot_minutes` with opening hours (`hours =
/// "24h"`, or `open` and `close`), or explicit `[[resources.slots]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "yoga", "center": "c1", "kind": "class", "room": "hall",
    "capacity": 3, "slots": [{"days": ["mon", "wed", "fri"], "start": "19:00", "end": "20:00"}],
    "price": 0.0, "market_price": 80.0}))]
pub struct ResourceConfig {
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "pottery")]
    pub id: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "c1")]
    pub center: String,
    /// piano, therapy, gym, class, childcare, seat, ...
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "class")]
    pub kind: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "crafts")]
    pub room: String,
    /// Devices commanded `unlock`/`lock` at slot start/end, whose events
    /// check bookings in, and whose faults block slots (at most 64).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub devices: Vec<String>,
    /// Places per slot.
    #[schema(minimum = 1, maximum = 10000, example = 6)]
    pub capacity: u32,
    /// With opening hours: slots of this many minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 5, maximum = 1440, example = 60)]
    pub slot_minutes: Option<u32>,
    /// `"24h"`, or none and `open` and `close`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^24h$")]
    pub hours: Option<String>,
    /// `HH:MM`, local time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-2][0-9]:[0-5][0-9]$", example = "09:00")]
    pub open: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-2][0-9]:[0-5][0-9]$", example = "17:00")]
    pub close: Option<String>,
    /// Explicit slots, instead of `slot_minutes` (at most 96).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 96)]
    pub slots: Vec<SlotConfig>,
    /// Days ahead a slot may be booked.
    #[serde(default = "default_horizon_days")]
    #[schema(minimum = 1, maximum = 366)]
    pub horizon_days: u32,
    /// Price per slot, in yuan; must stay below `market_price`.
    #[schema(minimum = 0, example = 25.0)]
    pub price: f64,
    /// What the market charges for the same slot.
    #[schema(exclusive_minimum = 0, maximum = 1000000, example = 60.0)]
    pub market_price: f64,
    /// `[min, max]` age in months of the child at the slot (childcare),
    /// at most 216.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 2, max_items = 2)]
    pub child_age_months: Option<[u32; 2]>,
    /// Bookings per resident per local day / per week (Monday to Sunday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub per_week: Option<u32>,
    /// Bookings a resident may hold for slots not yet ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_active: Option<u32>,
    /// Places held for a group until `release_before_minutes` before the slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareConfig>,
    #[serde(default = "default_release_before_minutes")]
    #[schema(minimum = 0, maximum = 527040)]
    pub release_before_minutes: u32,
}

fn default_horizon_days() -> u32 {
    7
}

fn default_release_before_minutes() -> u32 {
    120
}

/// Explicit slots: `start`-`end` (local `HH:MM`) on `days` (`mon`..`sun`;
/// empty: every day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    #[serde(default)]
    #[schema(example = json!(["mon", "wed"]))]
    pub days: Vec<String>,
    /// `HH:MM`
    #[schema(pattern = "^[0-2][0-9]:[0-5][0-9]$", example = "15:00")]
    pub start: String,
    /// `HH:MM`
    #[schema(pattern = "^[0-2][0-9]:[0-5][0-9]$", example = "17:00")]
    pub end: String,
}

/// A share of each slot's places held for a group (`child`, `youth`,
/// `adult`, `senior`), in percent of the capacity (rounded up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    #[schema(example = "senior")]
    pub group: String,
    #[schema(minimum = 1, maximum = 100)]
    pub percent: u32,
}
