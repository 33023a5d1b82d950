//! The district commands the hub took (docs/upstream.md, "Downlink"):
//! `downlink` (command id → `DownlinkTaken`: center, device, expiry) and
//! `downlink_expiry` (`expires_at` big-endian + id, to forget them in order
//! once expired).
//!
//! A command is taken in one sled transaction with its record (`pending`,
//! and in the open-commands index): an id already in `downlink` is a replay
//! and nothing is written. The caller fsyncs before it acknowledges the
//! message upstream, so a restart — even after `kill -9` — never takes an
//! id twice. Ids are forgotten only after their expiry (plus a margin),
//! when a replay is refused as expired anyway.

use protocol::api::CommandRecord;
use sled::Transactional;

use super::codec::{decode, pair_key, to_json};
use super::uplink::{storage, Tx};
use super::{Aged, Store, StoreError};
use crate::records::uplink::DownlinkTaken;

fn expiry_key(expires_at: u64, id: &str) -> Vec<u8> {
    [&expires_at.to_be_bytes()[..], id.as_bytes()].concat()
}

impl Store {
    /// Takes a district command: records `record` (pending) with `taken`
    /// under its id, atomically; `false` (nothing written) when the id was
    /// taken before. Not fsynced.
    pub fn take_downlink(
        &self,
        record: &CommandRecord,
        taken: &DownlinkTaken,
    ) -> Result<bool, StoreError> {
        let key = pair_key(&record.device, &record.id);
        let id = record.id.as_bytes();
        if self.downlink.contains_key(id)? {
            return Ok(false);
        }
        self.age(Aged::Commands, record.created_at, &key)?;
        let (value, taken_value) = (to_json(record), to_json(taken));
        let expiry = expiry_key(taken.expires_at, &record.id);
        let trees = (
            &self.downlink,
            &self.downlink_expiry,
            &self.commands,
            &self.open_commands,
        );
        trees
            .transaction(|(downlink, expiries, commands, open)| -> Tx<bool> {
                if downlink.get(id)?.is_some() {
                    return Ok(false);
                }
                downlink.insert(id, taken_value.as_slice())?;
                expiries.insert(expiry.as_slice(), &[][..])?;
                commands.insert(key.as_slice(), value.as_slice())?;
                open.insert(key.as_slice(), &[][..])?;
                Ok(true)
            })
            .map_err(storage)
    }

    /// The district command taken under `id`, while it is remembered.
    pub fn downlink_taken(&self, id: &str) -> Result<Option<DownlinkTaken>, StoreError> {
        self.downlink
            .get(id.as_bytes())?
            .map(|value| decode(id.as_bytes(), &value))
            .transpose()
    }

    /// Forgets up to `max` taken ids that expired before `before` (unix
    /// ms), oldest first; how many. Not fsynced: one remembered longer after
    /// a crash does no harm.
    pub fn forget_downlink(&self, before: u64, max: usize) -> Result<usize, StoreError> {
        let mut expiries = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut forgotten = 0;
        for entry in self.downlink_expiry.range(..before.to_be_bytes()).take(max) {
            let (key, _) = entry?;
            ids.remove(&key[8..]);
            expiries.remove(key);
            forgotten += 1;
        }
        self.downlink.apply_batch(ids)?;
        self.downlink_expiry.apply_batch(expiries)?;
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::{CommandOrigin, CommandStatus};

    fn record(id: &str) -> CommandRecord {
        CommandRecord {
            id: id.into(),
            device: "p1".into(),
            op: "unlock".into(),
            args: serde_json::json!({}),
            origin: CommandOrigin::District,
            status: CommandStatus::Pending,
            created_at: 10,
            expires_at: 1_000,
            first_sent_at: None,
            last_sent_at: None,
            completed_at: None,
            attempts: 0,
            error: None,
        }
    }

    fn taken(expires_at: u64) -> DownlinkTaken {
        DownlinkTaken {
            center: "c1".into(),
            device: "p1".into(),
            expires_at,
        }
    }

    #[test]
    fn an_id_is_taken_once_until_forgotten_after_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.take_downlink(&record("a"), &taken(1_000)).unwrap());
        assert!(!store.take_downlink(&record("a"), &taken(1_000)).unwrap());
        assert!(store.take_downlink(&record("b"), &taken(2_000)).unwrap());
        assert_eq!(store.open_commands().unwrap().len(), 2);
        assert_eq!(store.downlink_taken("a").unwrap(), Some(taken(1_000)));
        assert_eq!(store.forget_downlink(1_000, 10).unwrap(), 0, "not before");
        assert_eq!(store.forget_downlink(1_001, 10).unwrap(), 1);
        assert_eq!(store.downlink_taken("a").unwrap(), None);
        assert!(store.downlink_taken("b").unwrap().is_some());
        assert_eq!(store.forget_downlink(u64::MAX, 10).unwrap(), 1);
    }
}
