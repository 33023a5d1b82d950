//! `meta`: the boot epoch, the generated admin-token hash, the
//! credential-hashing key, the hub's id and the number of twins.

use super::codec::decode_u64;
use super::{Store, StoreError};

pub(super) const BOOT_EPOCH_KEY: &[u8] = b"boot_epoch";
pub(super) const ADMIN_TOKEN_KEY: &[u8] = b"admin_token_sha256";
pub(super) const CREDENTIAL_KEY: &[u8] = b"credential_hmac_key";
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

    /// The key credentials are hashed with: 32 random bytes made at first
    /// use and kept in `meta` (never leaves the hub).
    pub fn credential_key(&self) -> Result<[u8; 32], StoreError> {
        let fresh = rand::random::<[u8; 32]>();
        // Only the first writer's key sticks; later calls read it back.
        let _ =
            self.meta
                .compare_and_swap(CREDENTIAL_KEY, None as Option<&[u8]>, Some(&fresh[..]))?;
        let stored = self.meta.get(CREDENTIAL_KEY)?.unwrap_or_default();
        self.db.flush()?;
        Ok(stored.as_ref().try_into().unwrap_or(fresh))
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
