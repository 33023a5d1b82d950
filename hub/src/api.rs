//! The HTTP API (axum): device provisioning and revocation, twins, events,
//! commands, interlock alarm acknowledgement, residents, health, readiness
//! and metrics. Errors are `{"error":"…"}` with a 4xx naming the problem.
//! Every call that changes or reveals something needs
//! `Authorization: Bearer <admin token>`; `/healthz` and `/readyz` do not.
//! (Issuing commands and acknowledging alarms are staff work; a staff role
//! separate from the admin token is a later hardening step.)
//!
//! Handlers never publish to devices: they record what is asked and hand it
//! to the ingest thread (`Control`), then wake it. They never touch the
//! store on the async runtime either (it also serves devices): store work,
//! reads that may wait for the disk and writes that fsync, runs on tokio's
//! blocking threads (`blocking`).

mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Datelike, NaiveDate};
use protocol::api::{
    ApiError, CenterOccupancy, CenterPianoUsage, CenterVisits, CommandOrigin, CommandRecord,
    CommandRequest, DayVisits, PianoDay, ProvisionRequest, Provisioned, ResidentRequest,
    ResidentView, RoomOccupancy,
};
use protocol::calendar::Calendar;
use protocol::{DeviceKind, ENTRANCE_ROOM};
use serde::{Deserialize, Serialize};

use crate::bookings::Bookings;
use crate::clock::unix_ms;
use crate::commands::NewCommand;
use crate::edge::Edge;
use crate::ingest::{Control, Inbox};
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::records::{Alarm, DeviceRecord, Resident, StoredEvent, Twin};
use crate::secrets;
use crate::settings::{is_label, Rooms};
use crate::store::{ResidentConflict, Store};
use crate::supervise::{self, Supervisor};

/// Everything the handlers share.
pub struct ApiState {
    pub store: Arc<Store>,
    pub pki: Arc<Pki>,
    pub metrics: Metrics,
    /// The way to hand work to ingest.
    pub ingest: Arc<Inbox>,
    /// Resources and bookings.
    pub bookings: Arc<Bookings>,
    /// Key of resident credential hashes (`secrets::credential_hash`).
    pub credential_key: [u8; 32],
    pub edge: Arc<Edge>,
    pub admin_token_sha256: String,
    /// Which components are down (`/readyz`).
    pub supervisor: Supervisor,
    pub epoch: u64,
    pub device_cert_days: u32,
    pub ready: AtomicBool,
    /// The centers' calendar (visits per local day).
    pub calendar: Calendar,
    /// Rooms' seats from `[[rooms]]`.
    pub rooms: Rooms,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/devices", get(list_devices).post(provision))
        .route("/api/v1/devices/{id}", get(get_device).delete(revoke))
        .route("/api/v1/devices/{id}/events", get(device_events))
        .route(
            "/api/v1/devices/{id}/commands",
            get(list_commands).post(issue_command),
        )
        .route("/api/v1/devices/{id}/commands/{cid}", get(get_command))
        .route("/api/v1/devices/{id}/alarm/ack", post(acknowledge_alarm))
        .route("/api/v1/centers/{id}/occupancy", get(center_occupancy))
        .route("/api/v1/centers/{id}/visits", get(center_visits))
        .route("/api/v1/centers/{id}/pianos", get(center_pianos))
        .route("/api/v1/residents", post(add_resident))
        .route("/api/v1/residents/{id}", get(get_resident))
        .route("/api/v1/residents/{id}/block", post(block_resident))
        .route("/api/v1/residents/{id}/unblock", post(unblock_resident))
        .merge(schedule::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// An API error: status and reason.
pub struct HttpError(StatusCode, pub(crate) String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ApiError { error: self.1 };
        (self.0, Json(body)).into_response()
    }
}

fn error(status: StatusCode, reason: impl Into<String>) -> HttpError {
    HttpError(status, reason.into())
}

/// Runs `work` on a blocking thread: sled reads may wait for the disk and
/// writes fsync, while the runtime has devices and other requests to serve.
async fn blocking<T: Send + 'static>(
    state: &Arc<ApiState>,
    work: impl FnOnce(&ApiState) -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(internal)?
}

fn internal(err: impl std::fmt::Display) -> HttpError {
    tracing::error!(error = %err, "API request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the hub's log",
    )
}

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Admin, HttpError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(token) if secrets::matches_sha256(token.trim(), &state.admin_token_sha256) => {
                Ok(Admin)
            }
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "invalid bearer token")),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>`",
            )),
        }
    }
}

/// 200 once started; 503 while starting, and for good once a supervised
/// component is down (the body names it; the process exits moments later).
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let down = state.supervisor.down();
    if !down.is_empty() {
        let body = serde_json::json!({
            "error": format!("components down: {}", supervise::describe(&down)),
            "down": down,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if state.ready.load(Ordering::Relaxed) {
        "ready".into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

async fn metrics(_: Admin, State(state): State<Arc<ApiState>>) -> Result<Response, HttpError> {
    let text = blocking(&state, |state| Ok(scrape(state))).await?;
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    Ok((content_type, text).into_response())
}

/// Refreshes the gauges read from the store (its size, the booking
/// gauges' bounded range scans) and renders every metric. The twin count
/// is kept in memory.
fn scrape(state: &ApiState) -> String {
    if let Ok(size) = state.store.size_on_disk() {
        state.metrics.store_size.set(size as i64);
    }
    let twins = i64::try_from(state.store.twin_count()).unwrap_or(i64::MAX);
    state.metrics.twins.set(twins);
    if let Err(error) = state.bookings.refresh_gauges(&state.metrics) {
        tracing::warn!(%error, "booking gauges not refreshed");
    }
    state.metrics.render()
}

fn check_label(field: &str, value: &str) -> Result<(), HttpError> {
    if is_label(value) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{field}` must be 1-64 letters, digits, '-' or '_'"),
        ))
    }
}

fn unprocessable(reason: impl Into<String>) -> HttpError {
    error(StatusCode::UNPROCESSABLE_ENTITY, reason)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, HttpError> {
    body.map(|Json(value)| value)
        .map_err(|e| error(e.status(), e.body_text()))
}

async fn provision(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ProvisionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Provisioned>), HttpError> {
    let request = json_body(body)?;
    let provisioned = blocking(&state, move |state| provision_device(state, request)).await?;
    Ok((StatusCode::CREATED, Json(provisioned)))
}

/// Issues the certificate, records the device (fsynced) and tells ingest.
fn provision_device(state: &ApiState, request: ProvisionRequest) -> Result<Provisioned, HttpError> {
    if !protocol::is_valid_device_id(&request.id) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`id` must be 1-48 ASCII letters or digits",
        ));
    }
    check_label("center", &request.center)?;
    check_label("room", &request.room)?;
    let issued = state
        .pki
        .issue_device(&request.id, state.device_cert_days)
        .map_err(internal)?;
    let password = secrets::random_secret();
    let record = DeviceRecord {
        id: request.id.clone(),
        center: request.center,
        room: request.room,
        kind: request.kind,
        password_sha256: secrets::sha256_hex(&password),
        certificate_sha256: issued.certificate_sha256,
        not_after: issued.not_after_ms,
        provisioned_at: unix_ms(),
    };
    let twin = Twin::provisioned(&record);
    if !state.store.provision(&record, &twin).map_err(internal)? {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {} already exists", record.id),
        ));
    }
    state.ingest.send(Control::Provisioned(record.id.clone()));
    tracing::info!(device = %record.id, center = %record.center, kind = %record.kind, "device provisioned");
    let body = Provisioned {
        id: record.id.clone(),
        certificate: issued.certificate_pem,
        private_key: issued.private_key_pem,
        ca_certificate: state.pki.ca_pem().to_string(),
        mqtt_username: record.id,
        mqtt_password: password,
        not_after: record.not_after,
    };
    Ok(body)
}

#[derive(Serialize)]
struct Revoked {
    id: String,
    revoked: bool,
    session_closed: bool,
}

async fn revoke(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, HttpError> {
    let key = id.clone();
    let revoked = blocking(&state, move |state| {
        state.store.revoke(&key, unix_ms()).map_err(internal)
    })
    .await?;
    if !revoked {
        return Err(error(StatusCode::NOT_FOUND, format!("no device {id}")));
    }
    // Order matters: ingest drops the device's messages before its session
    // is cut, and the edge already refuses it (store says revoked).
    state.ingest.send(Control::Revoked(id.clone()));
    state.metrics.revocations.inc();
    let session_closed = state.edge.disconnect_device(&id);
    tracing::info!(device = %id, session_closed, "device revoked");
    Ok(Json(Revoked {
        id,
        revoked: true,
        session_closed,
    }))
}

async fn get_device(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, HttpError> {
    blocking(&state, move |state| device_view(state, &id))
        .await
        .map(Json)
}

fn device_view(state: &ApiState, id: &str) -> Result<DeviceView, HttpError> {
    let twin = state.store.twin(id).map_err(internal)?;
    let twin = twin.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let revoked = state.store.is_revoked(id).map_err(internal)?;
    let mut twin = twin.view(state.epoch);
    // A revoked device's session is cut before the API answers; ingest
    // writes the twin offline moments later.
    twin.online &= !revoked;
    Ok(DeviceView { twin, revoked })
}

/// A twin as the API shows it.
#[derive(Serialize)]
pub struct DeviceView {
    #[serde(flatten)]
    twin: Twin,
    revoked: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    center: Option<String>,
    kind: Option<String>,
    online: Option<bool>,
    /// Only ids after this one (paging).
    after: Option<String>,
    limit: Option<usize>,
}

const MAX_LIST: usize = 10_000;

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<Twin>,
    /// Pass as `after` to get the next page; absent on the last page.
    next: Option<String>,
}

async fn list_devices(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeviceList>, HttpError> {
    let Query(query) = query.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let kind = match &query.kind {
        Some(kind) => Some(
            DeviceKind::parse(kind)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("unknown kind {kind:?}")))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(1_000).clamp(1, MAX_LIST);
    blocking(&state, move |state| list_twins(state, &query, kind, limit))
        .await
        .map(Json)
}

/// The twins `query` selects, `limit` at most, in id order (a full scan).
fn list_twins(
    state: &ApiState,
    query: &ListQuery,
    kind: Option<DeviceKind>,
    limit: usize,
) -> Result<DeviceList, HttpError> {
    let mut devices = Vec::new();
    let mut next = None;
    for twin in state.store.twins() {
        let twin = twin.map_err(internal)?.view(state.epoch);
        if query
            .after
            .as_ref()
            .is_some_and(|after| twin.id.as_str() <= after.as_str())
            || query.center.as_ref().is_some_and(|c| *c != twin.center)
            || kind.is_some_and(|k| k != twin.kind)
            || query.online.is_some_and(|o| o != twin.online)
        {
            continue;
        }
        if devices.len() == limit {
            next = devices.last().map(|t: &Twin| t.id.clone());
            break;
        }
        devices.push(twin);
    }
    Ok(DeviceList { devices, next })
}

#[derive(Serialize)]
struct EventList {
    device: String,
    count: usize,
    events: Vec<StoredEvent>,
}

/// Events stored for one device, each `(device, id)` once.
async fn device_events(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<EventList>, HttpError> {
    blocking(&state, move |state| {
        known_device(state, &id)?;
        let events = state.store.events_of(&id).map_err(internal)?;
        Ok(EventList {
            device: id,
            count: events.len(),
            events,
        })
    })
    .await
    .map(Json)
}

fn known_device(state: &ApiState, id: &str) -> Result<DeviceRecord, HttpError> {
    state
        .store
        .device(id)
        .map_err(internal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))
}

/// Longest time a command issued through the API may stay deliverable.
const MAX_COMMAND_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
const MAX_OP_LEN: usize = 32;

/// `expires_at` of a command request, checked.
fn command_expiry(request: &CommandRequest, now_ms: u64) -> Result<u64, HttpError> {
    let expires_at = match (request.expires_in_ms, request.expires_at) {
        (Some(ttl), None) if ttl > 0 => now_ms.saturating_add(ttl),
        (Some(_), None) => return Err(unprocessable("`expires_in_ms` must be at least 1")),
        (None, Some(at)) if at > now_ms => at,
        (None, Some(_)) => return Err(unprocessable("`expires_at` is in the past")),
        _ => {
            return Err(unprocessable(
                "give exactly one of `expires_in_ms` and `expires_at`",
            ))
        }
    };
    if expires_at - now_ms > MAX_COMMAND_TTL_MS {
        return Err(unprocessable(
            "a command may stay deliverable at most 7 days",
        ));
    }
    Ok(expires_at)
}

fn check_op(op: &str) -> Result<(), HttpError> {
    let ok = !op.is_empty()
        && op.len() <= MAX_OP_LEN
        && op
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(unprocessable(format!(
            "`op` must be 1-{MAX_OP_LEN} lowercase ASCII letters, digits or '_'"
        )))
    }
}

/// Records a command `pending` (fsynced) and hands it to ingest, which
/// publishes it when the device is online. 202: the outcome comes later.
async fn issue_command(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<CommandRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CommandRecord>), HttpError> {
    let request = json_body(body)?;
    let record = blocking(&state, move |state| issue(state, id, request)).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// Checks and records a command (fsynced), then hands it to ingest.
fn issue(
    state: &ApiState,
    id: String,
    request: CommandRequest,
) -> Result<CommandRecord, HttpError> {
    known_device(state, &id)?;
    if state.store.is_revoked(&id).map_err(internal)? {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {id} is revoked"),
        ));
    }
    check_op(&request.op)?;
    let now = unix_ms();
    let expires_at = command_expiry(&request, now)?;
    let args = match request.args {
        serde_json::Value::Null => serde_json::json!({}),
        serde_json::Value::Object(map) => serde_json::Value::Object(map),
        _ => return Err(unprocessable("`args` must be a JSON object")),
    };
    let command = NewCommand {
        device: id,
        op: request.op,
        args,
        expires_at,
        origin: CommandOrigin::Api,
    };
    let record = command.record(&state.store, now).map_err(internal)?;
    state.store.flush().map_err(internal)?;
    state.ingest.send(Control::Command(record.clone()));
    tracing::info!(device = %record.device, command = %record.id, op = %record.op, "command issued");
    Ok(record)
}

async fn get_command(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path((id, cid)): Path<(String, String)>,
) -> Result<Json<CommandRecord>, HttpError> {
    blocking(&state, move |state| {
        let record = state.store.command(&id, &cid).map_err(internal)?;
        record.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no command {cid} for {id}")))
    })
    .await
    .map(Json)
}

#[derive(Serialize)]
struct CommandList {
    device: String,
    count: usize,
    commands: Vec<CommandRecord>,
}

/// Every command of one device, oldest first.
async fn list_commands(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<CommandList>, HttpError> {
    blocking(&state, move |state| {
        known_device(state, &id)?;
        let commands = state.store.commands_of(&id).map_err(internal)?;
        Ok(CommandList {
            device: id,
            count: commands.len(),
            commands,
        })
    })
    .await
    .map(Json)
}

#[derive(Serialize)]
struct AlarmAcknowledged {
    id: String,
    alarm: Alarm,
}

/// Staff acknowledge a robot's interlock alarm; from then on it may start
/// sessions again. 202: ingest clears the alarm on the twin moments later.
async fn acknowledge_alarm(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<AlarmAcknowledged>), HttpError> {
    let key = id.clone();
    let twin = blocking(&state, move |state| {
        state.store.twin(&key).map_err(internal)
    })
    .await?;
    let twin = twin.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let Some(alarm) = twin.alarm else {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {id} has no unacknowledged alarm"),
        ));
    };
    state.ingest.send(Control::AcknowledgeAlarm(id.clone()));
    tracing::info!(device = %id, reason = alarm.reason.as_str(), "alarm acknowledgement accepted");
    Ok((StatusCode::ACCEPTED, Json(AlarmAcknowledged { id, alarm })))
}

const MAX_CREDENTIAL_LEN: usize = 512;

fn resident_view(resident: Resident) -> ResidentView {
    ResidentView {
        id: resident.id,
        group: resident.group,
        blocked: resident.blocked,
        created_at: resident.created_at,
    }
}

/// Registers a resident; the credential is kept only as a keyed hash.
async fn add_resident(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ResidentRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ResidentView>), HttpError> {
    let request = json_body(body)?;
    let resident = blocking(&state, move |state| register(state, request)).await?;
    Ok((StatusCode::CREATED, Json(resident_view(resident))))
}

/// Checks and records a resident (fsynced).
fn register(state: &ApiState, request: ResidentRequest) -> Result<Resident, HttpError> {
    check_label("id", &request.id)?;
    if let Some(group) = &request.group {
        check_label("group", group)?;
    }
    if request.credential.is_empty() || request.credential.len() > MAX_CREDENTIAL_LEN {
        return Err(unprocessable(format!(
            "`credential` must be 1-{MAX_CREDENTIAL_LEN} bytes"
        )));
    }
    let resident = Resident {
        credential_hash: secrets::credential_hash(&state.credential_key, &request.credential),
        id: request.id,
        group: request.group,
        blocked: false,
        created_at: unix_ms(),
    };
    match state.store.add_resident(&resident).map_err(internal)? {
        Ok(()) => {}
        Err(ResidentConflict::IdTaken) => {
            return Err(error(
                StatusCode::CONFLICT,
                format!("resident {} already exists", resident.id),
            ))
        }
        Err(ResidentConflict::CredentialTaken) => {
            return Err(error(
                StatusCode::CONFLICT,
                "this credential belongs to another resident",
            ))
        }
    }
    tracing::info!(resident = %resident.id, "resident registered");
    Ok(resident)
}

async fn get_resident(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<ResidentView>, HttpError> {
    blocking(&state, move |state| {
        let resident = state.store.resident(&id).map_err(internal)?;
        resident
            .map(resident_view)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no resident {id}")))
    })
    .await
    .map(Json)
}

async fn block_resident(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<ResidentView>, HttpError> {
    blocking(&state, move |state| set_blocked(state, &id, true)).await
}

async fn unblock_resident(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<ResidentView>, HttpError> {
    blocking(&state, move |state| set_blocked(state, &id, false)).await
}

fn set_blocked(state: &ApiState, id: &str, blocked: bool) -> Result<Json<ResidentView>, HttpError> {
    let resident = state
        .store
        .set_resident_blocked(id, blocked)
        .map_err(internal)?;
    let resident =
        resident.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no resident {id}")))?;
    tracing::info!(resident = %id, blocked, "resident access changed");
    Ok(Json(resident_view(resident)))
}

/// Longest range of days a center query answers at once.
const MAX_RANGE_DAYS: i64 = 366;

#[derive(Debug, Deserialize)]
struct DayRangeQuery {
    from: String,
    to: String,
}

fn parse_day(field: &str, text: &str) -> Result<NaiveDate, HttpError> {
    protocol::calendar::parse_date(text).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("`{field}` must be a date as YYYY-MM-DD, got {text:?}"),
        )
    })
}

/// Visits of `center` on every day from `from` to `to`.
fn visits_between(
    state: &ApiState,
    center: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<CenterVisits, HttpError> {
    let counted: HashMap<NaiveDate, u64> = state
        .store
        .visits(center, from, to)
        .map_err(internal)?
        .into_iter()
        .collect();
    let days: Vec<DayVisits> = from
        .iter_days()
        .take_while(|day| *day <= to)
        .map(|day| DayVisits {
            day: day.to_string(),
            visits: counted.get(&day).copied().unwrap_or(0),
        })
        .collect();
    Ok(CenterVisits {
        center: center.to_owned(),
        from: from.to_string(),
        to: to.to_string(),
        total: days.iter().map(|d| d.visits).sum(),
        days,
    })
}

async fn center_visits(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(center): Path<String>,
    query: Result<Query<DayRangeQuery>, QueryRejection>,
) -> Result<Json<CenterVisits>, HttpError> {
    check_label("center", &center)?;
    let (from, to) = day_range(query)?;
    blocking(&state, move |state| {
        visits_between(state, &center, from, to)
    })
    .await
    .map(Json)
}

/// The days of a `?from=YYYY-MM-DD&to=YYYY-MM-DD` query (both included).
fn day_range(
    query: Result<Query<DayRangeQuery>, QueryRejection>,
) -> Result<(NaiveDate, NaiveDate), HttpError> {
    let Query(query) = query.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (from, to) = (parse_day("from", &query.from)?, parse_day("to", &query.to)?);
    if to < from {
        return Err(error(StatusCode::BAD_REQUEST, "`to` is before `from`"));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_RANGE_DAYS} days at once"),
        ));
    }
    Ok((from, to))
}

async fn center_pianos(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(center): Path<String>,
    query: Result<Query<DayRangeQuery>, QueryRejection>,
) -> Result<Json<CenterPianoUsage>, HttpError> {
    check_label("center", &center)?;
    let (from, to) = day_range(query)?;
    blocking(&state, move |state| piano_usage(state, center, from, to))
        .await
        .map(Json)
}

fn piano_usage(
    state: &ApiState,
    center: String,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<CenterPianoUsage, HttpError> {
    let usage: Vec<PianoDay> = state
        .store
        .usage(&center, from, to)
        .map_err(internal)?
        .into_iter()
        .map(|(day, piano, ms)| PianoDay {
            day: day.to_string(),
            piano,
            minutes: ms as f64 / 60_000.0,
        })
        .collect();
    Ok(CenterPianoUsage {
        center,
        from: from.to_string(),
        to: to.to_string(),
        total_minutes: usage.iter().map(|u| u.minutes).sum(),
        usage,
    })
}

async fn center_occupancy(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(center): Path<String>,
) -> Result<Json<CenterOccupancy>, HttpError> {
    check_label("center", &center)?;
    blocking(&state, move |state| occupancy(state, center))
        .await
        .map(Json)
}

/// Headcount, visits today and this month, and the rooms of `center`.
fn occupancy(state: &ApiState, center: String) -> Result<CenterOccupancy, HttpError> {
    let today = state.calendar.day(unix_ms());
    let first_of_month = today.with_day(1).unwrap_or(today);
    let month = visits_between(state, &center, first_of_month, today)?;
    let mut headcount = 0;
    let mut rooms = Vec::new();
    for (c, room, count) in state.store.occupancies().map_err(internal)? {
        if c != center {
            continue;
        }
        if room == ENTRANCE_ROOM {
            headcount = count.people;
            continue;
        }
        let seats = state.rooms.seats(&c, &room);
        rooms.push(RoomOccupancy {
            room,
            people: count.people,
            seats,
            ratio: seats.map(|s| count.people as f64 / s.max(1) as f64),
            saturated: count.saturated,
        });
    }
    Ok(CenterOccupancy {
        center,
        headcount,
        visits_today: month.days.last().map(|d| d.visits).unwrap_or(0),
        visits_this_month: month.total,
        rooms,
    })
}
