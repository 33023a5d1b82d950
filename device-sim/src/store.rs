//! The credential directory: one `<id>.json` per device (the hub's
//! `Provisioned` answer as is), readable by the owner only.
//!
//! The hub shows a device's key and password once, so this directory is the
//! only copy; later runs reuse it.

use std::io;
use std::path::{Path, PathBuf};

use protocol::api::Provisioned;
use protocol::is_valid_device_id;
use tokio::io::AsyncWriteExt;

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a credentials file: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: holds credentials of `{found}`, not `{expected}`")]
    WrongDevice {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("`{0}` is not a valid device id")]
    InvalidId(String),
}

/// A directory of device credentials.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CredentialStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `id`'s file. Ids are ASCII alphanumeric, so they cannot
    /// escape the directory.
    pub fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !is_valid_device_id(id) {
            return Err(StoreError::InvalidId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// The stored credentials of `id`, `None` if there is no file.
    pub async fn load(&self, id: &str) -> Result<Option<Provisioned>, StoreError> {
        let path = self.path(id)?;
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let creds: Provisioned =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path: path.clone(),
                source,
            })?;
        if creds.id != id {
            return Err(StoreError::WrongDevice {
                path,
                expected: id.to_owned(),
                found: creds.id,
            });
        }
        Ok(Some(creds))
    }

    /// Writes `creds` to `<dir>/<id>.json` with mode 0600, creating the
    /// directory (0700) if needed. Written to a temporary file and renamed,
    /// so a crash never leaves half a key behind.
    pub async fn save(&self, creds: &Provisioned) -> Result<PathBuf, StoreError> {
        let path = self.path(&creds.id)?;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        create_private_dir(&self.dir)
            .await
            .map_err(io_err(&self.dir))?;
        // invariant: serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec_pretty(creds).expect("credentials serialize");
        let tmp = self.dir.join(format!(".{}.json.tmp", creds.id));
        write_private(&tmp, &json).await.map_err(io_err(&tmp))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io_err(&path))?;
        Ok(path)
    }
}

async fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

async fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(bytes).await?;
    file.sync_all().await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, unique per test.
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "device-sim-test-{name}-{}-{}",
            std::process::id(),
            crate::unix_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    pub(crate) fn creds(id: &str) -> Provisioned {
        Provisioned {
            id: id.into(),
            certificate: "-----BEGIN CERTIFICATE-----\n".into(),
            private_key: "-----BEGIN PRIVATE KEY-----\n".into(),
            ca_certificate: "-----BEGIN CERTIFICATE-----\n".into(),
            mqtt_username: id.into(),
            mqtt_password: "secret".into(),
            not_after: 4_102_444_800_000,
        }
    }

    #[tokio::test]
    async fn saved_credentials_load_back_and_are_private() {
        let dir = temp_dir("store");
        let store = CredentialStore::new(dir.join("nested"));
        assert!(store.load("c01piano01").await.unwrap().is_none());
        let path = store.save(&creds("c01piano01")).await.unwrap();
        assert_eq!(path, dir.join("nested/c01piano01.json"));
        let back = store.load("c01piano01").await.unwrap().unwrap();
        assert_eq!(back.mqtt_password, "secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_for_another_device_or_a_bad_id_is_refused() {
        let dir = temp_dir("store-wrong");
        let store = CredentialStore::new(&dir);
        let path = store.save(&creds("b")).await.unwrap();
        std::fs::rename(&path, dir.join("a.json")).unwrap();
        assert!(matches!(
            store.load("a").await,
            Err(StoreError::WrongDevice { found, .. }) if found == "b"
        ));
        assert!(matches!(
            store.load("../etc").await,
            Err(StoreError::InvalidId(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
