//! `meta`: the boot epoch, the generated admin-token hash, the check value
//! of the credential-hashing key (and, in a store of an earlier hub, the key
//! itself until the hub moves it out), the hub's id and the number of
//! twins.

use super::codec::decode_u64;
use super::{Store, StoreError};

pub(super) const BOOT_EPOCH_KEY: &[u8] = b"boot_epoch";
pub(super) const ADMIN_TOKEN_KEY: &[u8] = b"admin_token_sha256";
/// Where earlier hubs kept the credential key itself.
const LEGACY_CREDENTIAL_KEY: &[u8] = b"credential_hmac_key";
/// `secrets::key_check` of the key credentials are hashed with.
const CREDENTIAL_KEY_CHECK: &[u8] = b"credential_key_check";
pub(super) const TWIN_COUNT_KEY: &[u8] = b"twin_count";
pub(super) const HUB_ID_KEY: &[u8] = b"hub_id";

impl Store {
    /// Increments and returns the boot epoch. A twin marked online in an
    /// earlier epoch is offline now: every session ended with the process.
    pub fn next_boot_epoch(&self) -> Result<u64, StoreError> {
        let next = self
            .meta
            .update_and_fetch(BOOT_EPOCH_KEY, |old| {
                let n = old.map(decode_u64).unwrap_or(0) + 1;
                Some(n.to_be_bytes().to_vec())
            })?
            .map(|v| decode_u64(&v))
            .unwrap_or(1);
        self.db.flush()?;
        Ok(next)
    }

    pub fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(ADMIN_TOKEN_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_admin_token_hash(&self, sha256_hex: &str) -> Result<(), StoreError> {
        self.meta.insert(ADMIN_TOKEN_KEY, sha256_hex.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The credential-hashing key as earlier hubs kept it, in `meta`:
    /// only read, to move it out (`settle_credential_key`).
    pub fn legacy_credential_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let Some(stored) = self.meta.get(LEGACY_CREDENTIAL_KEY)? else {
            return Ok(None);
        };
        let key = stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::BadKey("meta/credential_hmac_key".into()))?;
        Ok(Some(key))
    }

    /// The check value of the key the stored credentials are hashed with
    /// (`secrets::key_check`), if one was recorded.
    pub fn credential_key_check(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(CREDENTIAL_KEY_CHECK)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records `check` as the key's check value and removes a legacy key
    /// from `meta`, in one batch; fsynced. Called once the key is safe
    /// outside the store.
    pub fn settle_credential_key(&self, check: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(CREDENTIAL_KEY_CHECK, check.as_bytes());
        batch.remove(LEGACY_CREDENTIAL_KEY);
        self.meta.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Test-only: a store as earlier hubs left it, the key in `meta`.
    #[cfg(test)]
    pub fn put_legacy_credential_key(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        self.meta.insert(LEGACY_CREDENTIAL_KEY, &key[..])?;
        self.db.flush()?;
        Ok(())
    }
}

impl Store {
    /// The hub's id: `yizhan-` and 16 hex digits made at first use and kept
    /// in `meta` (the default upstream client id, in every message id).
    pub fn hub_id(&self) -> Result<String, StoreError> {
        let fresh = format!("yizhan-{:016x}", rand::random::<u64>());
        // Only the first writer's id sticks; later calls read it back.
        let _ = self.meta.compare_and_swap(
            HUB_ID_KEY,
            None as Option<&[u8]>,
            Some(fresh.as_bytes()),
        )?;
        let stored = self.meta.get(HUB_ID_KEY)?;
        self.db.flush()?;
        Ok(stored.map_or(fresh, |id| String::from_utf8_lossy(&id).into_owned()))
    }
}

/// The twin count kept in `meta`; a store from before it was kept is
/// counted once.
pub(super) fn stored_twin_count(twins: &sled::Tree, meta: &sled::Tree) -> Result<u64, StoreError> {
    if let Some(count) = meta.get(TWIN_COUNT_KEY)? {
        return Ok(decode_u64(&count));
    }
    let count = twins.len() as u64;
    meta.insert(TWIN_COUNT_KEY, &count.to_be_bytes())?;
    Ok(count)
}
