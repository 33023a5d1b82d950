//! Secrets at rest: generated tokens and device passwords are stored as
//! SHA-256 (they carry 256 random bits, so a fast hash is enough); passwords
//! that people choose (plain-listener users) as Argon2 PHC strings; resident
//! credentials (QR codes, cards) as HMAC-SHA256 under a per-hub random key,
//! kept outside the database (`credential_key`), so a copied database does
//! not reveal them and a gate's lookup stays a single fast hash.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A new random secret: 32 bytes, hex.
pub fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// SHA-256 of a token, and its constant-time check (shared with the
/// district service).
pub use protocol::secret::{matches_sha256, sha256_hex};

/// Whether `a` equals `b`, in a time that depends on their lengths only
/// (not on where they first differ).
pub fn same_in_constant_time(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// HMAC-SHA256 (hex) of a resident credential under the hub's key.
pub fn credential_hash(key: &[u8; 32], credential: &str) -> String {
    // invariant: HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(credential.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A credential key as its file holds it: 64 hex digits (what `openssl
/// rand -hex 32` prints), surrounding whitespace ignored.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// A key's check value, kept in the store to tell whether a key given at
/// start is the one the stored credentials were hashed with: the keyed
/// hash of a fixed text, which says nothing of the key itself.
pub fn key_check(key: &[u8; 32]) -> String {
    credential_hash(key, "yizhan credential key check\0v1")
}

/// What the hub's log says for a resident: `r-` and the first 48 bits of
/// the keyed hash of their id (under the credential key, apart from
/// credentials by a prefix), so an operator can follow one resident
/// through the log without the log naming them, and a copied log cannot
/// be matched against a list of ids without the key.
pub fn resident_tag(key: &[u8; 32], resident: &str) -> String {
    let hash = credential_hash(key, &format!("resident id\0{resident}"));
    format!("r-{}", &hash[..12])
}

/// Argon2id PHC string for a human-chosen password.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_the_right_secret() {
        let secret = random_secret();
        let hash = sha256_hex(&secret);
        assert!(matches_sha256(&secret, &hash));
        assert!(!matches_sha256("other", &hash));
        assert!(!matches_sha256(&secret, ""));
        assert!(same_in_constant_time(&hash, &hash.clone()));
        assert!(!same_in_constant_time(&hash, &hash[1..]));
        let phc = hash_password("hunter2").unwrap();
        assert!(verify_password("hunter2", &phc));
        assert!(!verify_password("hunter3", &phc));
        assert!(!verify_password("hunter2", "not a phc string"));
    }

    #[test]
    fn credential_hashes_depend_on_the_key() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(credential_hash(&a, "qr-1"), credential_hash(&a, "qr-1"));
        assert_ne!(credential_hash(&a, "qr-1"), credential_hash(&a, "qr-2"));
        assert_ne!(credential_hash(&a, "qr-1"), credential_hash(&b, "qr-1"));
        assert_eq!(credential_hash(&a, "qr-1").len(), 64);
        assert_ne!(key_check(&a), key_check(&b));
        assert_eq!(key_check(&a), key_check(&[1u8; 32]));
    }

    #[test]
    fn a_key_file_holds_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(decode_key(&format!(" {hex}\n")), Some([0xab; 32]));
        assert_eq!(decode_key(&hex[2..]), None);
        assert_eq!(decode_key(&format!("{hex}00")), None);
        assert_eq!(decode_key(&"zz".repeat(32)), None);
        assert_eq!(decode_key(""), None);
    }
}
