//! The HTTP API (axum), one module per route group: `health` (liveness,
//! readiness, metrics), `devices` (provisioning, revocation, twins,
//! events), `commands` (commands, interlock alarm acknowledgement),
//! `residents`, `centers` (occupancy, visits, piano use), `resources`
//! (resources and availability), `bookings` (bookings, check-in, waitlists,
//! notifications) and `clock` (the schedule's clock). Errors are
//! `{"error":"…"}` with a 4xx naming the problem. Every call that changes or
//! reveals something needs `Authorization: Bearer <admin token>`;
//! `/healthz` and `/readyz` do not; `/metrics` also takes the scrape-only
//! metrics token, which every other route refuses with 403. (Issuing
//! commands, acknowledging alarms and bookings are staff or front-end work;
//! roles separate from the admin token are a later hardening step.)
//!
//! Routes are declared through `Routes` (`routing`), which keeps their
//! methods and paths beside the router: `hub print-routes` lists them, and
//! the tests walk that list. Every request is timed into
//! `yizhan_http_request_duration_seconds{route,method,code}` (`track`).
//!
//! Handlers never publish to devices: they record what is asked and hand it
//! to the ingest thread (`ingest::Inbox`). They never touch the store on the
//! async runtime either (it also serves devices): store work, reads that
//! may wait for the disk and writes that fsync, runs on tokio's blocking
//! threads (`blocking`).

mod bookings;
mod centers;
mod clock;
mod commands;
mod devices;
mod health;
mod residents;
mod resources;
mod routing;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use protocol::api::ApiError;
use protocol::calendar::Calendar;
use protocol::secret::Presented;
use serde::Deserialize;
use serde_json::Value;

use crate::bookings::Bookings;
use crate::edge::Edge;
use crate::gauges::Census;
use crate::ingest::Inbox;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::settings::{is_label, Rooms};
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
    pub admin_token_sha256: String,
    /// The scrape-only token's hash (`/metrics`), if one is configured.
    pub metrics_token_sha256: Option<String>,
    /// Which components are down (`/readyz`).
    pub supervisor: Supervisor,
    pub epoch: u64,
    pub device_cert_days: u32,
    pub ready: AtomicBool,
    /// The centers' calendar (visits per local day).
    pub calendar: Calendar,
    /// Rooms' seats from `[[rooms]]`.
    pub rooms: Rooms,
    /// Devices per center and kind, certificates' expiry.
    pub census: Arc<Census>,
}

pub use routing::Endpoint;

/// Every route group.
fn all_routes() -> routing::Routes {
    routing::Routes::default()
        .merge(health::routes())
        .merge(devices::routes())
        .merge(commands::routes())
        .merge(residents::routes())
        .merge(centers::routes())
        .merge(resources::routes())
        .merge(bookings::routes())
        .merge(clock::routes())
}

/// Every route, each request timed.
pub fn router(state: Arc<ApiState>) -> Router {
    all_routes()
        .into_router()
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Every route's method and path, in declaration order
/// (`hub print-routes`).
pub fn endpoints() -> Vec<Endpoint> {
    all_routes().endpoints()
}

/// Times a request into `yizhan_http_request_duration_seconds`: the
/// route's template (`unmatched` when no route matched), its method
/// (`other` beyond the standard ones) and the status code.
async fn track(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = protocol::api::method_label(request.method().as_str());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
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

/// The request's bearer token, recognised (`protocol::secret::bearer`);
/// 401 when it is missing or unknown.
fn bearer(parts: &Parts, state: &ApiState) -> Result<Presented, HttpError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    protocol::secret::bearer(
        header,
        &state.admin_token_sha256,
        state.metrics_token_sha256.as_deref(),
    )
    .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// Proof that the request carried the admin token. The metrics token gets
/// 403: it is valid, but only for `/metrics`.
pub struct Admin;

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Admin, HttpError> {
        match bearer(parts, state)? {
            Presented::Full => Ok(Admin),
            Presented::Scrape => Err(error(
                StatusCode::FORBIDDEN,
                "the metrics token may only read /metrics; this route needs the admin token",
            )),
        }
    }
}

/// Proof that the request may read `/metrics`: the admin or the metrics
/// token.
pub struct Scrape;

impl FromRequestParts<Arc<ApiState>> for Scrape {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Scrape, HttpError> {
        bearer(parts, state).map(|_| Scrape)
    }
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

/// A query string decoded as `T`, or a 400 naming the problem.
fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, HttpError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

/// Longest window an availability or booking list answers at once.
const MAX_WINDOW_MS: u64 = 31 * 24 * 3_600_000;

/// An instant given as RFC 3339 or unix ms; a bare date is its local
/// midnight.
fn parse_instant(state: &ApiState, field: &str, value: &Value) -> Result<u64, HttpError> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowQuery {
    from: String,
    to: String,
    resident: Option<String>,
    resource: Option<String>,
}

fn window(state: &ApiState, query: &WindowQuery) -> Result<(u64, u64), HttpError> {
    let from = parse_instant(state, "from", &Value::String(query.from.clone()))?;
    let to = parse_instant(state, "to", &Value::String(query.to.clone()))?;
    if to <= from {
        return Err(error(StatusCode::BAD_REQUEST, "`to` must be after `from`"));
    }
    if to - from > MAX_WINDOW_MS {
        return Err(error(StatusCode::BAD_REQUEST, "at most 31 days at once"));
    }
    Ok((from, to))
}
