//! The data directory is the hub's alone: created 0700, or tightened to
//! 0700 at every start when group or others could enter it (a log line
//! says so); a start that cannot make it so is refused. sled's files,
//! written under the process's umask, are then reachable by the hub's
//! user only. Secrets (the CA key, the credential key) are written as new
//! files of mode 0600 through `write_file`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The data dir's mode: its owner only.
pub const DIR_MODE: u32 = 0o700;

/// A secret file's mode.
pub const SECRET_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data dir {path} has mode {mode:04o} and cannot be made {DIR_MODE:04o} ({source}): \
         run the hub as the directory's owner, or point `data_dir` at a directory of its own"
    )]
    Loose {
        path: PathBuf,
        mode: u32,
        source: std::io::Error,
    },
}

/// Creates `dir` (and missing parents) 0700, or makes an existing one 0700
/// when group or others may enter it.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let io = |source| DataDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io)?;
    }
    let mode = fs::metadata(dir).map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(|source| {
        DataDirError::Loose {
            path: dir.to_path_buf(),
            mode,
            source,
        }
    })?;
    tracing::warn!(
        path = %dir.display(),
        was = format!("{mode:04o}"),
        "the data dir was open to other users; tightened to 0700"
    );
    Ok(())
}

/// Writes `bytes` to `path` through a new file of `mode` beside it,
/// fsynced, renamed into place, and the directory fsynced: a crash leaves
/// the old file or the new one, never part of one, and the mode is the
/// new file's own (a stale temporary file is removed first, since an
/// existing file keeps its mode).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_data_dir_is_created_or_tightened_to_0700() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b/data");
        prepare(&fresh).unwrap();
        assert_eq!(mode_of(&fresh), 0o700);
        let loose = root.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&loose).unwrap();
        assert_eq!(mode_of(&loose), 0o700);
        prepare(&loose).unwrap();
        assert_eq!(mode_of(&loose), 0o700);
    }

    #[test]
    fn a_secret_is_written_with_its_own_mode_over_a_stale_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let stale = dir.path().join("secret.tmp");
        fs::write(&stale, "stale").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&path, b"abc", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        assert_eq!(mode_of(&path), 0o600);
        assert!(!stale.exists());
        write_file(&path, b"def", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"def");
    }
}
