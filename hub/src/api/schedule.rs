//! HTTP routes of the schedule: resources (listed, added or changed) and
//! their availability, bookings,
//! check-in, waitlists, notifications, and the schedule's clock (movable
//! only when configured `fixed:`). Booking calls need the admin token for
//! now; front-end and staff roles are a later step.
//!
//! Refusals carry the rule: 422 `{"error","rule"}`; a full slot is 409
//! `{"error","offer":{booking},"waitlist":"/api/v1/bookings/<id>/waitlist"}`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, check_label, error, internal, json_body, Admin, ApiState, HttpError};
use crate::bookings::{BookRequest, DeskError, SlotView};
use crate::records::ResourceConfig;
use crate::records::{Booking, Group};
use crate::schedule::Refusal;
use crate::settings::Resource;

/// Longest window an availability or booking list answers at once.
const MAX_WINDOW_MS: u64 = 31 * 24 * 3_600_000;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/resources", get(list_resources))
        .route("/api/v1/resources/{id}", axum::routing::put(put_resource))
        .route("/api/v1/resources/{id}/availability", get(availability))
        .route("/api/v1/bookings", get(list_bookings).post(book))
        .route("/api/v1/bookings/{id}", get(get_booking).delete(cancel))
        .route("/api/v1/bookings/{id}/checkin", post(check_in))
        .route("/api/v1/bookings/{id}/waitlist", post(join_waitlist))
        .route("/api/v1/notifications", get(notifications))
        .route("/api/v1/schedule/clock", get(clock).post(move_clock))
}

async fn list_resources(_: Admin, State(state): State<Arc<ApiState>>) -> Json<Value> {
    let resources: Vec<_> = state
        .bookings
        .resources
        .all()
        .iter()
        .map(|r| r.config.clone())
        .collect();
    Json(json!({ "resources": resources }))
}

/// Adds or changes a resource (admin): checked like a config entry, kept
/// in the store (fsynced), in use at once and after restarts.
async fn put_resource(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<ResourceConfig>, JsonRejection>,
) -> Result<Json<ResourceConfig>, HttpError> {
    let config = json_body(body)?;
    if config.id != id {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`id` {:?} differs from the path's {id:?}", config.id),
        ));
    }
    let resource = Resource::from_config(&config).map_err(|(field, reason)| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid value for `{field}`: {reason}"),
        )
    })?;
    let config = blocking(&state, move |state| {
        state.store.put_resource(&config).map_err(internal)?;
        Ok(config)
    })
    .await?;
    state.bookings.resources.put(resource);
    tracing::info!(resource = %id, "resource set through the API");
    Ok(Json(config))
}

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
struct WindowQuery {
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

fn query_of(query: Result<Query<WindowQuery>, QueryRejection>) -> Result<WindowQuery, HttpError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

async fn availability(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let query = query_of(query)?;
    let resource = state
        .bookings
        .resources
        .get(&id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no resource {id}")))?;
    let (from, to) = window(&state, &query)?;
    let slots: Vec<SlotView> = blocking(&state, move |state| {
        let slots = state.bookings.availability(&resource, from, to);
        slots.map_err(internal)
    })
    .await?;
    Ok(Json(json!({ "resource": id, "slots": slots })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookBody {
    resource: String,
    slot_start: Value,
    resident: String,
    group: String,
    #[serde(default)]
    child_birthdate: Option<String>,
}

async fn book(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<BookBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Booking>), Response> {
    let body = json_body(body).map_err(IntoResponse::into_response)?;
    let request = book_request(&state, body).map_err(IntoResponse::into_response)?;
    let booking = state.bookings.book(request).await.map_err(desk_error)?;
    tracing::debug!(booking = %booking.id, resource = %booking.resource, "booked");
    Ok((StatusCode::CREATED, Json(booking)))
}

fn book_request(state: &ApiState, body: BookBody) -> Result<BookRequest, HttpError> {
    check_label("resident", &body.resident)?;
    if state.bookings.resources.get(&body.resource).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no resource {}", body.resource),
        ));
    }
    let group = Group::parse(&body.group).ok_or_else(|| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`group` must be child, youth, adult or senior",
        )
    })?;
    let child_birthdate = body
        .child_birthdate
        .map(|d| {
            protocol::calendar::parse_date(&d).map_err(|_| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "`child_birthdate` must be a date as YYYY-MM-DD",
                )
            })
        })
        .transpose()?;
    let slot_start = parse_instant(state, "slot_start", &body.slot_start)
        .map_err(|e| HttpError(StatusCode::UNPROCESSABLE_ENTITY, e.1))?;
    Ok(BookRequest {
        resource: body.resource,
        slot_start,
        resident: body.resident,
        group,
        child_birthdate,
    })
}

fn desk_error(e: DeskError) -> Response {
    match e {
        DeskError::Refused(Refusal::Rule { rule, reason }, _) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": reason, "rule": rule })),
        )
            .into_response(),
        DeskError::Refused(Refusal::Full { reason }, offer) => {
            let waitlist = offer
                .as_ref()
                .map(|o| format!("/api/v1/bookings/{}/waitlist", o.id));
            (
                StatusCode::CONFLICT,
                Json(json!({ "error": reason, "offer": offer, "waitlist": waitlist })),
            )
                .into_response()
        }
        DeskError::NoResource(_) | DeskError::NoBooking(_) => {
            error(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        DeskError::Conflict(reason) => error(StatusCode::CONFLICT, reason).into_response(),
        DeskError::Store(_) | DeskError::Stopped => internal(e).into_response(),
    }
}

async fn get_booking(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, HttpError> {
    blocking(&state, move |state| {
        let booking = state.bookings.booking(&id).map_err(internal)?;
        booking.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no booking {id}")))
    })
    .await
    .map(Json)
}

async fn cancel(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.cancel(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn check_in(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.check_in(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn join_waitlist(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.join_waitlist(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn list_bookings(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let query = query_of(query)?;
    if query.resident.is_none() && query.resource.is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "give `resident` or `resource` (or both)",
        ));
    }
    let (from, to) = window(&state, &query)?;
    let bookings = blocking(&state, move |state| {
        let (resident, resource) = (query.resident.as_deref(), query.resource.as_deref());
        let bookings = state.bookings.bookings(resident, resource, from, to);
        bookings.map_err(internal)
    })
    .await?;
    Ok(Json(
        json!({ "count": bookings.len(), "bookings": bookings }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResidentQuery {
    resident: String,
}

async fn notifications(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ResidentQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let Query(query) = query.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let resident = query.resident;
    blocking(&state, move |state| {
        let list = state.bookings.notifications(&resident).map_err(internal)?;
        Ok(Json(json!({ "resident": resident, "notifications": list })))
    })
    .await
}

fn clock_view(state: &ApiState, now: u64) -> Json<Value> {
    let local = state.bookings.calendar.local(now).to_rfc3339();
    Json(json!({ "now": now, "local": local }))
}

async fn clock(_: Admin, State(state): State<Arc<ApiState>>) -> Json<Value> {
    clock_view(&state, state.bookings.clock.now_ms())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    now: Value,
}

/// Moves a `fixed:` schedule clock forward (tests, demos).
async fn move_clock(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ClockBody>, JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let body = json_body(body)?;
    let to = parse_instant(&state, "now", &body.now)?;
    let now = state
        .bookings
        .clock
        .advance_to(to)
        .map_err(|reason| error(StatusCode::CONFLICT, reason))?;
    tracing::info!(now, "schedule clock moved");
    Ok(clock_view(&state, now))
}
