//! The schedule's clock: read it, or move a `fixed:` one forward (tests,
//! demos; 409 on the system clock).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::routing::{get, may, Routes};
use super::{error, json_body, parse_instant, ApiState, HttpError};

pub(super) fn routes() -> Routes {
    Routes::default().route(
        "/api/v1/schedule/clock",
        get(may::SEE_BOOKINGS, clock).post(may::ADMIN, move_clock),
    )
}

fn clock_view(state: &ApiState, now: u64) -> Json<Value> {
    let local = state.bookings.calendar.local(now).to_rfc3339();
    Json(json!({ "now": now, "local": local }))
}

async fn clock(State(state): State<Arc<ApiState>>) -> Json<Value> {
    clock_view(&state, state.bookings.clock.now_ms())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    now: Value,
}

/// Moves a `fixed:` schedule clock forward (tests, demos).
async fn move_clock(
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
