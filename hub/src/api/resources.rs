//! Bookable resources: listed, added or changed (checked like a config
//! entry, kept in the store), and their availability per slot.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::routing::{get, put, Routes};
use super::{
    blocking, error, internal, json_body, query_of, window, Admin, ApiState, HttpError, WindowQuery,
};
use crate::bookings::SlotView;
use crate::records::ResourceConfig;
use crate::settings::Resource;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route("/api/v1/resources", get(list_resources))
        .route("/api/v1/resources/{id}", put(put_resource))
        .route("/api/v1/resources/{id}/availability", get(availability))
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
