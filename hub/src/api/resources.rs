//! Bookable resources: listed, added or changed (checked like a config
//! entry, kept in the store), and their availability per slot.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::routing::{may, Routes};
use super::{
    blocking, error, internal, invalid_field, json_body, query_of, same_as_path, window, ApiState,
    HttpError, WindowQuery,
};
use crate::bookings::SlotView;
use crate::records::ResourceConfig;
use crate::settings::Resource;

/// A resource's entry may list many slots and shares.
const RESOURCE_BODY: usize = 64 * 1024;

/// A resource the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ResourcePath {
    /// The resource's id.
    #[param(example = "yoga")]
    id: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("resources")
        .route(may::SEE_BOOKINGS, routes!(list_resources))
        .route_reading(may::ADMIN, RESOURCE_BODY, routes!(put_resource))
        .route(may::SEE_BOOKINGS, routes!(availability))
}

/// The bookable resources.
#[derive(Serialize, ToSchema)]
struct ResourceList {
    resources: Vec<ResourceConfig>,
}

/// The bookable resources: the file's, then those set through the API.
#[utoipa::path(get, path = "/api/v1/resources",
    responses((status = 200, description = "every resource", body = ResourceList)))]
async fn list_resources(State(state): State<Arc<ApiState>>) -> Json<ResourceList> {
    let resources: Vec<_> = state
        .bookings
        .resources
        .all()
        .iter()
        .map(|r| r.config.clone())
        .collect();
    Json(ResourceList { resources })
}

/// Adds or changes a resource (admin): checked like a config entry, kept
/// in the store (fsynced), in use at once and after restarts.
#[utoipa::path(put, path = "/api/v1/resources/{id}",
    params(ResourcePath),
    request_body = ResourceConfig,
    responses(
        (status = 200, description = "set", body = ResourceConfig),
        (status = 422, description = "a field invalid (`detail` names it), or `id` not the path's"),
    ))]
async fn put_resource(
    State(state): State<Arc<ApiState>>,
    Path(ResourcePath { id }): Path<ResourcePath>,
    body: Result<Json<ResourceConfig>, JsonRejection>,
) -> Result<Json<ResourceConfig>, HttpError> {
    let config = json_body(body)?;
    same_as_path("id", &config.id, &id)?;
    let resource = Resource::from_config(&config).map_err(invalid_field)?;
    let config = blocking(&state, move |state| {
        state.store.put_resource(&config).map_err(internal)?;
        Ok(config)
    })
    .await?;
    state.bookings.resources.put(resource);
    tracing::info!(resource = %id, "resource set through the API");
    Ok(Json(config))
}

/// A resource's slots in a window.
#[derive(Serialize, ToSchema)]
struct Availability {
    resource: String,
    slots: Vec<SlotView>,
}

/// A resource's slots in a window: places, bookings, held shares,
/// waitlists, maintenance, the manager on duty.
#[utoipa::path(get, path = "/api/v1/resources/{id}/availability",
    params(ResourcePath, WindowQuery),
    responses(
        (status = 200, description = "the slots starting in the window", body = Availability),
        (status = 404, description = "no resource with this id"),
    ))]
async fn availability(
    State(state): State<Arc<ApiState>>,
    Path(ResourcePath { id }): Path<ResourcePath>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Availability>, HttpError> {
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
    Ok(Json(Availability {
        resource: id,
        slots,
    }))
}
