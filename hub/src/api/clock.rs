//! The schedule's clock: read it, or move a `fixed:` one forward (tests,
//! demos; 409 on the system clock).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::routing::{may, Routes};
use super::{error, json_body, parse_instant, ApiState, HttpError, Instant};

pub(super) fn routes() -> Routes {
    Routes::group("schedule")
        .route(may::SEE_BOOKINGS, routes!(clock))
        .route(may::ADMIN, routes!(move_clock))
}

/// The schedule's time.
#[derive(Serialize, ToSchema)]
struct ClockView {
    /// Unix ms.
    now: u64,
    /// The same instant in the centers' time zone, RFC 3339.
    local: String,
}

fn clock_view(state: &ApiState, now: u64) -> Json<ClockView> {
    let local = state.bookings.calendar.local(now).to_rfc3339();
    Json(ClockView { now, local })
}

/// The time scheduling runs on (the system's, or a `fixed:` one).
#[utoipa::path(get, path = "/api/v1/schedule/clock",
    responses((status = 200, description = "the schedule's time", body = ClockView)))]
async fn clock(State(state): State<Arc<ApiState>>) -> Json<ClockView> {
    clock_view(&state, state.bookings.clock.now_ms())
}

/// Where to move the clock.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    #[schema(value_type = Instant)]
    now: Value,
}

/// Moves a `fixed:` schedule clock forward (tests, demos).
#[utoipa::path(post, path = "/api/v1/schedule/clock",
    request_body = ClockBody,
    responses(
        (status = 200, description = "moved", body = ClockView),
        (status = 409, description = "the clock is the system's, or `now` is before the clock's time"),
        (status = 422, description = "`now` is not an instant in the years 2000-2199"),
    ))]
async fn move_clock(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ClockBody>, JsonRejection>,
) -> Result<Json<ClockView>, HttpError> {
    let body = json_body(body)?;
    let to = parse_instant(&state, "now", &body.now).map_err(HttpError::for_field)?;
    let now = state
        .bookings
        .clock
        .advance_to(to)
        .map_err(|reason| error(StatusCode::CONFLICT, reason))?;
    tracing::info!(now, "schedule clock moved");
    Ok(clock_view(&state, now))
}
