//! Undoing a batch whose fsync failed: the booking desk keeps, on its own
//! thread, what each of its writes replaced, and puts it back when the
//! batch cannot be made durable, so a booking answered 503 is not applied
//! by sled's next flush (its background flush, or the last one at
//! shutdown). After a successful fsync the desk forgets what it kept.
//!
//! Thread-local: only the thread that asked for it keeps anything (the
//! desk), so ingest's writes to the same trees (command records) cost no
//! extra read. The methods that keep are those the desk writes through:
//! bookings, milestones, idempotency answers, strikes, notifications,
//! outages and command records. Against a real disk error this is
//! best-effort: what reaches the platter after a failed fsync is not
//! known, which is why a booking request carries an `Idempotency-Key`.

use std::cell::RefCell;

use super::{Store, StoreError};

/// A key as it was before this thread first wrote it.
struct Before {
    tree: sled::Tree,
    key: sled::IVec,
    value: Option<sled::IVec>,
}

thread_local! {
    /// `Some` on a thread that keeps its writes' previous values.
    static KEPT: RefCell<Option<Vec<Before>>> = const { RefCell::new(None) };
}

/// Writes to one tree, applied as one atomic batch; `apply` keeps what
/// they replace first when this thread keeps its writes.
#[derive(Default)]
pub(super) struct Writes {
    batch: sled::Batch,
    keys: Vec<Vec<u8>>,
}

impl Writes {
    pub(super) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<sled::IVec>) {
        let key = key.into();
        self.batch.insert(key.as_slice(), value);
        self.keys.push(key);
    }

    pub(super) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.batch.remove(key.as_slice());
        self.keys.push(key);
    }

    pub(super) fn apply(self, tree: &sled::Tree) -> Result<(), StoreError> {
        let batch = self.kept_batch(tree)?;
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// The batch, for a caller that applies it to `tree` itself (in a
    /// transaction with other trees), after keeping what it replaces.
    pub(super) fn kept_batch(self, tree: &sled::Tree) -> Result<sled::Batch, StoreError> {
        for key in &self.keys {
            keep(tree, key)?;
        }
        Ok(self.batch)
    }
}

/// Keeps `key`'s present value in `tree`, if this thread keeps its writes.
pub(super) fn keep(tree: &sled::Tree, key: &[u8]) -> Result<(), StoreError> {
    let keeping = KEPT.with_borrow(Option::is_some);
    if !keeping {
        return Ok(());
    }
    let value = tree.get(key)?;
    KEPT.with_borrow_mut(|kept| {
        if let Some(kept) = kept {
            kept.push(Before {
                tree: tree.clone(),
                key: key.into(),
                value,
            });
        }
    });
    Ok(())
}

impl Store {
    /// From now on this thread keeps what its writes replace, until
    /// `forget_kept` or `undo_kept`.
    pub fn keep_writes(&self) {
        KEPT.with_borrow_mut(|kept| *kept = Some(Vec::new()));
    }

    /// The writes so far are durable: forget what they replaced.
    pub fn forget_kept(&self) {
        KEPT.with_borrow_mut(|kept| {
            if let Some(kept) = kept {
                kept.clear();
            }
        });
    }

    /// Puts back every key this thread wrote since it last forgot, newest
    /// write first (so a key written twice ends as it was before the
    /// first). Not fsynced. Returns the keys put back.
    pub fn undo_kept(&self) -> Result<usize, StoreError> {
        let kept = KEPT.with_borrow_mut(|kept| kept.as_mut().map(std::mem::take));
        let kept = kept.unwrap_or_default();
        for before in kept.iter().rev() {
            match &before.value {
                Some(value) => before.tree.insert(&before.key, value.clone())?,
                None => before.tree.remove(&before.key)?,
            };
        }
        Ok(kept.len())
    }
}
