//! The bookable resources: from the settings, then those added or changed
//! through the API (kept in the store). Shared by the API and the desk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::settings::Resource;

/// The bookable resources by id.
#[derive(Debug, Default)]
pub struct Catalog {
    /// std RwLock: held only to read or swap an entry, never across an await.
    map: std::sync::RwLock<BTreeMap<String, Arc<Resource>>>,
    /// Bumped by every `put`: the desk counts its gauges again.
    version: AtomicU64,
}

impl Catalog {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Resource>>> {
        // invariant: no code panics while holding the lock.
        self.map.read().expect("catalog lock")
    }

    pub fn get(&self, id: &str) -> Option<Arc<Resource>> {
        self.read().get(id).cloned()
    }

    /// Every resource, in id order.
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.read().values().cloned().collect()
    }

    /// Resources a device is bound to.
    pub fn bound_to(&self, device: &str) -> Vec<Arc<Resource>> {
        self.read()
            .values()
            .filter(|r| r.config.devices.iter().any(|d| d == device))
            .cloned()
            .collect()
    }

    /// Adds or replaces a resource.
    pub fn put(&self, resource: Resource) {
        // invariant: no code panics while holding the lock.
        let mut map = self.map.write().expect("catalog lock");
        map.insert(resource.config.id.clone(), Arc::new(resource));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Changes with every `put`.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}
