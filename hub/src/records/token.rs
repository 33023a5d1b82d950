//! The API's callers: the roles a bearer token carries, a token created
//! through the API (kept as its SHA-256 only), and the audit log's entry
//! for a change a caller asked for.

use serde::{Deserialize, Serialize};

/// What a token may do (docs/security.md has the table of routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Devices, certificates, resources, rooms, residents, tokens, the
    /// clock — and everything the other roles do.
    Admin,
    /// Commands, check-ins, alarm acknowledgement, bookings for anyone.
    Staff,
    /// A booking front end: bookings and waitlists on behalf of residents,
    /// availability.
    Frontend,
    /// Reads the API (no tokens, no audit, no metrics).
    Readonly,
    /// Scrapes `/metrics` and nothing else.
    Metrics,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Staff,
        Role::Frontend,
        Role::Readonly,
        Role::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
            Role::Frontend => "frontend",
            Role::Readonly => "readonly",
            Role::Metrics => "metrics",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token created through the API. The token itself was shown once, at
/// its creation; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// 16 hex digits, random.
    pub id: String,
    /// Who or what holds it (a label: `wechat-frontend`, `desk-3`).
    pub name: String,
    pub role: Role,
    pub sha256: String,
    /// unix ms
    pub created_at: u64,
}

/// One change asked of the API: who, what, when, and how it was answered.
/// Never the request's body: no credential, password or token is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increasing across restarts; the paging cursor.
    pub id: u64,
    /// When the answer was sent (unix ms).
    pub at: u64,
    /// The token's id (`config-admin`, `config-metrics` for the tokens of
    /// the configuration).
    pub token: String,
    /// The token's name when the change was asked.
    pub name: String,
    pub role: Role,
    pub method: String,
    /// The route's template, e.g. `/api/v1/bookings/{id}`.
    pub route: String,
    /// The path's parameters (`{id}`, `{id}/{cid}`), when the route has
    /// any: the object changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The answer's status code.
    pub status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_as_written() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse("Admin"), None);
    }
}
