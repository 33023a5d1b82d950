//! Bookable resources: listed, added or changed (checked like a config
//! entry, kept in the store), and their availability per slot.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::routing::{get, may, put, Routes};
use super::{
    blocking, error, internal, json_body, query_of, window, ApiState, HttpError, WindowQuery,
};
use crate::bookings::SlotView;
use crate::records::ResourceConfig;
use crate::settings::Resource;

/// A resource's entry may list many slots and shares.
const RESOURCE_BODY: usize = 64 * 1024;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route("/api/v1/resources", get(may::SEE_BOOKINGS, list_resources))
        .route(
            "/api/v1/resources/{id}",
            put(may::ADMIN, put_resource).body_limit(RESOURCE_BODY),
        )
        .route(
            "/api/v1/resources/{id}/availability",
            get(may::SEE_BOOKINGS, availability),
        )
}

async fn list_resources(State(state): State<Arc<ApiState>>) -> Json<Value> {
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
