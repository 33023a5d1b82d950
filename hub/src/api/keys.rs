//! The bearer tokens the API knows and whose they are: the configuration's
//! admin and metrics tokens, and the tokens an admin created through the
//! API (loaded from the store at start, changed by `POST` and `DELETE
//! /api/v1/tokens`). Only SHA-256 hashes are held. A token is recognised by
//! comparing its hash with every known hash, each in constant time, so
//! neither the answer's time nor a lookup structure tells how close a
//! guess came.
//!
//! A revoked token is refused from the moment `DELETE` answers: the store
//! forgets it (fsynced), then these keys, before the answer is sent.

use std::sync::{Mutex, RwLock};

use crate::records::{ApiToken, Role};
use crate::secrets;
use crate::store::{Store, StoreError};

/// Who called: a token's id, name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// The id of the configuration's admin token (in callers, the audit log).
pub const CONFIG_ADMIN: &str = "config-admin";
/// The id of the configuration's metrics token.
pub const CONFIG_METRICS: &str = "config-metrics";
/// The most tokens the API keeps: enough for every desk, kiosk and front
/// end of a center, few enough to compare with each on every request.
pub const MAX_TOKENS: usize = 1_000;

struct Known {
    sha256: String,
    caller: Caller,
}

impl Known {
    fn of(token: &ApiToken) -> Known {
        Known {
            sha256: token.sha256.clone(),
            caller: Caller {
                id: token.id.clone(),
                name: token.name.clone(),
                role: token.role,
            },
        }
    }

    fn configured(id: &str, role: Role, sha256: &str) -> Known {
        Known {
            sha256: sha256.to_lowercase(),
            caller: Caller {
                id: id.to_string(),
                name: "configuration".to_string(),
                role,
            },
        }
    }
}

/// Why a token was not created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("a token named {0:?} exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("there are {MAX_TOKENS} tokens already; revoke one first")]
    Full,
    #[error("no token {0}")]
    Unknown(String),
    #[error("{0} is the configuration's token; change it there")]
    Configured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The known tokens. `created` is read by every request; `changes` keeps
/// one create or revoke at a time without holding readers up while the
/// store fsyncs.
pub struct Keys {
    configured: Vec<Known>,
    created: RwLock<Vec<Known>>,
    changes: Mutex<()>,
}

impl Keys {
    /// The configuration's admin token (and metrics token, if any) and the
    /// tokens created earlier.
    pub fn new(admin_sha256: &str, metrics_sha256: Option<&str>, stored: &[ApiToken]) -> Keys {
        let mut configured = vec![Known::configured(CONFIG_ADMIN, Role::Admin, admin_sha256)];
        if let Some(hash) = metrics_sha256 {
            configured.push(Known::configured(CONFIG_METRICS, Role::Metrics, hash));
        }
        Keys {
            configured,
            created: RwLock::new(stored.iter().map(Known::of).collect()),
            changes: Mutex::new(()),
        }
    }

    /// Whose token `token` is, if anyone's. Every known hash is compared.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let hash = secrets::sha256_hex(token);
        let created = self.created.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for known in self.configured.iter().chain(created.iter()) {
            if secrets::same_in_constant_time(&hash, &known.sha256) && found.is_none() {
                found = Some(known.caller.clone());
            }
        }
        found
    }

    /// Creates a token of `role` named `name` (kept, fsynced, then known);
    /// the record and the token itself, which is shown this once.
    pub fn create(
        &self,
        store: &Store,
        role: Role,
        name: &str,
        now_ms: u64,
    ) -> Result<(ApiToken, String), KeysError> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        {
            let created = self.created.read().unwrap_or_else(|e| e.into_inner());
            if created.iter().any(|known| known.caller.name == name) {
                return Err(KeysError::NameTaken(name.to_string()));
            }
            if created.len() >= MAX_TOKENS {
                return Err(KeysError::Full);
            }
        }
        let secret = secrets::random_secret();
        let token = ApiToken {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name: name.to_string(),
            role,
            sha256: secrets::sha256_hex(&secret),
            created_at: now_ms,
        };
        store.put_api_token(&token)?;
        self.write().push(Known::of(&token));
        Ok((token, secret))
    }

    /// Revokes the token `id` (forgotten by the store, fsynced, then here);
    /// the record it had.
    pub fn revoke(&self, store: &Store, id: &str) -> Result<ApiToken, KeysError> {
        if self.configured.iter().any(|known| known.caller.id == id) {
            return Err(KeysError::Configured(id.to_string()));
        }
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let token = store
            .remove_api_token(id)?
            .ok_or_else(|| KeysError::Unknown(id.to_string()))?;
        self.write().retain(|known| known.caller.id != id);
        Ok(token)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Known>> {
        // A poisoned lock held a push or a retain, each complete or not
        // begun: the list is whole.
        self.created.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_recognised_until_revoked_and_the_configurations_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let admin = "configured-admin-token";
        let keys = Keys::new(&secrets::sha256_hex(admin).to_uppercase(), None, &[]);
        assert_eq!(keys.caller(admin).map(|c| c.role), Some(Role::Admin));
        assert_eq!(keys.caller("guess"), None);

        let (token, secret) = keys.create(&store, Role::Staff, "desk-1", 7).unwrap();
        assert_eq!(token.id.len(), 16);
        assert_ne!(token.sha256, secret, "only the hash is kept");
        let caller = keys.caller(&secret).unwrap();
        assert_eq!(
            (caller.id.as_str(), caller.role),
            (token.id.as_str(), Role::Staff)
        );
        assert!(matches!(
            keys.create(&store, Role::Frontend, "desk-1", 8),
            Err(KeysError::NameTaken(_))
        ));

        let reloaded = Keys::new(
            &secrets::sha256_hex(admin),
            None,
            &store.api_tokens().unwrap(),
        );
        assert_eq!(reloaded.caller(&secret), Some(caller));

        keys.revoke(&store, &token.id).unwrap();
        assert_eq!(keys.caller(&secret), None);
        assert!(matches!(
            keys.revoke(&store, &token.id),
            Err(KeysError::Unknown(_))
        ));
        assert!(matches!(
            keys.revoke(&store, CONFIG_ADMIN),
            Err(KeysError::Configured(_))
        ));
        assert!(keys.caller(admin).is_some());
    }
}
