//! Rooms behind gates and counters: their seats and opening hours, listed
//! per center, read, or set (admin). A room set here is checked like a
//! `[[rooms]]` entry of the file (the same shape), kept in the store
//! (fsynced), replaces the file's entry of the same center and id, and is
//! in use by gate decisions and occupancy at once and after restarts.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::centers::CenterPath;
use super::routing::{may, Routes};
use super::{
    blocking, check_parameter, error, internal, invalid_field, json_body, same_as_path, ApiState,
    HttpError,
};
use crate::ingest::Control;
use crate::records::RoomConfig;
use crate::settings::RoomRules;

/// A center's room the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct RoomPath {
    /// The center's id.
    #[param(example = "c1")]
    id: String,
    /// The room's id.
    #[param(example = "spin")]
    room: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("rooms")
        .route(may::READ, routes!(list_rooms))
        .route(may::READ, routes!(get_room))
        .route(may::ADMIN, routes!(put_room))
}

/// A center's rooms.
#[derive(Serialize, ToSchema)]
struct RoomList {
    center: String,
    /// In id order.
    rooms: Vec<RoomConfig>,
}

/// A center's rooms: seats and opening hours (the file's, or the API's).
#[utoipa::path(get, path = "/api/v1/centers/{id}/rooms",
    params(CenterPath),
    responses((status = 200, description = "the rooms (none for a center the hub does not know)", body = RoomList)))]
async fn list_rooms(
    State(state): State<Arc<ApiState>>,
    Path(CenterPath { id: center }): Path<CenterPath>,
) -> Result<Json<RoomList>, HttpError> {
    check_parameter("center", &center)?;
    let rooms = state.rooms().of_center(&center);
    Ok(Json(RoomList { center, rooms }))
}

/// One room's seats and opening hours.
#[utoipa::path(get, path = "/api/v1/centers/{id}/rooms/{room}",
    params(RoomPath),
    responses(
        (status = 200, description = "the room", body = RoomConfig),
        (status = 404, description = "no such room"),
    ))]
async fn get_room(
    State(state): State<Arc<ApiState>>,
    Path(RoomPath { id: center, room }): Path<RoomPath>,
) -> Result<Json<RoomConfig>, HttpError> {
    let rules = state.rooms().get(&center, &room).copied();
    rules
        .map(|rules| Json(rules.config(&center, &room)))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no room {center}/{room}")))
}

/// Sets a room's seats and hours: stored (fsynced), then shown by the API
/// and handed to ingest, in the order the requests were taken.
#[utoipa::path(put, path = "/api/v1/centers/{id}/rooms/{room}",
    params(RoomPath),
    request_body = RoomConfig,
    responses(
        (status = 200, description = "set", body = RoomConfig),
        (status = 422, description = "a field invalid, or `center`/`id` not the path's"),
    ))]
async fn put_room(
    State(state): State<Arc<ApiState>>,
    Path(RoomPath { id: center, room }): Path<RoomPath>,
    body: Result<Json<RoomConfig>, JsonRejection>,
) -> Result<Json<RoomConfig>, HttpError> {
    let entry = json_body(body)?;
    same_as_path("center", &entry.center, &center)?;
    same_as_path("id", &entry.id, &room)?;
    let rules = RoomRules::from_config(&entry).map_err(invalid_field)?;
    blocking(&state, move |state| {
        // Held across the store write so that two requests for one room
        // reach the store, the API's copy and ingest in the same order.
        // invariant: no code panics while holding the lock.
        let mut rooms = state.rooms.write().expect("rooms lock");
        state.store.put_room(&entry).map_err(internal)?;
        rooms.put(&center, &room, rules);
        state.ingest.send(Control::Room {
            center: center.clone(),
            id: room.clone(),
            rules,
        });
        tracing::info!(%center, %room, seats = rules.capacity, "room set through the API");
        Ok(Json(rules.config(&center, &room)))
    })
    .await
}
