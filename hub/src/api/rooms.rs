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
use serde_json::{json, Value};

use super::routing::{get, may, Routes};
use super::{blocking, check_label, error, internal, json_body, ApiState, HttpError};
use crate::ingest::Control;
use crate::records::RoomConfig;
use crate::settings::RoomRules;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route("/api/v1/centers/{id}/rooms", get(may::READ, list_rooms))
        .route(
            "/api/v1/centers/{id}/rooms/{room}",
            get(may::READ, get_room).put(may::ADMIN, put_room),
        )
}

async fn list_rooms(
    State(state): State<Arc<ApiState>>,
    Path(center): Path<String>,
) -> Result<Json<Value>, HttpError> {
    check_label("center", &center)?;
    let rooms = state.rooms().of_center(&center);
    Ok(Json(json!({ "center": center, "rooms": rooms })))
}

async fn get_room(
    State(state): State<Arc<ApiState>>,
    Path((center, room)): Path<(String, String)>,
) -> Result<Json<RoomConfig>, HttpError> {
    let rules = state.rooms().get(&center, &room).copied();
    rules
        .map(|rules| Json(rules.config(&center, &room)))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no room {center}/{room}")))
}

/// Sets a room's seats and hours: stored (fsynced), then shown by the API
/// and handed to ingest, in the order the requests were taken.
async fn put_room(
    State(state): State<Arc<ApiState>>,
    Path((center, room)): Path<(String, String)>,
    body: Result<Json<RoomConfig>, JsonRejection>,
) -> Result<Json<RoomConfig>, HttpError> {
    let entry = json_body(body)?;
    for (field, given, path) in [("center", &entry.center, &center), ("id", &entry.id, &room)] {
        if given != path {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{field}` {given:?} differs from the path's {path:?}"),
            ));
        }
    }
    let rules = RoomRules::from_config(&entry).map_err(|(field, reason)| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid value for `{field}`: {reason}"),
        )
    })?;
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
