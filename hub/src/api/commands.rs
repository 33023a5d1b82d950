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
use serde::Serialize;

use super::devices::known_device;
use super::ranges::{next_of, PageQuery};
use super::routing::{get, may, post, Routes};
use super::{blocking, error, internal, json_body, query_of, unprocessable, ApiState, HttpError};
use crate::clock::unix_ms;
use crate::commands::NewCommand;
use crate::ingest::Control;
use crate::records::Alarm;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route(
            "/api/v1/devices/{id}/commands",
            get(may::READ, list_commands).post(may::STAFF, issue_command),
        )
        .route(
            "/api/v1/devices/{id}/commands/{cid}",
            get(may::READ, get_command),
        )
        .route(
            "/api/v1/devices/{id}/alarm/ack",
            post(may::STAFF, acknowledge_alarm),
        )
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
async fn issue_command(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
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

async fn get_command(
    State(state): State<Arc<ApiState>>,
    Path((id, cid)): Path<(String, String)>,
) -> Result<Json<CommandRecord>, HttpError> {
    blocking(&state, move |state| {
        let record = state.store.command(&id, &cid).map_err(internal)?;
        record.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no command {cid} for {id}")))
    })
    .await
    .map(Json)
}

#[derive(Serialize)]
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
async fn list_commands(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
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

#[derive(Serialize)]
struct AlarmAcknowledged {
    id: String,
    alarm: Alarm,
}

/// Staff acknowledge a robot's interlock alarm; from then on it may start
/// sessions again. 202: ingest clears the alarm on the twin moments later.
async fn acknowledge_alarm(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
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
