//! Residents who may pass gates: registering one (its credential kept only
//! as a keyed hash), reading one, blocking and unblocking. Neither the log
//! nor an error answer names a resident: the log carries
//! `secrets::resident_tag`, errors say "no such resident".

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::api::{ResidentRequest, ResidentView};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::routes;

use super::routing::{may, Routes};
use super::{
    blocking, check_label, error, internal, json_body, unprocessable, ApiState, HttpError,
};
use crate::clock::unix_ms;
use crate::records::Resident;
use crate::secrets;
use crate::store::ResidentConflict;

/// A resident the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ResidentPath {
    /// The resident's id.
    #[param(example = "r1")]
    id: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("residents")
        .route(may::ADMIN, routes!(add_resident))
        .route(may::READ, routes!(get_resident))
        .route(may::ADMIN, routes!(block_resident))
        .route(may::ADMIN, routes!(unblock_resident))
}

const MAX_CREDENTIAL_LEN: usize = 512;

fn resident_view(resident: Resident) -> ResidentView {
    ResidentView {
        id: resident.id,
        group: resident.group,
        blocked: resident.blocked,
        created_at: resident.created_at,
    }
}

/// Registers a resident; the credential is kept only as a keyed hash.
#[utoipa::path(post, path = "/api/v1/residents",
    request_body = ResidentRequest,
    responses(
        (status = 201, description = "registered", body = ResidentView, links(
            ("read" = (operation_id = "get_resident", parameters(("id" = "$response.body#/id")))),
            ("block" = (operation_id = "block_resident", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 409, description = "the id or the credential is taken"),
        (status = 422, description = "`id`, `group` or `credential` invalid"),
    ))]
async fn add_resident(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ResidentRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ResidentView>), HttpError> {
    let request = json_body(body)?;
    let resident = blocking(&state, move |state| register(state, request)).await?;
    Ok((StatusCode::CREATED, Json(resident_view(resident))))
}

/// Checks and records a resident (fsynced).
fn register(state: &ApiState, request: ResidentRequest) -> Result<Resident, HttpError> {
    check_label("id", &request.id)?;
    if let Some(group) = &request.group {
        check_label("group", group)?;
    }
    if request.credential.is_empty() || request.credential.len() > MAX_CREDENTIAL_LEN {
        return Err(unprocessable(format!(
            "`credential` must be 1-{MAX_CREDENTIAL_LEN} bytes"
        )));
    }
    let resident = Resident {
        credential_hash: secrets::credential_hash(&state.credential_key, &request.credential),
        id: request.id,
        group: request.group,
        blocked: false,
        created_at: unix_ms(),
    };
    match state.store.add_resident(&resident).map_err(internal)? {
        Ok(()) => {}
        Err(ResidentConflict::IdTaken) => {
            return Err(error(
                StatusCode::CONFLICT,
                "a resident with this id already exists",
            ))
        }
        Err(ResidentConflict::CredentialTaken) => {
            return Err(error(
                StatusCode::CONFLICT,
                "this credential belongs to another resident",
            ))
        }
    }
    let tag = secrets::resident_tag(&state.credential_key, &resident.id);
    tracing::info!(resident = %tag, "resident registered");
    Ok(resident)
}

/// A resident (never the credential or its hash).
#[utoipa::path(get, path = "/api/v1/residents/{id}",
    params(ResidentPath),
    responses(
        (status = 200, description = "the resident", body = ResidentView),
        (status = 404, description = "no such resident (the id is not repeated)"),
    ))]
async fn get_resident(
    State(state): State<Arc<ApiState>>,
    Path(ResidentPath { id }): Path<ResidentPath>,
) -> Result<Json<ResidentView>, HttpError> {
    blocking(&state, move |state| {
        let resident = state.store.resident(&id).map_err(internal)?;
        resident.map(resident_view).ok_or_else(no_such_resident)
    })
    .await
    .map(Json)
}

/// Blocks a resident: gates refuse their credential.
#[utoipa::path(post, path = "/api/v1/residents/{id}/block",
    params(ResidentPath),
    responses(
        (status = 200, description = "blocked", body = ResidentView),
        (status = 404, description = "no such resident (the id is not repeated)"),
    ))]
async fn block_resident(
    State(state): State<Arc<ApiState>>,
    Path(ResidentPath { id }): Path<ResidentPath>,
) -> Result<Json<ResidentView>, HttpError> {
    blocking(&state, move |state| set_blocked(state, &id, true)).await
}

/// Unblocks a resident.
#[utoipa::path(post, path = "/api/v1/residents/{id}/unblock",
    params(ResidentPath),
    responses(
        (status = 200, description = "unblocked", body = ResidentView),
        (status = 404, description = "no such resident (the id is not repeated)"),
    ))]
async fn unblock_resident(
    State(state): State<Arc<ApiState>>,
    Path(ResidentPath { id }): Path<ResidentPath>,
) -> Result<Json<ResidentView>, HttpError> {
    blocking(&state, move |state| set_blocked(state, &id, false)).await
}

/// A 404 that does not repeat the id asked for (docs/security.md, privacy).
fn no_such_resident() -> HttpError {
    error(StatusCode::NOT_FOUND, "no such resident")
}

fn set_blocked(state: &ApiState, id: &str, blocked: bool) -> Result<Json<ResidentView>, HttpError> {
    let resident = state
        .store
        .set_resident_blocked(id, blocked)
        .map_err(internal)?;
    let resident = resident.ok_or_else(no_such_resident)?;
    let tag = secrets::resident_tag(&state.credential_key, id);
    tracing::info!(resident = %tag, blocked, "resident access changed");
    Ok(Json(resident_view(resident)))
}
