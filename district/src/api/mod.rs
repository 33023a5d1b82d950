//! The district's HTTP API (axum). Every route but `/healthz` and
//! `/readyz` needs `Authorization: Bearer <token>`; `/metrics` also takes
//! the scrape-only metrics token, which every other route answers 403.
//! Errors are `{"error": "…"}` with a 4xx naming the problem. Store reads
//! run on blocking threads.
//!
//! - `GET /api/v1/district/centers`: every center with its hubs, its
//!   devices and who is online, when it was last heard of, and today's
//!   tally; every hub's status.
//! - `GET /api/v1/district/hubs`: every hub's status.
//! - `GET /api/v1/district/hubs/{hub}/messages?[after=][&limit=]`: the ids
//!   of the hub's messages applied (an audit: compare with the hub's
//!   store), in order, within the dedupe window.
//! - `GET /api/v1/district/visits?from=YYYY-MM-DD&to=YYYY-MM-DD[&center=]`:
//!   per center and local day visits, events, alarms, bookings.
//! - `GET /api/v1/district/alarms?[from=&to=][&center=][&limit=]`: the
//!   alarms, newest first.
//! - `POST /api/v1/district/centers/{center}/devices/{device}/commands`,
//!   `GET /api/v1/district/commands/{id}`: commands to devices
//!   (`commands`).

mod commands;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use protocol::calendar::Calendar;
use protocol::secret::Presented;
use serde::{Deserialize, Serialize};

use crate::message::is_label;
use crate::metrics::Metrics;
use crate::records::{AlarmRecord, DayTally, Status};
use crate::store::Store;

/// What the handlers share.
pub struct ApiState {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub calendar: Calendar,
    pub token_sha256: String,
    pub metrics_token_sha256: Option<String>,
    /// The source is consuming.
    pub ready: Arc<AtomicBool>,
    /// Why the service stopped being able to work, once it did.
    pub failed: Arc<std::sync::Mutex<Option<String>>>,
    /// Commands to devices; `None` without a signing key.
    pub commands: Option<Arc<crate::downlink::Commands>>,
}

/// The largest command request body (its `args` are at most 4 KiB).
const MAX_COMMAND_BODY: usize = 16 * 1024;

/// Every route, each request timed.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/district/centers", get(centers))
        .route("/api/v1/district/hubs", get(hubs))
        .route("/api/v1/district/hubs/{hub}/messages", get(hub_messages))
        .route("/api/v1/district/visits", get(visits))
        .route("/api/v1/district/alarms", get(alarms))
        .route(
            "/api/v1/district/centers/{center}/devices/{device}/commands",
            post(commands::send_command).layer(DefaultBodyLimit::max(MAX_COMMAND_BODY)),
        )
        .route("/api/v1/district/commands/{id}", get(commands::get_command))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.http_requests.clone(),
            service::http::track,
        ))
        .with_state(state)
}

pub struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, reason: impl Into<String>) -> HttpError {
    HttpError(status, reason.into())
}

fn internal(err: impl std::fmt::Display) -> HttpError {
    tracing::error!(error = %err, "API request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the district's log",
    )
}

/// The request's bearer token, recognised; 401 when none or an unknown one.
fn bearer(parts: &Parts, state: &ApiState) -> Result<Presented, HttpError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    protocol::secret::bearer(
        header,
        &state.token_sha256,
        state.metrics_token_sha256.as_deref(),
    )
    .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// Proof of the API token; the metrics token gets 403.
pub struct Reader;

impl FromRequestParts<Arc<ApiState>> for Reader {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Reader, HttpError> {
        match bearer(parts, state)? {
            Presented::Full => Ok(Reader),
            Presented::Scrape => Err(error(
                StatusCode::FORBIDDEN,
                "the metrics token may only read /metrics",
            )),
        }
    }
}

/// Proof of the API or the metrics token.
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

async fn blocking<T: Send + 'static>(
    state: &Arc<ApiState>,
    work: impl FnOnce(&ApiState) -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(internal)?
}

/// 200 while the source is consumed; 503 naming why not.
async fn readyz(State(state): State<Arc<ApiState>>) -> Result<&'static str, HttpError> {
    let failed = state
        .failed
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if let Some(reason) = failed {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, reason));
    }
    match state.ready.load(Ordering::Relaxed) {
        true => Ok("ready"),
        false => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not consuming: the source is not connected (see the log)",
        )),
    }
}

async fn metrics(_: Scrape, State(state): State<Arc<ApiState>>) -> Result<Response, HttpError> {
    let text = blocking(&state, |state| Ok(state.metrics.render())).await?;
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    Ok((content_type, text).into_response())
}

#[derive(Serialize)]
struct CenterView {
    center: String,
    #[serde(flatten)]
    status: Status,
    /// Today's tally (the district's local day).
    today: DayTally,
}

#[derive(Serialize)]
struct CentersAnswer {
    day: String,
    centers: Vec<CenterView>,
    hubs: Vec<HubView>,
}

#[derive(Serialize)]
struct HubView {
    hub: String,
    #[serde(flatten)]
    status: Status,
}

fn hub_views(store: &Store) -> Result<Vec<HubView>, HttpError> {
    Ok(store
        .statuses(true)
        .map_err(internal)?
        .into_iter()
        .map(|(hub, status)| HubView { hub, status })
        .collect())
}

async fn centers(_: Reader, State(state): State<Arc<ApiState>>) -> Result<Response, HttpError> {
    let answer = blocking(&state, |state| {
        let today = state.calendar.day(crate::unix_ms());
        let mut days = state.store.days(None, today, today).map_err(internal)?;
        let centers = state
            .store
            .statuses(false)
            .map_err(internal)?
            .into_iter()
            .map(|(center, status)| CenterView {
                today: days
                    .get_mut(&center)
                    .and_then(|d| d.remove(&today))
                    .unwrap_or_default(),
                center,
                status,
            })
            .collect();
        Ok(CentersAnswer {
            day: today.to_string(),
            centers,
            hubs: hub_views(&state.store)?,
        })
    })
    .await?;
    Ok(Json(answer).into_response())
}

async fn hubs(_: Reader, State(state): State<Arc<ApiState>>) -> Result<Response, HttpError> {
    let hubs = blocking(&state, |state| hub_views(&state.store)).await?;
    Ok(Json(serde_json::json!({ "hubs": hubs })).into_response())
}

/// The most ids one answer lists.
const MAX_IDS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn hub_messages(
    _: Reader,
    State(state): State<Arc<ApiState>>,
    Path(hub): Path<String>,
    query: Result<Query<IdsQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let query = query_of(query)?;
    if !is_label(&hub) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the hub must be 1-64 letters, digits, '-', '_' or '.'",
        ));
    }
    let limit = query.limit.unwrap_or(MAX_IDS);
    if !(1..=MAX_IDS).contains(&limit) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`limit` must be between 1 and {MAX_IDS}"),
        ));
    }
    let prefix = format!("{hub}/");
    let ids = blocking(&state, move |state| {
        state
            .store
            .seen_ids(&prefix, query.after.as_deref(), limit)
            .map_err(internal)
    })
    .await?;
    let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
    Ok(Json(serde_json::json!({ "hub": hub, "ids": ids, "next": next })).into_response())
}

/// Longest range of days `/visits` answers at once.
const MAX_RANGE_DAYS: i64 = 366;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitsQuery {
    from: String,
    to: String,
    center: Option<String>,
}

#[derive(Serialize)]
struct DayView {
    day: String,
    #[serde(flatten)]
    tally: DayTally,
}

#[derive(Serialize)]
struct CenterDays {
    center: String,
    /// Every day from `from` to `to`, days without news as zeros.
    days: Vec<DayView>,
    visits: u64,
}

#[derive(Serialize)]
struct VisitsAnswer {
    from: String,
    to: String,
    centers: Vec<CenterDays>,
    visits: u64,
}

fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, HttpError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

fn check_center(center: Option<String>) -> Result<Option<String>, HttpError> {
    match center {
        Some(c) if !is_label(&c) => Err(error(
            StatusCode::BAD_REQUEST,
            "`center` must be 1-64 letters, digits, '-', '_' or '.'",
        )),
        center => Ok(center),
    }
}

async fn visits(
    _: Reader,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<VisitsQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let query = query_of(query)?;
    let (from, to) = protocol::calendar::day_range(&query.from, &query.to, MAX_RANGE_DAYS)
        .map_err(|reason| error(StatusCode::BAD_REQUEST, reason))?;
    let center = check_center(query.center)?;
    let answer = blocking(&state, move |state| {
        let days = state
            .store
            .days(center.as_deref(), from, to)
            .map_err(internal)?;
        Ok(visits_answer(from, to, days))
    })
    .await?;
    Ok(Json(answer).into_response())
}

fn visits_answer(
    from: NaiveDate,
    to: NaiveDate,
    days: BTreeMap<String, BTreeMap<NaiveDate, DayTally>>,
) -> VisitsAnswer {
    let centers: Vec<CenterDays> = days
        .into_iter()
        .map(|(center, mut counted)| {
            let days: Vec<DayView> = from
                .iter_days()
                .take_while(|day| *day <= to)
                .map(|day| DayView {
                    day: day.to_string(),
                    tally: counted.remove(&day).unwrap_or_default(),
                })
                .collect();
            CenterDays {
                center,
                visits: days.iter().map(|d| d.tally.visits).sum(),
                days,
            }
        })
        .collect();
    VisitsAnswer {
        from: from.to_string(),
        to: to.to_string(),
        visits: centers.iter().map(|c| c.visits).sum(),
        centers,
    }
}

/// The most alarms one answer lists.
const MAX_ALARMS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmsQuery {
    from: Option<String>,
    to: Option<String>,
    center: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct AlarmsAnswer {
    alarms: Vec<AlarmRecord>,
}

/// An instant as RFC 3339, a local date (its midnight) or unix ms.
fn parse_instant(calendar: &Calendar, field: &str, text: &str) -> Result<u64, HttpError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    calendar.parse_instant(text).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "`{field}` must be an RFC 3339 time, a date YYYY-MM-DD or unix ms, got {text:?}"
            ),
        )
    })
}

async fn alarms(
    _: Reader,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<AlarmsQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let query = query_of(query)?;
    let from = match &query.from {
        Some(text) => parse_instant(&state.calendar, "from", text)?,
        None => 0,
    };
    let to = match &query.to {
        Some(text) => parse_instant(&state.calendar, "to", text)?,
        None => u64::MAX,
    };
    if to <= from {
        return Err(error(StatusCode::BAD_REQUEST, "`to` must be after `from`"));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_ALARMS).contains(&limit) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`limit` must be between 1 and {MAX_ALARMS}"),
        ));
    }
    let center = check_center(query.center)?;
    let alarms = blocking(&state, move |state| {
        state
            .store
            .alarms(from, to, center.as_deref(), limit)
            .map_err(internal)
    })
    .await?;
    Ok(Json(AlarmsAnswer { alarms }).into_response())
}
