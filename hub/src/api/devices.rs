//! Devices: provisioning (certificate, record, twin), revocation, twins
//! (one, or paged lists) and their stored events.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::api::{ProvisionRequest, Provisioned};
use protocol::DeviceKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::ranges::{next_of, PageQuery};
use super::routing::{may, Routes};
use super::{
    blocking, check_label, error, internal, json_body, query_of, ranges, ApiState, HttpError,
};
use crate::clock::unix_ms;
use crate::ingest::Control;
use crate::records::{DeviceRecord, StoredEvent, Twin};
use crate::secrets;
use crate::store::Revocation;

/// A device the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct DevicePath {
    /// The device's id.
    #[param(example = "piano1")]
    pub(super) id: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("devices")
        .route(may::READ, routes!(list_devices))
        .route(may::ADMIN, routes!(provision))
        .route(may::READ, routes!(get_device))
        .route(may::ADMIN, routes!(revoke_device))
        .route(may::READ, routes!(device_events))
}

/// Provisions a device: issues its client certificate and MQTT password
/// (answered this once; the hub keeps their fingerprint and hash), records
/// it and its twin (fsynced) and tells ingest.
#[utoipa::path(post, path = "/api/v1/devices",
    request_body = ProvisionRequest,
    responses(
        (status = 201, description = "provisioned", body = Provisioned, links(
            ("read" = (operation_id = "get_device", parameters(("id" = "$response.body#/id")))),
            ("command" = (operation_id = "issue_command", parameters(("id" = "$response.body#/id")))),
            ("events" = (operation_id = "device_events", parameters(("id" = "$response.body#/id")))),
            ("revoke" = (operation_id = "revoke_device", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 409, description = "a device with this id exists"),
        (status = 422, description = "`id`, `center` or `room` invalid"),
    ))]
async fn provision(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ProvisionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Provisioned>), HttpError> {
    let request = json_body(body)?;
    let provisioned = blocking(&state, move |state| provision_device(state, request)).await?;
    Ok((StatusCode::CREATED, Json(provisioned)))
}

/// Issues the certificate, records the device (fsynced) and tells ingest.
fn provision_device(state: &ApiState, request: ProvisionRequest) -> Result<Provisioned, HttpError> {
    if !protocol::is_valid_device_id(&request.id) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`id` must be 1-48 ASCII letters or digits",
        ));
    }
    check_label("center", &request.center)?;
    check_label("room", &request.room)?;
    let issued = state
        .pki
        .issue_device(&request.id, state.device_cert_days)
        .map_err(internal)?;
    let password = secrets::random_secret();
    let record = DeviceRecord {
        id: request.id.clone(),
        center: request.center,
        room: request.room,
        kind: request.kind,
        password_sha256: secrets::sha256_hex(&password),
        certificate_sha256: issued.certificate_sha256,
        not_after: issued.not_after_ms,
        provisioned_at: unix_ms(),
        previous_certificate: None,
    };
    let twin = Twin::provisioned(&record);
    if !state.store.provision(&record, &twin).map_err(internal)? {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {} already exists", record.id),
        ));
    }
    state.ingest.send(Control::Provisioned(record.id.clone()));
    state.census.provisioned(&record);
    tracing::info!(device = %record.id, center = %record.center, kind = %record.kind, "device provisioned");
    let body = Provisioned {
        id: record.id.clone(),
        certificate: issued.certificate_pem,
        private_key: issued.private_key_pem,
        ca_certificate: state.pki.ca_pem().to_string(),
        mqtt_username: record.id,
        mqtt_password: password,
        not_after: record.not_after,
    };
    Ok(body)
}

/// A revocation's answer.
#[derive(Serialize, ToSchema)]
struct DeviceRevoked {
    id: String,
    revoked: bool,
    /// Whether a live MQTT session of the device was cut.
    session_closed: bool,
}

/// Revokes a device: the edge refuses it from now on and its session is
/// cut. Revoking again answers the same.
#[utoipa::path(delete, path = "/api/v1/devices/{id}",
    params(DevicePath),
    responses(
        (status = 200, description = "revoked", body = DeviceRevoked),
        (status = 404, description = "no device with this id"),
    ))]
async fn revoke_device(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
) -> Result<Json<DeviceRevoked>, HttpError> {
    let key = id.clone();
    let revocation = blocking(&state, move |state| {
        state.store.revoke(&key, unix_ms()).map_err(internal)
    })
    .await?;
    match revocation {
        Revocation::Unknown => return Err(error(StatusCode::NOT_FOUND, format!("no device {id}"))),
        Revocation::Revoked(record) => {
            state.census.revoked(&record);
            state.metrics.revocations.inc();
        }
        Revocation::AlreadyRevoked => {}
    }
    // Order matters: ingest drops the device's messages before its session
    // is cut, and the edge already refuses it (store says revoked).
    state.ingest.send(Control::Revoked(id.clone()));
    let session_closed = state.edge.disconnect_device(&id);
    tracing::info!(device = %id, session_closed, "device revoked");
    Ok(Json(DeviceRevoked {
        id,
        revoked: true,
        session_closed,
    }))
}

/// A device's twin: what the hub knows of it now.
#[utoipa::path(get, path = "/api/v1/devices/{id}",
    params(DevicePath),
    responses(
        (status = 200, description = "the twin", body = DeviceView),
        (status = 404, description = "no device with this id"),
    ))]
async fn get_device(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
) -> Result<Json<DeviceView>, HttpError> {
    blocking(&state, move |state| device_view(state, &id))
        .await
        .map(Json)
}

fn device_view(state: &ApiState, id: &str) -> Result<DeviceView, HttpError> {
    let twin = state.store.twin(id).map_err(internal)?;
    let twin = twin.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let revoked = state.store.is_revoked(id).map_err(internal)?;
    let mut twin = twin.view(state.epoch);
    // A revoked device's session is cut before the API answers; ingest
    // writes the twin offline moments later.
    twin.online &= !revoked;
    Ok(DeviceView { twin, revoked })
}

/// A twin as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    #[serde(flatten)]
    twin: Twin,
    revoked: bool,
}

/// Which twins a list holds.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this center's.
    center: Option<String>,
    /// Only this kind.
    #[param(value_type = Option<DeviceKind>)]
    kind: Option<String>,
    online: Option<bool>,
    /// Only ids after this one (the `next` of the page before).
    after: Option<String>,
    /// 1-10000; 1000 when not given.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A page of twins.
#[derive(Serialize, ToSchema)]
struct DeviceList {
    devices: Vec<Twin>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The devices' twins in id order, a page at a time.
#[utoipa::path(get, path = "/api/v1/devices",
    params(ListQuery),
    responses((status = 200, description = "a page of twins", body = DeviceList)))]
async fn list_devices(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeviceList>, HttpError> {
    let query = query_of(query)?;
    let kind = match &query.kind {
        Some(kind) => Some(
            DeviceKind::parse(kind)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("unknown kind {kind:?}")))?,
        ),
        None => None,
    };
    let limit = ranges::page("limit", query.limit, 1_000)?;
    blocking(&state, move |state| list_twins(state, &query, kind, limit))
        .await
        .map(Json)
}

/// The twins `query` selects, `limit` at most, in id order (a full scan).
fn list_twins(
    state: &ApiState,
    query: &ListQuery,
    kind: Option<DeviceKind>,
    limit: usize,
) -> Result<DeviceList, HttpError> {
    let mut devices = Vec::new();
    let mut next = None;
    for twin in state.store.twins() {
        let twin = twin.map_err(internal)?.view(state.epoch);
        if query
            .after
            .as_ref()
            .is_some_and(|after| twin.id.as_str() <= after.as_str())
            || query.center.as_ref().is_some_and(|c| *c != twin.center)
            || kind.is_some_and(|k| k != twin.kind)
            || query.online.is_some_and(|o| o != twin.online)
        {
            continue;
        }
        if devices.len() == limit {
            next = devices.last().map(|t: &Twin| t.id.clone());
            break;
        }
        devices.push(twin);
    }
    Ok(DeviceList { devices, next })
}

/// A page of a device's events.
#[derive(Serialize, ToSchema)]
struct EventList {
    device: String,
    /// Events on this page.
    count: usize,
    events: Vec<StoredEvent>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Events stored for one device, each `(device, id)` once, in id order,
/// a page at a time (`after`, `limit`).
#[utoipa::path(get, path = "/api/v1/devices/{id}/events",
    params(DevicePath, PageQuery),
    responses(
        (status = 200, description = "a page of events", body = EventList),
        (status = 404, description = "no device with this id"),
    ))]
async fn device_events(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<EventList>, HttpError> {
    let at = query_of(query)?.checked()?;
    blocking(&state, move |state| {
        known_device(state, &id)?;
        let page = state
            .store
            .events_page(&id, at.after.as_deref(), at.limit)
            .map_err(internal)?;
        Ok(EventList {
            device: id,
            count: page.items.len(),
            events: page.items,
            next: next_of(page.next),
        })
    })
    .await
    .map(Json)
}

pub(super) fn known_device(state: &ApiState, id: &str) -> Result<DeviceRecord, HttpError> {
    state
        .store
        .device(id)
        .map_err(internal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))
}
