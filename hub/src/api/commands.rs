//! Commands to a device through the API (recorded `pending` and fsynced,
//! then handed to ingest), their records, and staff acknowledging a
//! therapy robot's interlock alarm.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::api::{
    command_args, CommandOrigin, CommandRecord, CommandRequest, MAX_COMMAND_OP_LEN,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::devices::{known_device, DevicePath};
use super::ranges::{next_of, PageQuery};
use super::routing::{may, Routes};
use super::{blocking, error, internal, json_body, query_of, unprocessable, ApiState, HttpError};
use crate::clock::unix_ms;
use crate::commands::NewCommand;
use crate::ingest::Control;
use crate::records::Alarm;

/// A device's command the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct CommandPath {
    /// The device's id.
    #[param(example = "piano1")]
    id: String,
    /// The command's id.
    cid: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("commands")
        .route(may::READ, routes!(list_commands))
        .route(may::STAFF, routes!(issue_command))
        .route(may::READ, routes!(get_command))
        .route(may::STAFF, routes!(acknowledge_alarm))
}

/// Longest time a command issued through the API may stay deliverable.
const MAX_COMMAND_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// `expires_at` of a command request, checked.
fn command_expiry(request: &CommandRequest, now_ms: u64) -> Result<u64, HttpError> {
    request
        .expires_at(now_ms, MAX_COMMAND_TTL_MS)
        .map_err(unprocessable)
}

fn check_op(op: &str) -> Result<(), HttpError> {
    match protocol::api::is_command_op(op) {
        true => Ok(()),
        false => Err(unprocessable(format!(
            "`op` must be 1-{MAX_COMMAND_OP_LEN} lowercase ASCII letters, digits or '_'"
        ))),
    }
}

/// Records a command `pending` (fsynced) and hands it to ingest, which
/// publishes it when the device is online. 202: the outcome comes later.
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands",
    params(DevicePath),
    request_body = CommandRequest,
    responses(
        (status = 202, description = "recorded; sent when the device is online", body = CommandRecord, links(
            ("read" = (operation_id = "get_command", parameters(("id" = "$request.path.id"), ("cid" = "$response.body#/id")))),
        )),
        (status = 404, description = "no device with this id"),
        (status = 409, description = "the device is revoked"),
        (status = 422, description = "`op`, `args` or the expiry invalid"),
    ))]
async fn issue_command(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
    body: Result<Json<CommandRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CommandRecord>), HttpError> {
    let request = json_body(body)?;
    let record = blocking(&state, move |state| issue(state, id, request)).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// Checks and records a command (fsynced), then hands it to ingest.
fn issue(
    state: &ApiState,
    id: String,
    request: CommandRequest,
) -> Result<CommandRecord, HttpError> {
    known_device(state, &id)?;
    if state.store.is_revoked(&id).map_err(internal)? {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {id} is revoked"),
        ));
    }
    check_op(&request.op)?;
    let now = unix_ms();
    let expires_at = command_expiry(&request, now)?;
    let args = command_args(request.args).map_err(unprocessable)?;
    let command = NewCommand {
        device: id,
        op: request.op,
        args,
        expires_at,
        origin: CommandOrigin::Api,
    };
    let record = command.record(&state.store, now).map_err(internal)?;
    state.store.flush().map_err(internal)?;
    state.ingest.send(Control::Command(record.clone()));
    tracing::info!(device = %record.device, command = %record.id, op = %record.op, "command issued");
    Ok(record)
}

/// One command's record: where it stands.
#[utoipa::path(get, path = "/api/v1/devices/{id}/commands/{cid}",
    params(CommandPath),
    responses(
        (status = 200, description = "the command", body = CommandRecord),
        (status = 404, description = "no such command for this device"),
    ))]
async fn get_command(
    State(state): State<Arc<ApiState>>,
    Path(CommandPath { id, cid }): Path<CommandPath>,
) -> Result<Json<CommandRecord>, HttpError> {
    blocking(&state, move |state| {
        let record = state.store.command(&id, &cid).map_err(internal)?;
        record.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no command {cid} for {id}")))
    })
    .await
    .map(Json)
}

/// A page of a device's commands.
#[derive(Serialize, ToSchema)]
struct CommandList {
    device: String,
    /// Commands on this page.
    count: usize,
    commands: Vec<CommandRecord>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The commands of one device, oldest first, a page at a time (`after`,
/// `limit`).
#[utoipa::path(get, path = "/api/v1/devices/{id}/commands",
    params(DevicePath, PageQuery),
    responses(
        (status = 200, description = "a page of commands", body = CommandList),
        (status = 404, description = "no device with this id"),
    ))]
async fn list_commands(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<CommandList>, HttpError> {
    let at = query_of(query)?.checked()?;
    blocking(&state, move |state| {
        known_device(state, &id)?;
        let page = state
            .store
            .commands_page(&id, at.after.as_deref(), at.limit)
            .map_err(internal)?;
        Ok(CommandList {
            device: id,
            count: page.items.len(),
            commands: page.items,
            next: next_of(page.next),
        })
    })
    .await
    .map(Json)
}

/// An acknowledgement taken.
#[derive(Serialize, ToSchema)]
struct AlarmAcknowledged {
    id: String,
    alarm: Alarm,
}

/// Staff acknowledge a robot's interlock alarm; from then on it may start
/// sessions again. 202: ingest clears the alarm on the twin moments later.
#[utoipa::path(post, path = "/api/v1/devices/{id}/alarm/ack",
    params(DevicePath),
    responses(
        (status = 202, description = "taken; the twin's alarm is cleared moments later", body = AlarmAcknowledged),
        (status = 404, description = "no device with this id"),
        (status = 409, description = "the device has no unacknowledged alarm"),
    ))]
async fn acknowledge_alarm(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
) -> Result<(StatusCode, Json<AlarmAcknowledged>), HttpError> {
    let key = id.clone();
    let twin = blocking(&state, move |state| {
        state.store.twin(&key).map_err(internal)
    })
    .await?;
    let twin = twin.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let Some(alarm) = twin.alarm else {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {id} has no unacknowledged alarm"),
        ));
    };
    state.ingest.send(Control::AcknowledgeAlarm(id.clone()));
    tracing::info!(device = %id, reason = alarm.reason.as_str(), "alarm acknowledgement accepted");
    Ok((StatusCode::ACCEPTED, Json(AlarmAcknowledged { id, alarm })))
}
