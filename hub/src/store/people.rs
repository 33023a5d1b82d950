//! Residents and their keyed credential hashes.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::codec::{get_json, to_json};
use super::{Store, StoreError};
use crate::records::Resident;

/// Why a resident could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentConflict {
    IdTaken,
    CredentialTaken,
}

impl Store {
    /// Adds a resident and its credential hash atomically, unless the id or
    /// the credential is taken. Fsyncs.
    pub fn add_resident(
        &self,
        resident: &Resident,
    ) -> Result<Result<(), ResidentConflict>, StoreError> {
        let result =
            (&self.residents, &self.credentials).transaction(|(residents, credentials)| {
                if residents.get(resident.id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(
                        ResidentConflict::IdTaken,
                    ));
                }
                if credentials
                    .get(resident.credential_hash.as_bytes())?
                    .is_some()
                {
                    return Err(ConflictableTransactionError::Abort(
                        ResidentConflict::CredentialTaken,
                    ));
                }
                residents.insert(resident.id.as_bytes(), to_json(resident))?;
                credentials.insert(resident.credential_hash.as_bytes(), resident.id.as_bytes())?;
                Ok(())
            });
        match result {
            Ok(()) => {
                self.db.flush()?;
                Ok(Ok(()))
            }
            Err(TransactionError::Abort(conflict)) => Ok(Err(conflict)),
            Err(TransactionError::Storage(error)) => Err(error.into()),
        }
    }

    /// Whether any resident's credential is stored (hashed under the
    /// credential key, so a new key would orphan it).
    pub fn holds_credentials(&self) -> Result<bool, StoreError> {
        Ok(self.credentials.first()?.is_some())
    }

    pub fn resident(&self, id: &str) -> Result<Option<Resident>, StoreError> {
        get_json(&self.residents, id)
    }

    /// The resident holding the credential with this keyed hash.
    pub fn resident_by_credential(&self, hash: &str) -> Result<Option<Resident>, StoreError> {
        match self.credentials.get(hash)? {
            Some(id) => self.resident(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Sets a resident's blocked flag; `None` when there is no such resident.
    /// Fsyncs.
    pub fn set_resident_blocked(
        &self,
        id: &str,
        blocked: bool,
    ) -> Result<Option<Resident>, StoreError> {
        let Some(mut resident) = self.resident(id)? else {
            return Ok(None);
        };
        resident.blocked = blocked;
        self.residents.insert(id, to_json(&resident))?;
        self.db.flush()?;
        Ok(Some(resident))
    }
}
