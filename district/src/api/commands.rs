//! Commands to devices (docs/upstream.md, "Downlink"), with the API token:
//!
//! - `POST /api/v1/district/centers/{center}/devices/{device}/commands`
//!   with `{"op", "args", "expires_in_ms" | "expires_at"}` (as the hub's
//!   own command API): signed, published, 202 with the command's record
//!   once the broker acknowledged it; 400 for a bad center or device, 422
//!   for a field out of range, 409 while commands are off (no key), 503
//!   when the broker did not acknowledge in time.
//! - `GET /api/v1/district/commands/{id}`: the command, its status and the
//!   hub's outcome or refusals.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::api::CommandRequest;
use protocol::upstream::{is_center, is_command_id};

use super::{blocking, error, internal, ApiState, HttpError, Reader};
use crate::downlink::SendError;

pub(super) async fn send_command(
    _: Reader,
    State(state): State<Arc<ApiState>>,
    Path((center, device)): Path<(String, String)>,
    body: Result<Json<CommandRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let Some(commands) = &state.commands else {
        return Err(error(
            StatusCode::CONFLICT,
            "commands are off: this district has no signing key ([downlink] key_file)",
        ));
    };
    if !is_center(&center) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the center must be 1-64 ASCII letters, digits, '-' or '_'",
        ));
    }
    if !protocol::is_valid_device_id(&device) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the device must be 1-48 ASCII letters or digits",
        ));
    }
    let Json(request) = body.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let sent = commands
        .send(&center, &device, request, crate::unix_ms())
        .await;
    match sent {
        Ok(command) => Ok((StatusCode::ACCEPTED, Json(command)).into_response()),
        Err(SendError::Invalid(reason)) => Err(error(StatusCode::UNPROCESSABLE_ENTITY, reason)),
        Err(unconfirmed @ SendError::Unconfirmed(_)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            unconfirmed.to_string(),
        )),
        Err(other) => Err(internal(other)),
    }
}

pub(super) async fn get_command(
    _: Reader,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    if !is_command_id(&id) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a command id is 16-64 ASCII letters, digits, '-' or '_'",
        ));
    }
    let found = blocking(&state, move |state| {
        state.store.command(&id).map_err(internal)
    })
    .await?;
    match found {
        Some(command) => Ok(Json(command).into_response()),
        None => Err(error(StatusCode::NOT_FOUND, "no such command")),
    }
}
