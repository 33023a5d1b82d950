//! Secrets from the environment, shared by the hub and the district
//! service: a token or password given in plain text in one variable, or
//! read from the file another variable names (a mounted secret, or a
//! systemd credential: a path starting with `$CREDENTIALS_DIRECTORY/`), so
//! it stays out of process lists and unit files. Bearer tokens are kept
//! only as their SHA-256 and compared in constant time.

use sha2::{Digest, Sha256};

/// Where one secret may come from.
#[derive(Debug, Clone, Copy)]
pub struct SecretVars {
    /// The configuration field that holds it (or its hash) instead.
    pub field: &'static str,
    /// The variable holding it in plain text.
    pub plain: &'static str,
    /// The variable naming a file that holds it.
    pub file: &'static str,
}

/// A variable whose value cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{var}`: {reason}")]
pub struct SecretError {
    pub var: String,
    pub reason: String,
}

/// The variable systemd sets to the unit's credentials directory.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The secret `vars` name (trimmed) and the variable it came from, if
/// either variable is set (`env` looks a variable up). Fails naming the
/// variable: both set, a file that cannot be read.
pub fn read(
    vars: SecretVars,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, &'static str)>, SecretError> {
    let (secret, from) = match (env(vars.plain), env(vars.file)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                vars.file,
                format!("{} is set too; set one of them", vars.plain),
            ))
        }
        (Some(secret), None) => (secret, vars.plain),
        (None, Some(path)) => (read_file(vars.file, &path, env)?, vars.file),
    };
    Ok(Some((secret.trim().to_string(), from)))
}

/// A bearer token `vars` name, at least `min_chars` long, if set.
pub fn token(
    vars: SecretVars,
    min_chars: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, SecretError> {
    let Some((token, from)) = read(vars, env)? else {
        return Ok(None);
    };
    if token.chars().count() < min_chars {
        return Err(invalid(
            from,
            format!("the token must be at least {min_chars} characters"),
        ));
    }
    Ok(Some(token))
}

/// The text of the file `path` (named by variable `var`); a leading
/// `$CREDENTIALS_DIRECTORY` is the systemd credentials directory.
fn read_file(
    var: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    let path = credentials_path(var, path, env)?;
    std::fs::read_to_string(&path)
        .map_err(|error| invalid(var, format!("cannot read {path}: {error}")))
}

/// `path` with a leading `$CREDENTIALS_DIRECTORY` (or
/// `${CREDENTIALS_DIRECTORY}`) replaced by the systemd credentials
/// directory; fails naming `var` when that variable is not set.
pub fn credentials_path(
    var: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    let Some(rest) = path
        .strip_prefix("$CREDENTIALS_DIRECTORY")
        .or_else(|| path.strip_prefix("${CREDENTIALS_DIRECTORY}"))
    else {
        return Ok(path.to_string());
    };
    let dir = env(CREDENTIALS_DIRECTORY).ok_or_else(|| {
        invalid(
            var,
            format!("{path} names {CREDENTIALS_DIRECTORY}, which is not set"),
        )
    })?;
    Ok(format!("{dir}{rest}"))
}

fn invalid(var: &str, reason: String) -> SecretError {
    SecretError {
        var: var.to_string(),
        reason,
    }
}

/// SHA-256 of `secret`, lower-case hex.
pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `secret` hashes to `expected_hex`, comparing in constant time.
pub fn matches_sha256(secret: &str, expected_hex: &str) -> bool {
    let actual = sha256_hex(secret);
    actual.len() == expected_hex.len()
        && actual
            .bytes()
            .zip(expected_hex.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Which of a service's two bearer tokens a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The token every route takes (the hub's admin token, the district's
    /// API token).
    Full,
    /// The scrape-only token: `/metrics` and nothing else.
    Scrape,
}

/// Why a request's bearer token is refused (both answer 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("missing `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
}

/// Recognises the token in an `Authorization` header value against the
/// full token's hash and, if one is configured, the scrape-only token's.
pub fn bearer(
    authorization: Option<&str>,
    full_sha256: &str,
    scrape_sha256: Option<&str>,
) -> Result<Presented, BearerError> {
    let token = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(BearerError::Missing)?;
    if matches_sha256(token, full_sha256) {
        return Ok(Presented::Full);
    }
    match scrape_sha256 {
        Some(hash) if matches_sha256(token, hash) => Ok(Presented::Scrape),
        _ => Err(BearerError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: SecretVars = SecretVars {
        field: "api.token_sha256",
        plain: "T",
        file: "T_FILE",
    };

    fn check(vars: &[(&str, &str)], expect: Result<Option<&str>, &str>) {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let got = token(VARS, 16, &env);
        match expect {
            Ok(token) => assert_eq!(got, Ok(token.map(String::from)), "{vars:?}"),
            Err(needle) => {
                let error = got.expect_err("an error").to_string();
                assert!(
                    error.contains(needle),
                    "{error:?} should contain {needle:?}"
                );
            }
        }
    }

    #[test]
    fn tokens_come_from_a_variable_or_a_file_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-a-file-0123456789\n").unwrap();
        let file = dir.path().join("token").display().to_string();
        let credentials = dir.path().display().to_string();
        check(&[], Ok(None));
        check(
            &[("T", " plain-token-0123456789 ")],
            Ok(Some("plain-token-0123456789")),
        );
        check(&[("T_FILE", &file)], Ok(Some("from-a-file-0123456789")));
        check(
            &[
                ("CREDENTIALS_DIRECTORY", &credentials),
                ("T_FILE", "$CREDENTIALS_DIRECTORY/token"),
            ],
            Ok(Some("from-a-file-0123456789")),
        );
        check(&[("T", "short")], Err("`T`: the token must be at least 16"));
        check(
            &[("T", "a"), ("T_FILE", &file)],
            Err("`T_FILE`: T is set too"),
        );
        check(
            &[("T_FILE", "/nonexistent/t")],
            Err("`T_FILE`: cannot read"),
        );
        check(
            &[("T_FILE", "$CREDENTIALS_DIRECTORY/token")],
            Err("CREDENTIALS_DIRECTORY, which is not set"),
        );
    }

    #[test]
    fn bearer_tokens_are_recognised() {
        let (full, scrape) = (sha256_hex("full-token"), sha256_hex("scrape-token"));
        let check =
            |header: Option<&str>, scrape_hash: Option<&str>| bearer(header, &full, scrape_hash);
        assert_eq!(check(Some("Bearer full-token"), None), Ok(Presented::Full));
        assert_eq!(
            check(Some("Bearer  full-token "), None),
            Ok(Presented::Full)
        );
        assert_eq!(
            check(Some("Bearer scrape-token"), Some(&scrape)),
            Ok(Presented::Scrape)
        );
        assert_eq!(
            check(Some("Bearer scrape-token"), None),
            Err(BearerError::Invalid)
        );
        assert_eq!(check(Some("Basic abc"), None), Err(BearerError::Missing));
        assert_eq!(check(None, None), Err(BearerError::Missing));
    }

    #[test]
    fn hashes_match_only_their_secret() {
        let hash = sha256_hex("abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches_sha256("abc", &hash));
        assert!(!matches_sha256("abd", &hash));
        assert!(!matches_sha256("abc", &hash[1..]));
    }
}
