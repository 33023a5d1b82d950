//! `district keygen`: a new Ed25519 key pair for the downlink. The private
//! key (its 32-byte seed, 64 hex digits) goes into a new file created with
//! mode 0600 (an existing file is never overwritten); the public half is
//! returned for printing, with its key id.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use protocol::upstream::{key_id, SigningKey};
use rand::RngCore;

/// The public half of a new key, as the hubs' configuration takes it.
pub struct PublicKey {
    pub key_id: String,
    /// 64 hex digits.
    pub hex: String,
}

/// Makes a key from the system's randomness and writes its private half
/// to `path` (which must not exist), mode 0600.
pub fn write_new_key(path: &Path) -> std::io::Result<PublicKey> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{}", hex::encode(seed))?;
    file.sync_all()?;
    let public = key.verifying_key();
    Ok(PublicKey {
        key_id: key_id(&public),
        hex: hex::encode(public.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_key_is_written_for_its_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("district.key");
        let public = write_new_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = crate::settings::read_signing_key(&path).unwrap();
        assert_eq!(key_id(&key.verifying_key()), public.key_id);
        assert!(write_new_key(&path).is_err(), "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = crate::settings::read_signing_key(&path).unwrap_err();
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
    }
}
