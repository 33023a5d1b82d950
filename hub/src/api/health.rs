//! Liveness, readiness (which components are down) and the Prometheus
//! metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::routing::{get, may, Routes};
use super::{blocking, error, ApiState, HttpError};
use crate::supervise;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route("/healthz", get(may::ANYONE, || async { "ok" }))
        .route("/readyz", get(may::ANYONE, readyz))
        .route("/metrics", get(may::SCRAPE, metrics))
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

/// The admin or the metrics token. Rendering reads /proc for the
/// `process_*` metrics, hence the blocking thread.
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
