//! `[uplink.downlink]` parsed: the trusted Ed25519 keys by key id (from
//! the file's table and the keys file), each checked against the id it is
//! filed under, the centers whose commands the hub takes, the longest
//! lifetime a command may have. A bad value names its field.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use protocol::upstream::{is_center, key_id, parse_public_key, VerifyingKey};

use super::file::DownlinkConfig;
use super::FieldError;

/// What the hub takes from the upstream (`Some` with at least one key).
#[derive(Debug, Clone, PartialEq)]
pub struct DownlinkSettings {
    /// Trusted public keys by key id.
    pub keys: BTreeMap<String, VerifyingKey>,
    pub centers: BTreeSet<String>,
    pub max_lifetime: Duration,
}

/// The longest `max_lifetime_secs`: a week.
const MAX_LIFETIME_SECS: u64 = 7 * 86_400;

fn field(name: &str) -> String {
    format!("uplink.downlink.{name}")
}

/// Checks every value (also without keys); `None` while no key is trusted.
pub fn parse(config: &DownlinkConfig) -> Result<Option<DownlinkSettings>, FieldError> {
    if !(1..=MAX_LIFETIME_SECS).contains(&config.max_lifetime_secs) {
        let reason = format!("must be between 1 and {MAX_LIFETIME_SECS}");
        return Err((field("max_lifetime_secs"), reason));
    }
    let centers: BTreeSet<String> = config.centers.iter().cloned().collect();
    if let Some(bad) = centers.iter().find(|center| !is_center(center)) {
        let reason = format!("{bad:?}: 1-64 ASCII letters, digits, '-' or '_'");
        return Err((field("centers"), reason));
    }
    let mut keys = BTreeMap::new();
    for (id, text) in &config.keys {
        add_key(&mut keys, id, text, &field(&format!("keys.{id}")))?;
    }
    if !config.keys_file.is_empty() {
        read_keys_file(&config.keys_file, &mut keys)?;
    }
    if keys.is_empty() {
        return Ok(None);
    }
    if centers.is_empty() {
        let reason = "at least one center is required with a trusted key".to_string();
        return Err((field("centers"), reason));
    }
    Ok(Some(DownlinkSettings {
        keys,
        centers,
        max_lifetime: Duration::from_secs(config.max_lifetime_secs),
    }))
}

/// Adds key `text` under `id`, which must be its key id.
fn add_key(
    keys: &mut BTreeMap<String, VerifyingKey>,
    id: &str,
    text: &str,
    field: &str,
) -> Result<(), FieldError> {
    let key = parse_public_key(text).map_err(|e| (field.to_string(), e.to_string()))?;
    let derived = key_id(&key);
    if derived != id {
        let reason = format!("this key's id is {derived}, not {id}");
        return Err((field.to_string(), reason));
    }
    keys.insert(derived, key);
    Ok(())
}

/// The keys file: `key_id public_key` per line, `#` comments, blank lines.
fn read_keys_file(path: &str, keys: &mut BTreeMap<String, VerifyingKey>) -> Result<(), FieldError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| (field("keys_file"), format!("cannot read {path}: {e}")))?;
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = field(&format!("keys_file line {}", number + 1));
        let Some((id, key)) = line.split_once(char::is_whitespace) else {
            return Err((at, "expected `key_id public_key`".into()));
        };
        add_key(keys, id, key.trim(), &at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::upstream::SigningKey;

    fn public(seed: u8) -> (String, String) {
        let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        (key_id(&key), hex::encode(key.as_bytes()))
    }

    fn with_key(change: impl FnOnce(&mut DownlinkConfig)) -> DownlinkConfig {
        let (id, key) = public(1);
        let mut config = DownlinkConfig {
            centers: vec!["center01".into()],
            keys: BTreeMap::from([(id, key)]),
            ..DownlinkConfig::default()
        };
        change(&mut config);
        config
    }

    fn check_refused(config: DownlinkConfig, field: &str) {
        let (named, reason) = parse(&config).expect_err(field);
        assert!(named.starts_with(field), "{named}: {reason}");
    }

    #[test]
    fn keys_are_trusted_under_their_own_ids_only() {
        assert_eq!(parse(&DownlinkConfig::default()), Ok(None), "off");
        let parsed = parse(&with_key(|_| {})).unwrap().unwrap();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.max_lifetime, Duration::from_secs(3_600));
        let (other_id, _) = public(2);
        check_refused(
            with_key(|c| {
                let key = c.keys.pop_first().unwrap().1;
                c.keys.insert(other_id, key);
            }),
            "uplink.downlink.keys.",
        );
        check_refused(
            with_key(|c| {
                c.keys.insert("x".into(), "abcd".into());
            }),
            "uplink.downlink.keys.x",
        );
        check_refused(with_key(|c| c.centers.clear()), "uplink.downlink.centers");
        check_refused(
            with_key(|c| c.centers.push("a/b".into())),
            "uplink.downlink.centers",
        );
        check_refused(
            with_key(|c| c.max_lifetime_secs = 0),
            "uplink.downlink.max_lifetime_secs",
        );
    }

    #[test]
    fn a_keys_file_adds_keys_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (id, key) = public(2);
        std::fs::write(&path, format!("# district keys\n\n{id} {key}  # ops\n")).unwrap();
        let path = path.display().to_string();
        let parsed = parse(&with_key(|c| c.keys_file = path.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.keys.len(), 2);
        std::fs::write(dir.path().join("bad"), format!("{id}\n")).unwrap();
        let bad = dir.path().join("bad").display().to_string();
        check_refused(
            with_key(|c| c.keys_file = bad),
            "uplink.downlink.keys_file line 1",
        );
        check_refused(
            with_key(|c| c.keys_file = "/nonexistent/keys".into()),
            "uplink.downlink.keys_file",
        );
    }
}
