//! The HTTP API (axum), one module per route group: `health` (liveness,
//! readiness, metrics), `devices` (provisioning, revocation, twins,
//! events), `certificates` (renewal), `commands` (commands, interlock alarm acknowledgement),
//! `residents`, `centers` (occupancy, visits, piano use), `rooms` (rooms'
//! seats and hours), `resources` (resources and availability), `bookings`
//! (bookings, check-in, waitlists, notifications), `clock` (the
//! schedule's clock), `tokens` (tokens an admin creates and revokes),
//! `audit` (the log of changes) and `openapi` (the API's OpenAPI document,
//! derived from the handlers' `#[utoipa::path]` and the route
//! declarations). Errors are RFC 9457 problem details (`problem`): a 4xx
//! whose `detail` names the problem, `type` its kind.
//!
//! Routes are declared through `Routes` (`routing`) with the roles that
//! may call each method (docs/security.md): `hub print-routes` lists them,
//! the guard (`guard`) enforces them in one place for every request (401
//! without a known token, 403 naming the roles needed) and hands every
//! change to the audit log (`audit`). `/healthz` and `/readyz` need no
//! token. Tokens are the configuration's admin and metrics tokens and those
//! an admin created (`keys`). Every request is timed into
//! `yizhan_http_request_duration_seconds{route,method,code}` (`track`) and
//! answered within `api.request_timeout_ms` (`deadline`); connections are
//! served by `serve` (header-read timeout, connection limit, optional TLS).
//!
//! Handlers never publish to devices: they record what is asked and hand it
//! to the ingest thread (`ingest::Inbox`). They never touch the store on the
//! async runtime either (it also serves devices): store work, reads that
//! may wait for the disk and writes that fsync, runs on tokio's blocking
//! threads (`blocking`).

mod audit;
mod bookings;
mod centers;
mod certificates;
mod clock;
mod commands;
mod devices;
mod guard;
mod health;
mod keys;
mod openapi;
mod problem;
mod ranges;
mod residents;
mod resources;
mod rooms;
mod routing;
mod serve;
mod tokens;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use protocol::calendar::Calendar;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::bookings::Bookings;
use crate::edge::Edge;
use crate::gauges::Census;
use crate::ingest::Inbox;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::settings::{is_label, FieldError, Rooms};
use crate::store::Store;
use crate::supervise::Supervisor;

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
    /// The tokens the API knows, and whose they are.
    pub keys: Arc<Keys>,
    /// Where the guard records changes.
    pub audit: AuditLog,
    /// Longest a request may take to be answered (`deadline`).
    pub request_timeout: std::time::Duration,
    /// Which components are down (`/readyz`).
    pub supervisor: Supervisor,
    pub epoch: u64,
    pub device_cert_days: u32,
    /// The longest (and default) grace of a renewed device's previous
    /// certificate (`broker.certificate_renewal_grace_secs`).
    pub renewal_grace_secs: u64,
    pub ready: AtomicBool,
    /// The centers' calendar (visits per local day).
    pub calendar: Calendar,
    /// Devices per center and kind, certificates' expiry.
    pub census: Arc<Census>,
    /// Rooms' seats and hours (the file's, then the API's): what the API
    /// shows. Ingest keeps its own copy for its decisions and learns of a
    /// change as `Control::Room`. std RwLock: never held across an await.
    pub rooms: std::sync::RwLock<Rooms>,
}

impl ApiState {
    fn rooms(&self) -> std::sync::RwLockReadGuard<'_, Rooms> {
        // invariant: no code panics while holding the lock.
        self.rooms.read().expect("rooms lock")
    }
}

pub use audit::{keep as keep_audit, AuditLog, AuditQueue};
pub use keys::{Caller, Keys};
pub use openapi::document;
pub use problem::{HttpError, Kind};
pub use routing::{Allowed, Endpoint};
pub use serve::{serve, tls_acceptor, ServeError};

/// Every route group.
fn all_routes() -> routing::Routes {
    routing::Routes::default()
        .merge(health::routes())
        .merge(devices::routes())
        .merge(certificates::routes())
        .merge(commands::routes())
        .merge(residents::routes())
        .merge(centers::routes())
        .merge(rooms::routes())
        .merge(resources::routes())
        .merge(bookings::routes())
        .merge(clock::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(openapi::routes())
}

/// Every route; each request timed (outermost), checked by the guard,
/// its errors made problems, then answered within the request timeout.
pub fn router(state: Arc<ApiState>) -> Router {
    let parts = all_routes().into_parts();
    let guard = Arc::new(guard::Guard {
        policy: routing::Policy::of(&parts.endpoints),
        keys: state.keys.clone(),
        audit: state.audit.clone(),
    });
    use axum::middleware::{from_fn, from_fn_with_state};
    parts
        .router
        .fallback(|| async { HttpError::new(Kind::NoSuchRoute, "no such route") })
        .layer(from_fn_with_state(state.request_timeout, deadline))
        .layer(from_fn(problem::problems))
        .layer(from_fn_with_state(guard, guard::guard))
        // `yizhan_http_request_duration_seconds`.
        .layer(from_fn_with_state(
            state.metrics.http_requests.clone(),
            service::http::track,
        ))
        .with_state(state)
}

/// Every route's method, path and roles, in declaration order
/// (`hub print-routes`).
pub fn endpoints() -> Vec<Endpoint> {
    all_routes().into_parts().endpoints
}

/// Answers 503 when the handler has not answered within `timeout`. The
/// handler is dropped: a change it handed on (to the desk, to ingest) may
/// still be made, which the reason says.
async fn deadline(
    State(timeout): State<std::time::Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => HttpError::new(
            Kind::Timeout,
            format!(
                "no answer within {} ms (api.request_timeout_ms); a change asked for may still be made",
                timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// An error answered with `status`, of the kind that status is by
/// default (`Kind::of_status`).
fn error(status: StatusCode, reason: impl Into<String>) -> HttpError {
    HttpError::of_status(status, reason)
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

/// `check_label` of a path or query parameter: 400.
fn check_parameter(field: &str, value: &str) -> Result<(), HttpError> {
    check_label(field, value).map_err(HttpError::for_parameter)
}

fn unprocessable(reason: impl Into<String>) -> HttpError {
    error(StatusCode::UNPROCESSABLE_ENTITY, reason)
}

/// An entry a body gives for the resource its path names: 422 when the
/// body's `field` says otherwise.
fn same_as_path(field: &str, given: &str, path: &str) -> Result<(), HttpError> {
    if given == path {
        return Ok(());
    }
    Err(unprocessable(format!(
        "`{field}` {given:?} differs from the path's {path:?}"
    )))
}

/// An entry's field refused by the settings' check: 422 naming it.
fn invalid_field((field, reason): FieldError) -> HttpError {
    unprocessable(format!("invalid value for `{field}`: {reason}"))
}

/// A JSON body decoded as `T`, or the problem axum found: 400 not JSON,
/// 413 too large, 415 not `application/json`, 422 a field wrong.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, HttpError> {
    body.map(|Json(value)| value).map_err(json_problem)
}

/// The problem axum found in a JSON body (see `json_body`).
fn json_problem(rejection: JsonRejection) -> HttpError {
    let kind = match rejection.status() {
        StatusCode::BAD_REQUEST => Kind::MalformedBody,
        status => Kind::of_status(status),
    };
    HttpError::new(kind, rejection.body_text())
}

/// A query string decoded as `T`, or a 400 naming the problem.
fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, HttpError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

/// An instant given as RFC 3339 or unix ms (a bare date is its local
/// midnight), in the API's years (`ranges::instant`).
fn parse_instant(state: &ApiState, field: &str, value: &Value) -> Result<u64, HttpError> {
    ranges::instant(field, parse_time(state, field, value)?)
}

fn parse_time(state: &ApiState, field: &str, value: &Value) -> Result<u64, HttpError> {
    let bad = || {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "`{field}` must be an RFC 3339 time, a date YYYY-MM-DD or unix ms, got {value}"
            ),
        )
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(text) => match text.parse::<u64>() {
            Ok(ms) => Ok(ms),
            Err(_) => state
                .bookings
                .calendar
                .parse_instant(text)
                .map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

/// How an instant is given in a body (`slot_start`, the clock's `now`):
/// unix ms, or a string holding an RFC 3339 time, a local date
/// `YYYY-MM-DD` (its midnight) or unix ms; in the years 2000-2199
/// (`ranges::instant`). A schema only: handlers read the field as a JSON
/// value, so a wrong one is refused naming the field.
pub(super) struct Instant;

impl utoipa::PartialSchema for Instant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let ms = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(ranges::EARLIEST_MS))
            .exclusive_maximum(Some(ranges::END_MS))
            .description(Some("unix ms"));
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("RFC 3339, YYYY-MM-DD or unix ms"))
            .examples(["2027-01-04T09:00:00+08:00"]);
        OneOfBuilder::new().item(ms).item(text).into()
    }
}

impl utoipa::ToSchema for Instant {}

/// A window of time (`from`, `to`) a query asks about: each an RFC 3339
/// time, a local date (its midnight) or unix ms, in the years 2000-2199,
/// `to` after `from`, at most 31 days apart.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WindowQuery {
    #[param(example = "2027-01-04T09:00:00+08:00")]
    from: String,
    #[param(example = "2027-01-05")]
    to: String,
}

fn window(state: &ApiState, query: &WindowQuery) -> Result<(u64, u64), HttpError> {
    let from = parse_instant(state, "from", &Value::String(query.from.clone()))?;
    let to = parse_instant(state, "to", &Value::String(query.to.clone()))?;
    if to <= from {
        return Err(error(StatusCode::BAD_REQUEST, "`to` must be after `from`"));
    }
    if to - from > ranges::MAX_WINDOW_MS {
        return Err(error(StatusCode::BAD_REQUEST, "at most 31 days at once"));
    }
    Ok((from, to))
}
