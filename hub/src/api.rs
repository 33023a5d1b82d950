//! The HTTP API (axum): device provisioning and revocation, twins, health,
//! readiness and metrics. Errors are `{"error":"…"}` with a 4xx naming the
//! problem. Every call that changes or reveals something needs
//! `Authorization: Bearer <admin token>`; `/healthz` and `/readyz` do not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use protocol::api::{ApiError, ProvisionRequest, Provisioned};
use protocol::DeviceKind;
use serde::{Deserialize, Serialize};

use crate::broker::{self, ControlAccess};
use crate::clock::unix_ms;
use crate::ingest::Control;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::secrets;
use crate::store::{DeviceRecord, Store, StoredEvent};
use crate::twin::Twin;

/// Everything the handlers share.
pub struct ApiState {
    pub store: Arc<Store>,
    pub pki: Arc<Pki>,
    pub metrics: Metrics,
    /// std Mutex: held only to send, never across an await.
    pub ingest_control: Mutex<Sender<Control>>,
    pub broker_control: ControlAccess,
    pub admin_token_sha256: String,
    pub epoch: u64,
    pub device_cert_days: u32,
    pub ready: AtomicBool,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/devices", get(list_devices).post(provision))
        .route("/api/v1/devices/{id}", get(get_device).delete(revoke))
        .route("/api/v1/devices/{id}/events", get(device_events))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// An API error: status and reason.
pub struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ApiError { error: self.1 };
        (self.0, Json(body)).into_response()
    }
}

fn error(status: StatusCode, reason: impl Into<String>) -> HttpError {
    HttpError(status, reason.into())
}

fn internal(err: impl std::fmt::Display) -> HttpError {
    tracing::error!(error = %err, "API request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the hub's log",
    )
}

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Admin, HttpError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(token) if secrets::matches_sha256(token.trim(), &state.admin_token_sha256) => {
                Ok(Admin)
            }
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "invalid bearer token")),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>`",
            )),
        }
    }
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        "ready".into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

async fn metrics(_: Admin, State(state): State<Arc<ApiState>>) -> Response {
    if let Ok(size) = state.store.size_on_disk() {
        state.metrics.store_size.set(size as i64);
    }
    state.metrics.twins.set(state.store.twin_count() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

const MAX_LABEL_LEN: usize = 64;

fn check_label(field: &str, value: &str) -> Result<(), HttpError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_LABEL_LEN
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{field}` must be 1-{MAX_LABEL_LEN} letters, digits, '-' or '_'"),
        ))
    }
}

async fn provision(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ProvisionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Provisioned>), HttpError> {
    let Json(request) = body.map_err(|e| error(e.status(), e.body_text()))?;
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
    };
    let twin = Twin::provisioned(&record);
    if !state.store.provision(&record, &twin).map_err(internal)? {
        return Err(error(
            StatusCode::CONFLICT,
            format!("device {} already exists", record.id),
        ));
    }
    send_control(&state, Control::Provisioned(record.id.clone()));
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
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Serialize)]
struct Revoked {
    id: String,
    revoked: bool,
    session_closed: bool,
}

async fn revoke(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, HttpError> {
    if !state.store.revoke(&id, unix_ms()).map_err(internal)? {
        return Err(error(StatusCode::NOT_FOUND, format!("no device {id}")));
    }
    // Order matters: ingest drops the device's messages before its session
    // is cut, and the auth handler already refuses it (store says revoked).
    send_control(&state, Control::Revoked(id.clone()));
    state.metrics.revocations.inc();
    let session_closed = match broker::disconnect_device(&state.broker_control, &id).await {
        Ok(()) => true,
        Err(reason) => {
            tracing::warn!(device = %id, reason, "could not take over the revoked device's session");
            false
        }
    };
    tracing::info!(device = %id, session_closed, "device revoked");
    Ok(Json(Revoked {
        id,
        revoked: true,
        session_closed,
    }))
}

fn send_control(state: &ApiState, control: Control) {
    // invariant: the lock is only held to send.
    let sender = state.ingest_control.lock().expect("control sender");
    if sender.send(control).is_err() {
        tracing::error!("ingest has stopped; control message lost");
    }
}

async fn get_device(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, HttpError> {
    let twin = state.store.twin(&id).map_err(internal)?;
    let twin = twin.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device {id}")))?;
    let revoked = state.store.is_revoked(&id).map_err(internal)?;
    let mut twin = twin.view(state.epoch);
    // A revoked device's session is cut before the API answers; ingest
    // writes the twin offline moments later.
    twin.online &= !revoked;
    Ok(Json(DeviceView { twin, revoked }))
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

const MAX_LIST: usize = 10_000;

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<Twin>,
    /// Pass as `after` to get the next page; absent on the last page.
    next: Option<String>,
}

async fn list_devices(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeviceList>, HttpError> {
    let Query(query) = query.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let kind = match &query.kind {
        Some(kind) => Some(
            DeviceKind::parse(kind)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("unknown kind {kind:?}")))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(1_000).clamp(1, MAX_LIST);
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
    Ok(Json(DeviceList { devices, next }))
}

#[derive(Serialize)]
struct EventList {
    device: String,
    count: usize,
    events: Vec<StoredEvent>,
}

/// Events stored for one device, each `(device, id)` once.
async fn device_events(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<EventList>, HttpError> {
    if state.store.device(&id).map_err(internal)?.is_none() {
        return Err(error(StatusCode::NOT_FOUND, format!("no device {id}")));
    }
    let events = state.store.events_of(&id).map_err(internal)?;
    Ok(Json(EventList {
        device: id,
        count: events.len(),
        events,
    }))
}
