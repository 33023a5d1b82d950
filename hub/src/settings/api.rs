//! How the HTTP API serves (`[api]`): TLS or not, the limits a slow or
//! greedy client meets, and how long the audit log keeps an entry —
//! checked and turned into `Duration`s once.

use std::time::Duration;

use super::file::ApiConfig;
use super::ConfigError;

/// The API's serving limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// https with the hub's server certificate instead of http.
    pub tls: bool,
    /// Longest a connection may take to send a request's headers (and the
    /// TLS handshake), and to stay idle between requests.
    pub header_read_timeout: Duration,
    /// Longest a request may take to be answered once its headers arrived.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
}

/// The bounds of `[api]`'s numbers: (field, value, least, most).
fn bounds(api: &ApiConfig) -> [(&'static str, u64, u64, u64); 4] {
    [
        (
            "api.header_read_timeout_ms",
            api.header_read_timeout_ms,
            100,
            600_000,
        ),
        (
            "api.request_timeout_ms",
            api.request_timeout_ms,
            100,
            3_600_000,
        ),
        ("api.max_connections", api.max_connections as u64, 1, 65_536),
        (
            "api.audit_retention_days",
            api.audit_retention_days,
            1,
            3_660,
        ),
    ]
}

/// `[api]`'s serving values, each in its range; and the audit retention.
pub fn parse(api: &ApiConfig) -> Result<(HttpSettings, Duration), ConfigError> {
    for (field, value, least, most) in bounds(api) {
        if !(least..=most).contains(&value) {
            return Err(ConfigError::Invalid {
                field: field.to_string(),
                reason: format!("must be {least}-{most}, got {value}"),
            });
        }
    }
    let http = HttpSettings {
        tls: api.tls,
        header_read_timeout: Duration::from_millis(api.header_read_timeout_ms),
        request_timeout: Duration::from_millis(api.request_timeout_ms),
        max_connections: api.max_connections,
    };
    let audit_retention = Duration::from_secs(api.audit_retention_days * 86_400);
    Ok((http, audit_retention))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_named() {
        let (http, retention) = parse(&ApiConfig::default()).unwrap();
        assert_eq!(http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(retention, Duration::from_secs(90 * 86_400));
        let check = |change: fn(&mut ApiConfig), field: &str| {
            let mut api = ApiConfig::default();
            change(&mut api);
            let error = parse(&api).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        };
        check(
            |a| a.header_read_timeout_ms = 0,
            "api.header_read_timeout_ms",
        );
        check(
            |a| a.request_timeout_ms = u64::MAX,
            "api.request_timeout_ms",
        );
        check(|a| a.max_connections = 0, "api.max_connections");
        check(
            |a| a.audit_retention_days = 100_000,
            "api.audit_retention_days",
        );
    }
}
