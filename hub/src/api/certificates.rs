//! Certificate renewal: `POST /api/v1/devices/{id}/certificate` gives a
//! live device a new certificate and key (its MQTT password stays). The
//! certificate it replaces still connects until the grace ends
//! (`broker.certificate_renewal_grace_secs`, or less if the request asks),
//! then it is refused at CONNECT, and a session still on it is ended at
//! that moment (`Edge::end_superseded_at`). A renewal within a grace ends
//! the older certificate's grace at once: only the last one before the new
//! one is kept.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::api::{RenewRequest, Renewed};
use utoipa_axum::routes;

use super::devices::{known_device, DevicePath};
use super::routing::{may, Routes};
use super::{blocking, error, internal, json_problem, unprocessable, ApiState, HttpError};
use crate::clock::unix_ms;
use crate::store::{NewCertificate, Renewal};

pub(super) fn routes() -> Routes {
    Routes::group("devices").route(may::ADMIN, routes!(renew_device_certificate))
}

/// Renews a device's certificate: a new certificate and key (answered this
/// once; the MQTT password stays); the one it replaces still connects
/// until `previous_accepted_until`, then is refused and a session on it
/// ended.
#[utoipa::path(post, path = "/api/v1/devices/{id}/certificate",
    params(DevicePath),
    request_body(content = Option<RenewRequest>, description = "optional: a shorter grace"),
    responses(
        (status = 200, description = "the new certificate and key", body = Renewed),
        (status = 404, description = "no device with this id"),
        (status = 409, description = "the device is revoked"),
        (status = 422, description = "`grace_secs` over the configured grace"),
    ))]
async fn renew_device_certificate(
    State(state): State<Arc<ApiState>>,
    Path(DevicePath { id }): Path<DevicePath>,
    body: Result<Option<Json<RenewRequest>>, JsonRejection>,
) -> Result<Json<Renewed>, HttpError> {
    let request = body
        .map_err(json_problem)?
        .map(|Json(request)| request)
        .unwrap_or_default();
    let grace_ms = grace_ms(state.renewal_grace_secs, request.grace_secs)?;
    blocking(&state, move |state| renew_certificate(state, &id, grace_ms))
        .await
        .map(Json)
}

/// The grace asked for (at most the configured one, which is the default),
/// in ms.
fn grace_ms(most_secs: u64, asked_secs: Option<u64>) -> Result<u64, HttpError> {
    match asked_secs {
        None => Ok(most_secs * 1000),
        Some(secs) if secs <= most_secs => Ok(secs * 1000),
        Some(secs) => Err(unprocessable(format!(
            "`grace_secs` must be at most {most_secs} (broker.certificate_renewal_grace_secs), got {secs}"
        ))),
    }
}

/// Issues the new certificate, stores it with the old one's deadline
/// (fsynced), and sets the session's end at that deadline.
fn renew_certificate(state: &ApiState, id: &str, grace_ms: u64) -> Result<Renewed, HttpError> {
    // Refused before anything is signed; the store decides again below.
    known_device(state, id)?;
    if state.store.is_revoked(id).map_err(internal)? {
        return Err(revoked(id));
    }
    let issued = state
        .pki
        .issue_device(id, state.device_cert_days)
        .map_err(internal)?;
    let new = NewCertificate {
        certificate_sha256: issued.certificate_sha256,
        not_after: issued.not_after_ms,
        previous_accepted_until: unix_ms() + grace_ms,
    };
    let (before, after) = match state.store.renew_certificate(id, &new).map_err(internal)? {
        Renewal::Unknown => return Err(error(StatusCode::NOT_FOUND, format!("no device {id}"))),
        Renewal::Revoked => return Err(revoked(id)),
        Renewal::Renewed { before, after } => (before, after),
    };
    state.census.renewed(&before, &after);
    state.metrics.certificate_renewals.inc();
    state
        .edge
        .end_superseded_at(id, new.previous_accepted_until);
    tracing::info!(device = %id, previous_accepted_until = new.previous_accepted_until, "device certificate renewed");
    Ok(Renewed {
        id: id.to_string(),
        certificate: issued.certificate_pem,
        private_key: issued.private_key_pem,
        ca_certificate: state.pki.ca_pem().to_string(),
        not_after: after.not_after,
        previous_accepted_until: new.previous_accepted_until,
    })
}

fn revoked(id: &str) -> HttpError {
    error(
        StatusCode::CONFLICT,
        format!("device {id} is revoked: provision it again (POST /api/v1/devices)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_may_shorten_the_grace_but_not_lengthen_it() {
        let check = |asked: Option<u64>, expect: Result<u64, &str>| {
            let got = grace_ms(60, asked).map_err(|e| e.detail().to_string());
            match expect {
                Ok(ms) => assert_eq!(got.ok(), Some(ms), "{asked:?}"),
                Err(needle) => {
                    let reason = got.expect_err("refused");
                    assert!(reason.contains(needle), "{reason}");
                }
            }
        };
        check(None, Ok(60_000));
        check(Some(0), Ok(0));
        check(Some(3), Ok(3_000));
        check(Some(60), Ok(60_000));
        check(Some(61), Err("`grace_secs` must be at most 60"));
        check(Some(u64::MAX), Err("`grace_secs`"));
    }
}
