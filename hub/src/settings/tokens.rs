//! The API's bearer tokens from the environment: in plain text
//! (`YIZHAN_ADMIN_TOKEN`, `YIZHAN_METRICS_TOKEN`) or read from the file a
//! `*_FILE` variable names (a mounted secret, or a systemd credential:
//! `%d/admin_token` in a unit file, or a path starting with
//! `$CREDENTIALS_DIRECTORY/`), so a token stays out of process lists and
//! unit files. A token is hashed as soon as it is read; only its SHA-256 is
//! kept. A hash in the configuration (`api.*_token_sha256`) wins over the
//! environment. The uplink's password comes the same ways
//! (`YIZHAN_UPLINK_PASSWORD`, `YIZHAN_UPLINK_PASSWORD_FILE`) and is kept
//! as given: the upstream broker checks it.

use protocol::secret;

use super::file::{ApiConfig, UplinkConfig};
use super::{invalid, ConfigError};
use crate::secrets;

/// Where one token may come from (`protocol::secret`, shared with the
/// district service).
pub use protocol::secret::SecretVars as TokenVars;

/// The admin token: every call that changes or reveals something.
pub const ADMIN_TOKEN: TokenVars = TokenVars {
    field: "api.admin_token_sha256",
    plain: "YIZHAN_ADMIN_TOKEN",
    file: "YIZHAN_ADMIN_TOKEN_FILE",
};

/// The scrape-only token: `GET /metrics` and nothing else.
pub const METRICS_TOKEN: TokenVars = TokenVars {
    field: "api.metrics_token_sha256",
    plain: "YIZHAN_METRICS_TOKEN",
    file: "YIZHAN_METRICS_TOKEN_FILE",
};

/// The password the hub gives its upstream broker.
pub const UPLINK_PASSWORD: TokenVars = TokenVars {
    field: "uplink.password",
    plain: "YIZHAN_UPLINK_PASSWORD",
    file: "YIZHAN_UPLINK_PASSWORD_FILE",
};

/// The shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Fills `api`'s empty token hashes from the environment (`env` looks a
/// variable up). Fails naming the variable: both forms set, a file that
/// cannot be read, a token shorter than `MIN_TOKEN_CHARS`.
pub fn from_env(
    api: &mut ApiConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (vars, hash) in [
        (ADMIN_TOKEN, &mut api.admin_token_sha256),
        (METRICS_TOKEN, &mut api.metrics_token_sha256),
    ] {
        if hash.is_empty() {
            if let Some(token) = token(vars, env)? {
                *hash = secrets::sha256_hex(&token);
            }
        }
    }
    Ok(())
}

/// Fills an empty `uplink.password` from the environment. Fails naming the
/// variable: both forms set, a file that cannot be read, an empty password.
pub fn uplink_password(
    uplink: &mut UplinkConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if !uplink.password.is_empty() {
        return Ok(());
    }
    if let Some((password, from)) = secret(UPLINK_PASSWORD, env)? {
        if password.is_empty() {
            return Err(invalid(from, "the password is empty"));
        }
        uplink.password = password;
    }
    Ok(())
}

/// The token `vars` name, if either variable is set.
fn token(
    vars: TokenVars,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    secret::token(vars, MIN_TOKEN_CHARS, env).map_err(ConfigError::from)
}

/// The secret `vars` name (trimmed) and the variable it came from, if
/// either variable is set.
fn secret(
    vars: TokenVars,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, &'static str)>, ConfigError> {
    secret::read(vars, env).map_err(ConfigError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Runs `from_env` on an empty `[api]` with `vars`; the two hashes, or
    /// the error's text.
    fn resolve(vars: &[(&str, &str)]) -> Result<(String, String), String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut api = ApiConfig::default();
        from_env(&mut api, &|name| vars.get(name).cloned()).map_err(|e| e.to_string())?;
        Ok((api.admin_token_sha256, api.metrics_token_sha256))
    }

    #[test]
    fn tokens_come_from_plain_variables_or_files_and_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics_token");
        std::fs::write(&file, "scrape-only-token-0123\n").unwrap();
        let file = file.to_str().unwrap();
        let admin = "admin-token-0123456789";
        let (a, m) = resolve(&[
            ("YIZHAN_ADMIN_TOKEN", admin),
            ("YIZHAN_METRICS_TOKEN_FILE", file),
        ])
        .unwrap();
        assert_eq!(a, secrets::sha256_hex(admin));
        assert_eq!(m, secrets::sha256_hex("scrape-only-token-0123"));
        let credentials = dir.path().to_str().unwrap();
        let (_, m) = resolve(&[
            ("CREDENTIALS_DIRECTORY", credentials),
            (
                "YIZHAN_METRICS_TOKEN_FILE",
                "$CREDENTIALS_DIRECTORY/metrics_token",
            ),
        ])
        .unwrap();
        assert_eq!(m, secrets::sha256_hex("scrape-only-token-0123"));
        assert_eq!(resolve(&[]).unwrap(), (String::new(), String::new()));
    }

    #[test]
    fn the_uplink_password_comes_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uplink_password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let file = file.to_str().unwrap();
        let resolve = |vars: &[(&str, &str)], configured: &str| {
            let mut uplink = UplinkConfig {
                password: configured.into(),
                ..UplinkConfig::default()
            };
            let env = |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            };
            uplink_password(&mut uplink, &env)
                .map(|()| uplink.password)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            resolve(&[("YIZHAN_UPLINK_PASSWORD_FILE", file)], ""),
            Ok("s3cret".into())
        );
        assert_eq!(
            resolve(&[("YIZHAN_UPLINK_PASSWORD", "pw")], ""),
            Ok("pw".into())
        );
        assert_eq!(
            resolve(&[("YIZHAN_UPLINK_PASSWORD", "pw")], "file"),
            Ok("file".into())
        );
        assert_eq!(resolve(&[], ""), Ok(String::new()));
        let error = resolve(&[("YIZHAN_UPLINK_PASSWORD", " ")], "").unwrap_err();
        assert!(error.contains("`YIZHAN_UPLINK_PASSWORD`"), "{error}");
        let both = [
            ("YIZHAN_UPLINK_PASSWORD", "a"),
            ("YIZHAN_UPLINK_PASSWORD_FILE", file),
        ];
        let error = resolve(&both, "").unwrap_err();
        assert!(error.contains("`YIZHAN_UPLINK_PASSWORD_FILE`"), "{error}");
    }

    #[test]
    fn bad_token_variables_are_named() {
        let check = |vars: &[(&str, &str)], needle: &str| {
            let error = resolve(vars).unwrap_err();
            assert!(error.contains(needle), "{error:?} should name {needle:?}");
        };
        check(&[("YIZHAN_ADMIN_TOKEN", "short")], "`YIZHAN_ADMIN_TOKEN`");
        check(
            &[("YIZHAN_ADMIN_TOKEN_FILE", "/nonexistent/admin_token")],
            "`YIZHAN_ADMIN_TOKEN_FILE`",
        );
        check(
            &[
                ("YIZHAN_METRICS_TOKEN", "scrape-only-token-0123"),
                ("YIZHAN_METRICS_TOKEN_FILE", "/x"),
            ],
            "`YIZHAN_METRICS_TOKEN_FILE`",
        );
        check(
            &[(
                "YIZHAN_METRICS_TOKEN_FILE",
                "$CREDENTIALS_DIRECTORY/metrics_token",
            )],
            "CREDENTIALS_DIRECTORY, which is not set",
        );
    }
}
