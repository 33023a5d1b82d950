//! Liveness, readiness (which components are down) and the Prometheus
//! metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::api::Problem;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::problem::{answer, HttpError, Kind};
use super::routing::{may, Routes};
use super::{blocking, ApiState};
use crate::supervise::{self, Down};

pub(super) fn routes() -> Routes {
    Routes::group("health")
        .route(may::ANYONE, routes!(healthz))
        .route(may::ANYONE, routes!(readyz))
        .route(may::SCRAPE, routes!(metrics))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The answer while a component is down: a `not-ready` problem naming
/// each.
#[derive(Serialize, ToSchema)]
struct ComponentsDown {
    #[serde(flatten)]
    problem: Problem,
    /// The components down and why.
    down: Vec<Down>,
}

/// Readiness: 200 once started; 503 while starting, and for good once a
/// supervised component is down (the body names it; the process exits
/// moments later).
#[utoipa::path(get, path = "/readyz",
    responses(
        (status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "starting, or components down (`down` names them)", body = ComponentsDown, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let down = state.supervisor.down();
    if !down.is_empty() {
        let reason = format!("components down: {}", supervise::describe(&down));
        let problem = HttpError::new(Kind::NotReady, reason).problem();
        let body = ComponentsDown { problem, down };
        return answer(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    if state.ready.load(Ordering::Relaxed) {
        "ready".into_response()
    } else {
        HttpError::new(Kind::NotReady, "starting").into_response()
    }
}

/// The Prometheus metrics (docs/metrics.md). Rendering reads /proc for the
/// `process_*` metrics, hence the blocking thread.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "the metrics in Prometheus' text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<Arc<ApiState>>) -> Result<Response, HttpError> {
    let text = blocking(&state, |state| Ok(scrape(state))).await?;
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    Ok((content_type, text).into_response())
}

/// Renders every metric. Each value is kept in memory where its fact
/// changes (docs/metrics.md); nothing here reads the store.
fn scrape(state: &ApiState) -> String {
    let twins = i64::try_from(state.store.twin_count()).unwrap_or(i64::MAX);
    state.metrics.twins.set(twins);
    state.metrics.render()
}
