//! Resources and rooms added or changed through the API, and bound
//! devices' outages.

use crate::records::{Outage, ResourceConfig, RoomConfig};

use super::codec::{decode, scan_json, to_json};
use super::{Store, StoreError};

impl Store {
    /// Records a bound device's outage (not fsynced).
    pub fn put_outage(&self, device: &str, outage: &Outage) -> Result<(), StoreError> {
        self.outages.insert(device, to_json(outage))?;
        Ok(())
    }

    pub fn remove_outage(&self, device: &str) -> Result<(), StoreError> {
        self.outages.remove(device)?;
        Ok(())
    }

    /// Every bound device's outage, as `(device, outage)`.
    pub fn outages(&self) -> Result<Vec<(String, Outage)>, StoreError> {
        self.outages
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    decode(&key, &value)?,
                ))
            })
            .collect()
    }

    /// Keeps a resource added or changed through the API. Fsyncs.
    pub fn put_resource(&self, resource: &ResourceConfig) -> Result<(), StoreError> {
        self.resources
            .insert(resource.id.as_bytes(), to_json(resource))?;
        self.db.flush()?;
        Ok(())
    }

    /// Resources added or changed through the API, in id order.
    pub fn stored_resources(&self) -> Result<Vec<ResourceConfig>, StoreError> {
        scan_json(&self.resources, b"")
    }

    /// Keeps a room set through the API. Fsyncs.
    pub fn put_room(&self, room: &RoomConfig) -> Result<(), StoreError> {
        let key = format!("{}/{}", room.center, room.id);
        self.rooms.insert(key.as_bytes(), to_json(room))?;
        self.db.flush()?;
        Ok(())
    }

    /// Rooms set through the API, by center then id.
    pub fn stored_rooms(&self) -> Result<Vec<RoomConfig>, StoreError> {
        scan_json(&self.rooms, b"")
    }
}
