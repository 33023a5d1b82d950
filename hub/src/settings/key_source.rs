//! Where the key residents' credentials are hashed with comes from: its
//! file (`credential_key_file`, or `YIZHAN_CREDENTIAL_KEY_FILE`, which may
//! name a systemd credential as `$CREDENTIALS_DIRECTORY/…`; by default
//! `credential.key` in the data dir) or the key itself (`credential_key`,
//! or `YIZHAN_CREDENTIAL_KEY`). Parsed once; the file is read, or made, at
//! start (by the `credential_key` service), since a first start makes it.

use std::path::PathBuf;

use protocol::secret;

use super::file::Config;
use super::{invalid, ConfigError};
use crate::secrets;

/// The setting naming the key's file.
pub const FILE_FIELD: &str = "credential_key_file";
/// The setting holding the key itself.
pub const KEY_FIELD: &str = "credential_key";
/// The key's file in the data dir unless `credential_key_file` says
/// otherwise.
pub const DEFAULT_FILE: &str = "credential.key";

/// Where the credential key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Given in the configuration or the environment.
    Given([u8; 32]),
    /// Read from this file (made at first start when it is missing).
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Given(_) => f.write_str("Given(<masked>)"),
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// The key's source `config` names (`env` looks up
/// `CREDENTIALS_DIRECTORY`); fails naming the setting.
pub fn parse(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KeySource, ConfigError> {
    let (key, file) = (&config.credential_key, &config.credential_key_file);
    match (key.is_empty(), file.is_empty()) {
        (false, false) => Err(invalid(
            FILE_FIELD,
            format!("{KEY_FIELD} is set too; set one of them"),
        )),
        (false, true) => secrets::decode_key(key)
            .map(KeySource::Given)
            .ok_or_else(|| invalid(KEY_FIELD, "must be 64 hex digits")),
        (true, false) => secret::credentials_path(FILE_FIELD, file, env)
            .map(|path| KeySource::File(PathBuf::from(path)))
            .map_err(|error| invalid(FILE_FIELD, &error.reason)),
        (true, true) => Ok(KeySource::File(config.data_dir.join(DEFAULT_FILE))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, file: &str, expect: Result<KeySource, &str>) {
        let config = Config {
            data_dir: PathBuf::from("/data"),
            credential_key: key.into(),
            credential_key_file: file.into(),
            ..Config::default()
        };
        let env = |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| "/run/creds".to_string());
        let got = parse(&config, &env).map_err(|error| error.to_string());
        match expect {
            Ok(source) => assert_eq!(got, Ok(source), "{key:?} {file:?}"),
            Err(needle) => {
                let error = got.expect_err("an error");
                assert!(error.contains(needle), "{error:?} should name {needle:?}");
                assert!(
                    key.is_empty() || !error.contains(key),
                    "{error:?} shows the key"
                );
            }
        }
    }

    #[test]
    fn the_key_comes_from_its_file_or_the_setting_and_bad_values_are_named() {
        let hex = "0f".repeat(32);
        check("", "", Ok(KeySource::File("/data/credential.key".into())));
        check("", "/etc/k", Ok(KeySource::File("/etc/k".into())));
        check(
            "",
            "$CREDENTIALS_DIRECTORY/credential_key",
            Ok(KeySource::File("/run/creds/credential_key".into())),
        );
        check(&hex, "", Ok(KeySource::Given([0x0f; 32])));
        check(
            &hex[1..],
            "",
            Err("`credential_key`: must be 64 hex digits"),
        );
        check(
            &hex,
            "/etc/k",
            Err("`credential_key_file`: credential_key is set too"),
        );
        let config = Config {
            credential_key_file: "$CREDENTIALS_DIRECTORY/k".into(),
            ..Config::default()
        };
        let error = parse(&config, &|_| None).unwrap_err().to_string();
        assert!(error.contains("`credential_key_file`"), "{error}");
        assert_eq!(
            format!("{:?}", KeySource::Given([7; 32])),
            "Given(<masked>)"
        );
    }
}
