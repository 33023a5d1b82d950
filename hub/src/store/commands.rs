//! Command records and the index of the open ones.

use protocol::api::CommandRecord;

use super::codec::{decode, page_json, pair_key, to_json, Page};
use super::undo::keep;
use super::{Aged, Store, StoreError};

impl Store {
    /// Writes a command record (not fsynced) and keeps the open-commands
    /// index in step: a superset of the open ones at any crash point. A
    /// district command's outcome goes into the uplink outbox in the same
    /// sled transaction as its final record.
    pub fn put_command(&self, record: &CommandRecord) -> Result<(), StoreError> {
        let key = pair_key(&record.device, &record.id);
        keep(&self.commands, &key)?;
        keep(&self.open_commands, &key)?;
        self.age(Aged::Commands, record.created_at, &key)?;
        if let Some(written) = self.outcome_with_entry(&key, record) {
            return written;
        }
        if record.status.is_final() {
            self.commands.insert(&key, to_json(record))?;
            self.open_commands.remove(&key)?;
        } else {
            self.open_commands.insert(&key, &[])?;
            self.commands.insert(&key, to_json(record))?;
        }
        Ok(())
    }

    pub fn command(&self, device: &str, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let key = pair_key(device, id);
        self.commands
            .get(&key)?
            .map(|value| decode(&key, &value))
            .transpose()
    }

    /// One page of a device's commands, oldest first (ids sort by issue
    /// time), after the id `after`.
    pub fn commands_page(
        &self,
        device: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<CommandRecord>, StoreError> {
        page_json(&self.commands, &pair_key(device, ""), after, limit)
    }

    /// Every command without an outcome yet.
    pub fn open_commands(&self) -> Result<Vec<CommandRecord>, StoreError> {
        let mut open = Vec::new();
        for key in self.open_commands.iter().keys() {
            let key = key?;
            if let Some(value) = self.commands.get(&key)? {
                let record: CommandRecord = decode(&key, &value)?;
                if !record.status.is_final() {
                    open.push(record);
                }
            }
        }
        Ok(open)
    }
}
