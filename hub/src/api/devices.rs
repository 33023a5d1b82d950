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

use super::ranges::{next_of, PageQuery};
use super::routing::{get, may, Routes};
use super::{
    blocking, check_label, error, internal, json_body, query_of, ranges, ApiState, HttpError,
};
use crate::clock::unix_ms;
use crate::ingest::Control;
use crate::records::{DeviceRecord, StoredEvent, Twin};
use crate::secrets;
use crate::store::Revocation;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route(
            "/api/v1/devices",
            get(may::READ, list_devices).post(may::ADMIN, provision),
        )
        .route(
            "/api/v1/devices/{id}",
            get(may::READ, get_device).delete(may::ADMIN, revoke),
        )
        .route("/api/v1/devices/{id}/events", get(may::READ, device_events))
}

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

#[derive(Serialize)]
struct Revoked {
    id: String,
    revoked: bool,
    session_closed: bool,
}

async fn revoke(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, HttpError> {
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
    Ok(Json(Revoked {
        id,
        revoked: true,
        session_closed,
    }))
}

async fn get_device(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
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
#[derive(Serialize)]
pub struct DeviceView {
    #[serde(flatten)]
    twin: Twin,
    revoked: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    center: Option<String>,
    kind: Option<String>,
    online: Option<bool>,
    /// Only ids after this one (paging).
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<Twin>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

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

#[derive(Serialize)]
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
async fn device_events(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
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
