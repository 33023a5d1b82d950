//! Devices: provisioning records, revocations and twins.

use std::sync::atomic::Ordering;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::codec::{decode, decode_u64, get_json, to_json};
use super::meta::TWIN_COUNT_KEY;
use super::{Store, StoreError};
use crate::records::{DeviceRecord, PreviousCertificate, Twin};

/// What revoking a device did.
#[derive(Debug, Clone, PartialEq)]
pub enum Revocation {
    /// No such device was ever provisioned.
    Unknown,
    /// The device was live; its record.
    Revoked(DeviceRecord),
    /// It was revoked already.
    AlreadyRevoked,
}

/// What renewing a device's certificate did.
#[derive(Debug, Clone, PartialEq)]
pub enum Renewal {
    /// No such device was ever provisioned.
    Unknown,
    /// The device is revoked: nothing changed.
    Revoked,
    /// The record before and after.
    Renewed {
        before: Box<DeviceRecord>,
        after: Box<DeviceRecord>,
    },
}

/// A device's new certificate, and how long the one it replaces may still
/// connect.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCertificate {
    pub certificate_sha256: String,
    pub not_after: u64,
    /// Unix ms until which the replaced certificate connects.
    pub previous_accepted_until: u64,
}

/// `before` with `new` as its certificate and its certificate as the
/// previous one.
fn renewed(before: &DeviceRecord, new: &NewCertificate) -> DeviceRecord {
    DeviceRecord {
        certificate_sha256: new.certificate_sha256.clone(),
        not_after: new.not_after,
        previous_certificate: Some(PreviousCertificate {
            certificate_sha256: before.certificate_sha256.clone(),
            accepted_until: new.previous_accepted_until,
        }),
        ..before.clone()
    }
}

impl Store {
    /// Records a provisioned device and its initial twin, replacing a revoked
    /// one, in one transaction with the twin count. Returns false (and
    /// writes nothing) when the id is live. Fsyncs.
    pub fn provision(&self, record: &DeviceRecord, twin: &Twin) -> Result<bool, StoreError> {
        let key = record.id.as_bytes();
        let (record, twin) = (to_json(record), to_json(twin));
        let trees = (&self.devices, &self.twins, &self.revoked, &self.meta);
        let outcome = trees.transaction(|(devices, twins, revoked, meta)| {
            if devices.get(key)?.is_some() && revoked.get(key)?.is_none() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            devices.insert(key, record.as_slice())?;
            let new_twin = twins.insert(key, twin.as_slice())?.is_none();
            revoked.remove(key)?;
            if new_twin {
                let count = meta.get(TWIN_COUNT_KEY)?.map_or(0, |v| decode_u64(&v));
                meta.insert(TWIN_COUNT_KEY, (count + 1).to_be_bytes().to_vec())?;
            }
            Ok(new_twin)
        });
        let new_twin = match outcome {
            Ok(new_twin) => new_twin,
            Err(TransactionError::Abort(())) => return Ok(false),
            Err(TransactionError::Storage(error)) => return Err(error.into()),
        };
        if new_twin {
            self.twin_count.fetch_add(1, Ordering::Relaxed);
        }
        self.db.flush()?;
        Ok(true)
    }

    pub fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        get_json(&self.devices, id)
    }

    /// Marks a device revoked (fsynced); says whether it was live.
    pub fn revoke(&self, id: &str, at: u64) -> Result<Revocation, StoreError> {
        let Some(record) = self.device(id)? else {
            return Ok(Revocation::Unknown);
        };
        let before = self.revoked.insert(id, &at.to_be_bytes())?;
        self.db.flush()?;
        Ok(match before {
            None => Revocation::Revoked(record),
            Some(_) => Revocation::AlreadyRevoked,
        })
    }

    /// Makes `new` the certificate of live device `id`; the one it replaces
    /// stays accepted until `new.previous_accepted_until` (one renewed
    /// before it is forgotten). One transaction with the revocations, so a
    /// revoke is never undone; fsynced.
    pub fn renew_certificate(&self, id: &str, new: &NewCertificate) -> Result<Renewal, StoreError> {
        let key = id.as_bytes();
        let outcome = (&self.devices, &self.revoked).transaction(|(devices, revoked)| {
            let Some(value) = devices.get(key)? else {
                return Ok(Renewal::Unknown);
            };
            if revoked.get(key)?.is_some() {
                return Ok(Renewal::Revoked);
            }
            let before: DeviceRecord =
                decode(key, &value).map_err(ConflictableTransactionError::Abort)?;
            let after = renewed(&before, new);
            devices.insert(key, to_json(&after))?;
            Ok(Renewal::Renewed {
                before: Box::new(before),
                after: Box::new(after),
            })
        });
        let renewal = match outcome {
            Ok(renewal) => renewal,
            Err(TransactionError::Abort(error)) => return Err(error),
            Err(TransactionError::Storage(error)) => return Err(error.into()),
        };
        if matches!(renewal, Renewal::Renewed { .. }) {
            self.db.flush()?;
        }
        Ok(renewal)
    }

    /// Every device provisioned and not revoked (one scan: the census at
    /// start).
    pub fn live_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut live = Vec::new();
        for entry in self.devices.iter() {
            let (key, value) = entry?;
            if !self.revoked.contains_key(&key)? {
                live.push(decode(&key, &value)?);
            }
        }
        Ok(live)
    }

    pub fn is_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.revoked.contains_key(id)?)
    }

    pub fn revoked_ids(&self) -> Result<Vec<String>, StoreError> {
        self.revoked
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    pub fn twin(&self, id: &str) -> Result<Option<Twin>, StoreError> {
        get_json(&self.twins, id)
    }

    /// Writes twins in one atomic batch (not fsynced: see `flush`). Only
    /// twins `provision` created: the twin count does not change here.
    pub fn put_twins<'a>(&self, twins: impl Iterator<Item = &'a Twin>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for twin in twins {
            batch.insert(twin.id.as_bytes(), to_json(twin));
        }
        self.twins.apply_batch(batch)?;
        Ok(())
    }

    /// Every twin, in id order.
    pub fn twins(&self) -> impl Iterator<Item = Result<Twin, StoreError>> + '_ {
        self.twins.iter().map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
    }

    pub fn twin_count(&self) -> u64 {
        self.twin_count.load(Ordering::Relaxed)
    }
}
