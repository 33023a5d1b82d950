//! Who may connect: the CONNECT checks of each listener.
//!
//! - A device: client id = username = the device id of its certificate,
//!   that device's password, a live (unrevoked) record, and the very
//!   certificate issued to it last (or the one before, until the grace of
//!   its renewal ends). Its link gets the device id as tenant, so the
//!   router confines it to `/tenants/D/`. A certificate from the hub's CA
//!   that was not issued to it is refused with CONNACK 5, counted by why.
//! - A tool (loopback listener): a configured user with its Argon2
//!   password, and a client id that can take over no device's or hub's
//!   session.
//!
//! Client ids the router would refuse (`+ $ # /`) are refused here first,
//! with a CONNACK saying so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rumqttd::protocol::{ConnectReturnCode, Login};

use super::policy::Scope;
use super::tls::PeerDevice;
use crate::clock::unix_ms;
use crate::records::{DeviceRecord, Standing};
use crate::secrets;
use crate::settings::BrokerConfig;
use crate::store::{Store, StoreError};

/// Longest client id a tool may use.
const MAX_CLIENT_ID_BYTES: usize = 128;

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    BadClientId,
    BadCredentials,
    /// Not a client this listener admits, or the store could not say.
    NotAuthorized,
    /// The certificate names a device never provisioned.
    UnknownDevice,
    Revoked,
    /// Signed by the hub's CA for the device, but not a certificate issued
    /// to it (a clone, or one replaced two renewals ago).
    CertificateNotIssued,
    /// The device's certificate before its last renewal, past its grace.
    CertificateSuperseded,
}

impl Denied {
    pub fn return_code(self) -> ConnectReturnCode {
        match self {
            Denied::BadClientId => ConnectReturnCode::ClientIdentifierNotValid,
            Denied::BadCredentials => ConnectReturnCode::BadUserNamePassword,
            Denied::NotAuthorized
            | Denied::UnknownDevice
            | Denied::Revoked
            | Denied::CertificateNotIssued
            | Denied::CertificateSuperseded => ConnectReturnCode::NotAuthorized,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Denied::BadClientId => "bad_client_id",
            Denied::BadCredentials => "bad_credentials",
            Denied::NotAuthorized => "not_authorized",
            Denied::UnknownDevice => "unknown_device",
            Denied::Revoked => "revoked",
            Denied::CertificateNotIssued => "certificate_not_issued",
            Denied::CertificateSuperseded => "certificate_superseded",
        }
    }
}

/// A connection that passed its CONNECT checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub scope: Scope,
    /// The client id the link is built with.
    pub client_id: String,
    /// The router's name for the session (`D.D` for device `D`): the key
    /// of takeovers.
    pub session_key: String,
    /// A device's certificate (SHA-256), kept with its session so the end
    /// of a renewal's grace can find a session still on the old one.
    pub certificate_sha256: Option<String>,
}

/// The record of `device` if it may connect now: provisioned, unrevoked,
/// and presenting the certificate issued last, or the one before it within
/// its grace. Checked at CONNECT and again once the session's place is
/// claimed (a revoke may land in between).
pub fn device_allowed(store: &Store, device: &PeerDevice) -> Result<DeviceRecord, Denied> {
    let unknown = |error: StoreError| {
        tracing::warn!(%error, device = %device.id, "device record not read; connection refused");
        Denied::NotAuthorized
    };
    let record = store
        .device(&device.id)
        .map_err(unknown)?
        .ok_or(Denied::UnknownDevice)?;
    if store.is_revoked(&device.id).map_err(unknown)? {
        return Err(Denied::Revoked);
    }
    match record.standing(&device.certificate_sha256, unix_ms()) {
        Standing::Current | Standing::InGrace(_) => Ok(record),
        Standing::Superseded => Err(Denied::CertificateSuperseded),
        Standing::NotIssued => Err(Denied::CertificateNotIssued),
    }
}

/// A device's CONNECT.
pub fn admit_device(
    store: &Store,
    device: &PeerDevice,
    client_id: &str,
    login: Option<&Login>,
) -> Result<Admitted, Denied> {
    if client_id != device.id {
        return Err(Denied::BadClientId);
    }
    let login = login.ok_or(Denied::BadCredentials)?;
    if login.username != device.id {
        return Err(Denied::BadCredentials);
    }
    let record = device_allowed(store, device)?;
    if !secrets::matches_sha256(&login.password, &record.password_sha256) {
        return Err(Denied::BadCredentials);
    }
    Ok(Admitted {
        scope: Scope::Device(device.id.clone()),
        client_id: device.id.clone(),
        session_key: device_session_key(&device.id),
        certificate_sha256: Some(device.certificate_sha256.clone()),
    })
}

/// The router's name for device `id`'s session: tenant `id`, client `id`.
pub fn device_session_key(id: &str) -> String {
    format!("{id}.{id}")
}

/// A tool's client id: given, or assigned for a clean session.
pub fn tool_client_id(
    store: &Store,
    client_id: &str,
    clean_session: bool,
) -> Result<String, Denied> {
    if client_id.is_empty() {
        return match clean_session {
            true => Ok(format!("tool-{}", secrets::random_secret())),
            false => Err(Denied::BadClientId),
        };
    }
    let shape_ok = client_id.len() <= MAX_CLIENT_ID_BYTES
        && !client_id.starts_with("__")
        && !client_id.contains(['.', '+', '$', '#', '/', '\0']);
    let is_device = matches!(store.device(client_id), Ok(Some(_)));
    if !shape_ok || is_device {
        return Err(Denied::BadClientId);
    }
    Ok(client_id.to_owned())
}

/// A tool admitted under `client_id` (already checked).
pub fn admitted_tool(client_id: String) -> Admitted {
    Admitted {
        scope: Scope::Tool,
        session_key: client_id.clone(),
        client_id,
        certificate_sha256: None,
    }
}

/// The tools listener's users. Argon2 is slow and memory-hard on purpose
/// (tens of ms and 19 MiB per check), so checks run on a blocking thread,
/// one at a time: a burst of tool connects does not run hundreds at once
/// (the first measured burst held gigabytes). A password that verified once
/// is remembered as its SHA-256 — how device passwords are kept — for the
/// life of the process; a wrong one still costs a full Argon2 check.
pub struct ToolUsers {
    hashes: HashMap<String, String>,
    verified: Mutex<HashMap<String, String>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl ToolUsers {
    pub fn new(config: &BrokerConfig) -> ToolUsers {
        let hashes = config
            .plain
            .users
            .iter()
            .map(|u| (u.username.clone(), u.password_hash.clone()))
            .collect();
        ToolUsers {
            hashes,
            verified: Default::default(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Checks a login, off the async runtime when Argon2 has to run.
    pub async fn check(self: &Arc<Self>, login: Option<&Login>) -> Result<(), Denied> {
        let login = login.ok_or(Denied::BadCredentials)?;
        if self.remembered(&login.username, &login.password) {
            return Ok(());
        }
        let _turn = self.one_at_a_time.lock().await;
        let (users, login) = (self.clone(), login.clone());
        let ok =
            tokio::task::spawn_blocking(move || users.verify(&login.username, &login.password))
                .await
                .unwrap_or(false);
        ok.then_some(()).ok_or(Denied::BadCredentials)
    }

    fn remembered(&self, username: &str, password: &str) -> bool {
        self.verified()
            .get(username)
            .is_some_and(|known| secrets::matches_sha256(password, known))
    }

    fn verify(&self, username: &str, password: &str) -> bool {
        if self.remembered(username, password) {
            return true;
        }
        let Some(phc) = self.hashes.get(username) else {
            return false;
        };
        let ok = secrets::verify_password(password, phc);
        if ok {
            self.verified()
                .insert(username.to_owned(), secrets::sha256_hex(password));
        }
        ok
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // invariant: no holder of this lock panics while holding it.
        self.verified.lock().expect("tool users lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::PlainUser;

    #[test]
    fn a_tool_password_is_checked_once_then_remembered_and_a_wrong_one_never() {
        let mut config = BrokerConfig::default();
        config.plain.users = vec![PlainUser {
            username: "tool".into(),
            password_hash: secrets::hash_password("right").unwrap(),
        }];
        let users = ToolUsers::new(&config);
        assert!(!users.verify("tool", "wrong"));
        assert!(!users.verify("nobody", "right"));
        assert!(users.verify("tool", "right"));
        assert!(users.verify("tool", "right"));
        assert!(!users.verify("tool", "wrong"));
        assert_eq!(users.verified.lock().unwrap().len(), 1);
    }

    fn check_tool_id(id: &str, clean: bool, expect: Result<(), Denied>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let got = tool_client_id(&store, id, clean).map(|_| ());
        assert_eq!(got, expect, "{id:?}");
    }

    #[test]
    fn tool_client_ids_cannot_name_a_session_of_the_hub_or_the_router() {
        check_tool_id("mosquitto-sub-1", true, Ok(()));
        check_tool_id("", true, Ok(()));
        check_tool_id("", false, Err(Denied::BadClientId));
        check_tool_id("a/b", true, Err(Denied::BadClientId));
        check_tool_id("a+b", true, Err(Denied::BadClientId));
        check_tool_id("$sys", true, Err(Denied::BadClientId));
        check_tool_id("gate1.gate1", true, Err(Denied::BadClientId));
        check_tool_id("__yizhan_hub", true, Err(Denied::BadClientId));
        check_tool_id(&"x".repeat(200), true, Err(Denied::BadClientId));
    }
}
