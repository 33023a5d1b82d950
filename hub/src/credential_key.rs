//! The key residents' credentials are hashed with
//! (`secrets::credential_hash`), kept outside the store so that a copy of
//! the database is not key and hashes together.
//!
//! At start the key comes from the settings (`settings::KeySource`): given,
//! or read from its file. A missing file is made (mode 0600): with the key
//! an earlier hub kept in `meta`, which is then removed from the store; or
//! with a new random key when the store holds no credential. A store that
//! holds credentials and no key is refused, never given a new key (which
//! would make every stored credential unknown). The store keeps the key's
//! check value (`secrets::key_check`), so a different key given later is
//! refused too while credentials are stored.

use std::path::{Path, PathBuf};

use crate::data_dir;
use crate::secrets;
use crate::settings::key_source::{FILE_FIELD, KEY_FIELD};
use crate::settings::KeySource;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "invalid value for `{FILE_FIELD}`: {path} does not exist, and the store holds residents' \
         credentials hashed under the key it held; restore that file (from a backup): a new key \
         would make every stored credential unknown"
    )]
    Missing { path: PathBuf },
    #[error("invalid value for `{FILE_FIELD}`: cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid value for `{FILE_FIELD}`: {path} must hold 64 hex digits")]
    Malformed { path: PathBuf },
    #[error(
        "invalid value for `{field}`: not the key this store's credentials were hashed with ({why})"
    )]
    Mismatch {
        field: &'static str,
        why: &'static str,
    },
    #[error("writing the credential key to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl KeyError {
    /// Whether an operator must act (the file, the setting): a restart
    /// alone cannot help.
    pub fn needs_operator(&self) -> bool {
        !matches!(self, KeyError::Store(_))
    }
}

/// The credential key for `store`, from `source`; moves a key the store
/// holds out of it. Fsyncs what it writes.
pub fn resolve(source: &KeySource, store: &Store) -> Result<[u8; 32], KeyError> {
    let legacy = store.legacy_credential_key()?;
    let (key, field) = match source {
        KeySource::Given(key) => (*key, KEY_FIELD),
        KeySource::File(path) => (from_file(path, legacy, store)?, FILE_FIELD),
    };
    if legacy.is_some_and(|legacy| legacy != key) {
        return Err(KeyError::Mismatch {
            field,
            why: "the store still holds the key an earlier hub hashed them with, and it differs",
        });
    }
    let check = secrets::key_check(&key);
    let recorded = store.credential_key_check()?;
    if recorded.as_ref().is_some_and(|recorded| *recorded != check) {
        if store.holds_credentials()? {
            return Err(KeyError::Mismatch {
                field,
                why: "its check value differs from the one the store recorded",
            });
        }
        tracing::warn!(
            "a credential key other than the last start's; no credential was stored under that one"
        );
    }
    if legacy.is_some() || recorded.as_ref() != Some(&check) {
        store.settle_credential_key(&check)?;
    }
    Ok(key)
}

/// The key in `path`; when the file is missing, `legacy` or (for a store
/// without credentials) a new key, written there first.
fn from_file(path: &Path, legacy: Option<[u8; 32]>, store: &Store) -> Result<[u8; 32], KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            secrets::decode_key(&text).ok_or_else(|| KeyError::Malformed {
                path: path.to_path_buf(),
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = match legacy {
                Some(key) => key,
                None if store.holds_credentials()? => {
                    return Err(KeyError::Missing {
                        path: path.to_path_buf(),
                    })
                }
                None => rand::random(),
            };
            let text = format!("{}\n", hex::encode(key));
            data_dir::write_file(path, text.as_bytes(), data_dir::SECRET_MODE).map_err(
                |source| KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
            let moved = legacy.is_some();
            tracing::info!(path = %path.display(), moved_out_of_the_store = moved, "credential key written");
            Ok(key)
        }
        Err(source) => Err(KeyError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    if mode.is_ok_and(|mode| mode & 0o077 != 0) {
        tracing::warn!(path = %path.display(), "the credential key file is readable by other users; make it 0600 or 0400");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Resident;
    use std::os::unix::fs::PermissionsExt;

    fn resident_with(key: &[u8; 32], credential: &str) -> Resident {
        Resident {
            id: "r1".into(),
            credential_hash: secrets::credential_hash(key, credential),
            group: None,
            blocked: false,
            created_at: 0,
        }
    }

    /// Every file of the store, read whole.
    fn store_bytes(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                match entry.path().is_dir() {
                    true => todo.push(entry.path()),
                    false => bytes.extend(std::fs::read(entry.path()).unwrap()),
                }
            }
        }
        bytes
    }

    #[test]
    fn an_earlier_hubs_key_moves_out_of_the_store_and_its_credentials_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let old_key = [42u8; 32];
        {
            let store = Store::open(&db).unwrap();
            store.put_legacy_credential_key(&old_key).unwrap();
            let added = store
                .add_resident(&resident_with(&old_key, "qr-1"))
                .unwrap();
            assert_eq!(added, Ok(()));
        }
        let file = dir.path().join("credential.key");
        let source = KeySource::File(file.clone());
        let store = Store::reopen(&db);
        assert_eq!(resolve(&source, &store).unwrap(), old_key);
        assert_eq!(store.legacy_credential_key().unwrap(), None);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{}\n", hex::encode(old_key))
        );
        // Again from the file: the same key, and the resident found by it.
        let key = resolve(&source, &store).unwrap();
        let hash = secrets::credential_hash(&key, "qr-1");
        let found = store.resident_by_credential(&hash).unwrap();
        assert_eq!(found.map(|r| r.id).as_deref(), Some("r1"));
        drop(store);
        // After a reopen the key is gone from the store (as a value: sled's
        // older log pages may hold its bytes until rewritten, see
        // docs/security.md).
        let store = Store::reopen(&db);
        assert_eq!(store.legacy_credential_key().unwrap(), None);
    }

    #[test]
    fn a_store_with_credentials_is_refused_without_its_key_or_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let file = dir.path().join("credential.key");
        let source = KeySource::File(file.clone());
        let key = resolve(&source, &store).unwrap();
        let added = store.add_resident(&resident_with(&key, "qr-1")).unwrap();
        assert_eq!(added, Ok(()));
        std::fs::remove_file(&file).unwrap();
        let error = resolve(&source, &store).unwrap_err();
        assert!(matches!(error, KeyError::Missing { .. }), "{error}");
        assert!(
            error.to_string().contains("`credential_key_file`"),
            "{error}"
        );
        assert!(error.needs_operator());
        assert!(!file.exists(), "no new key was made");
        let other = KeySource::Given([1; 32]);
        let error = resolve(&other, &store).unwrap_err();
        assert!(error.to_string().contains("`credential_key`"), "{error}");
        std::fs::write(&file, "not a key\n").unwrap();
        let error = resolve(&source, &store).unwrap_err();
        assert!(matches!(error, KeyError::Malformed { .. }), "{error}");
        std::fs::write(&file, hex::encode(key)).unwrap();
        assert_eq!(resolve(&source, &store).unwrap(), key);
        assert_eq!(resolve(&KeySource::Given(key), &store).unwrap(), key);
    }

    #[test]
    fn a_store_without_credentials_gets_a_new_key_in_its_file_and_never_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open(&db).unwrap();
        let file = dir.path().join("credential.key");
        let key = resolve(&KeySource::File(file.clone()), &store).unwrap();
        assert_eq!(store.legacy_credential_key().unwrap(), None);
        store.flush().unwrap();
        drop(store);
        let bytes = store_bytes(&db);
        let hex_key = hex::encode(key);
        assert!(
            !bytes.windows(32).any(|w| w == key),
            "the key's bytes are in the store"
        );
        assert!(
            !bytes.windows(64).any(|w| w == hex_key.as_bytes()),
            "the key's hex is in the store"
        );
        // Another key for a store without credentials: accepted.
        let store = Store::open(&db).unwrap();
        assert_eq!(
            resolve(&KeySource::Given([9; 32]), &store).unwrap(),
            [9; 32]
        );
    }
}
