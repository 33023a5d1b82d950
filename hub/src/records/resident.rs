//! A resident who may pass gates and book places.

use serde::{Deserialize, Serialize};

/// A resident who may pass gates. The credential is kept only as
/// HMAC-SHA256 under the hub's own key (`secrets::credential_hash`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resident {
    pub id: String,
    pub credential_hash: String,
    pub group: Option<String>,
    pub blocked: bool,
    pub created_at: u64,
}
