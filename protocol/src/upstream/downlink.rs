//! The downlink (docs/upstream.md, "Downlink"): a district operator's
//! command to one device, signed with Ed25519 by the district service, and
//! what the hub sends back — the command's outcome, or why it refused it.
//!
//! The signature covers `signed_bytes`, an explicit binary encoding of
//! every field but `sig` (never re-serialised JSON): `args` travels as the
//! text of a JSON object and is signed as those exact bytes. A key is
//! named by its **key id**, the first 8 bytes of the SHA-256 of its 32
//! public bytes in hex, so a hub's configuration can be checked against the
//! key it names.

use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

use super::TOPIC_ROOT;
use crate::api::{command_args, is_command_op};

/// What `signed_bytes` starts with: the contract and version, so a
/// signature over anything else never verifies as a command.
pub const SIGNED_PREFIX: &[u8] = b"yizhan/v1/cmd\0";

/// Command ids: 16 to 64 ASCII letters, digits, `-` or `_`.
pub const MIN_COMMAND_ID_LEN: usize = 16;
pub const MAX_COMMAND_ID_LEN: usize = 64;

/// `yz/v1/{center}/{device}/cmd`: a district operator's command. Unknown
/// fields are refused: a field outside the signature could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMessage {
    /// Unique per command (the nonce): the hub runs it at most once. The
    /// district makes it from the issue time and 128 random bits
    /// (`command_id`), so ids sort by issue time.
    pub id: String,
    pub center: String,
    pub device: String,
    /// As the hub's command service takes it (`api::is_command_op`).
    pub op: String,
    /// The text of a JSON object (at most 4 KiB), signed as these bytes.
    pub args: String,
    /// Unix ms, the district's clock.
    pub issued_at: u64,
    /// Unix ms: never delivered after it.
    pub expires_at: u64,
    /// The signing key's id (`key_id`).
    pub key: String,
    /// The Ed25519 signature of `signed_bytes`, 128 hex digits.
    pub sig: String,
}

impl CommandMessage {
    /// The bytes signed: `SIGNED_PREFIX`, then `id`, `center`, `device`,
    /// `op`, `args`, `key`, each as its UTF-8 length (4 bytes big-endian)
    /// and bytes, then `issued_at` and `expires_at` (8 bytes big-endian
    /// each).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let texts = [
            &self.id,
            &self.center,
            &self.device,
            &self.op,
            &self.args,
            &self.key,
        ];
        let size = texts.iter().map(|t| 4 + t.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(SIGNED_PREFIX.len() + size + 16);
        bytes.extend_from_slice(SIGNED_PREFIX);
        for text in texts {
            // Every text is bounded far below 4 GiB by `check`; a longer one
            // would not verify anyway.
            let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(&self.issued_at.to_be_bytes());
        bytes.extend_from_slice(&self.expires_at.to_be_bytes());
        bytes
    }

    /// Sets `key` to `signer`'s id and `sig` to its signature.
    pub fn sign(mut self, signer: &SigningKey) -> CommandMessage {
        self.key = key_id(&signer.verifying_key());
        let signature = signer.sign(&self.signed_bytes());
        self.sig = hex::encode(signature.to_bytes());
        self
    }

    /// Whether `sig` is `key`'s signature of `signed_bytes` (strict
    /// verification: no malleable or small-order forms).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.sig) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        key.verify_strict(&self.signed_bytes(), &signature).is_ok()
    }

    /// Checks every field's shape (not the signature, not the times):
    /// the first bad one named.
    pub fn check(&self) -> Result<(), String> {
        if !is_command_id(&self.id) {
            return Err(format!(
                "`id`: {MIN_COMMAND_ID_LEN}-{MAX_COMMAND_ID_LEN} ASCII letters, digits, '-' or '_'"
            ));
        }
        if !is_center(&self.center) {
            return Err("`center`: 1-64 ASCII letters, digits, '-' or '_'".into());
        }
        if !crate::is_valid_device_id(&self.device) {
            return Err("`device`: 1-48 ASCII letters or digits".into());
        }
        if !is_command_op(&self.op) {
            return Err("`op`: 1-32 lowercase ASCII letters, digits or '_'".into());
        }
        self.args_value()?;
        if self.key.is_empty() || self.key.len() > 64 {
            return Err("`key`: a key id".into());
        }
        match self.sig.len() == 128 && self.sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            true => Ok(()),
            false => Err("`sig`: 128 hex digits".into()),
        }
    }

    /// `args` as the command service takes it; `Err` says why not.
    pub fn args_value(&self) -> Result<serde_json::Value, String> {
        let value: serde_json::Value = serde_json::from_str(&self.args)
            .map_err(|_| "`args`: the text of a JSON object".to_string())?;
        if !value.is_object() {
            return Err("`args`: the text of a JSON object".into());
        }
        command_args(value)
    }

    /// Its topic.
    pub fn topic(&self) -> String {
        command_topic(&self.center, &self.device)
    }
}

/// `yz/v1/{center}/{device}/cmd`.
pub fn command_topic(center: &str, device: &str) -> String {
    format!("{TOPIC_ROOT}/{center}/{device}/cmd")
}

/// The filter a hub subscribes to for `center`'s commands.
pub fn command_filter(center: &str) -> String {
    format!("{TOPIC_ROOT}/{center}/+/cmd")
}

/// `yz/v1/{center}/{device}/cmd/outcome`.
pub fn outcome_topic(center: &str, device: &str) -> String {
    format!("{TOPIC_ROOT}/{center}/{device}/cmd/outcome")
}

/// `yz/v1/{center}/cmd_refused`.
pub fn refused_topic(center: &str) -> String {
    format!("{TOPIC_ROOT}/{center}/cmd_refused")
}

/// A center id: 1-64 ASCII letters, digits, `-` or `_` (so also a topic
/// level and a NATS subject token).
pub fn is_center(center: &str) -> bool {
    (1..=64).contains(&center.len())
        && center
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn is_command_id(id: &str) -> bool {
    (MIN_COMMAND_ID_LEN..=MAX_COMMAND_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A command id issued at `issued_at` (unix ms) with 128 random bits: 13
/// hex digits of the time, 32 of the randomness.
pub fn command_id(issued_at: u64, random: u128) -> String {
    format!("{issued_at:013x}{random:032x}")
}

/// A key's id: the first 8 bytes of SHA-256 over its 32 bytes, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// Why a key does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected 64 hex digits (32 bytes)")]
    NotHex,
    #[error("not an Ed25519 public key")]
    NotAPoint,
}

fn key_bytes(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?;
    bytes.try_into().map_err(|_| KeyError::NotHex)
}

/// A public key written as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&key_bytes(text)?).map_err(|_| KeyError::NotAPoint)
}

/// A private key written as the 64 hex digits of its seed.
pub fn parse_signing_key(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&key_bytes(text)?))
}

/// Why a hub refused a command: the `reason` label of
/// `yizhan_downlink_refused_total` and of `cmd_refused` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a command of this shape, or a topic other than the payload's.
    Malformed,
    /// Signed by no key the hub trusts, or the signature does not verify.
    Forged,
    /// Past its `expires_at`.
    Expired,
    /// Living longer than the hub's `max_lifetime_secs`, ending before it
    /// starts, or issued in the future (beyond the clock skew allowed).
    Lifetime,
    /// A center this hub does not serve, or a device of another center.
    WrongCenter,
    /// A device the hub does not know, or revoked.
    UnknownDevice,
    /// An id the hub has taken before.
    Replayed,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::Malformed,
        Refusal::Forged,
        Refusal::Expired,
        Refusal::Lifetime,
        Refusal::WrongCenter,
        Refusal::UnknownDevice,
        Refusal::Replayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Forged => "forged",
            Refusal::Expired => "expired",
            Refusal::Lifetime => "lifetime",
            Refusal::WrongCenter => "wrong_center",
            Refusal::UnknownDevice => "unknown_device",
            Refusal::Replayed => "replayed",
        }
    }

    pub fn parse(text: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// `yz/v1/{center}/{device}/cmd/outcome`: how a district command ended on
/// the device. Its `id` is `{hub}/co/{device}/{command}` (`outcome_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcomeMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    pub device: String,
    /// The command's id.
    pub command: String,
    pub op: String,
    /// `acked`, `failed` (the device answered `ok: false`) or `expired`.
    pub status: String,
    /// The device's `error` with `failed`.
    #[serde(default)]
    pub error: Option<String>,
    /// Times the hub published it to the device.
    pub attempts: u32,
    /// Unix ms of the outcome (hub clock).
    pub at: u64,
}

pub fn outcome_id(hub: &str, device: &str, command: &str) -> String {
    format!("{hub}/co/{device}/{command}")
}

/// `yz/v1/{center}/cmd_refused`: a message on a command topic the hub
/// refused. `command` and `device` are there when the payload named them.
/// Its `id` is `{hub}/cr/{at}/{n}` (`n` unique in the hub).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRefusedMessage {
    pub id: String,
    pub hub: String,
    pub center: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    /// `Refusal::as_str`.
    pub reason: String,
    pub at: u64,
}

pub fn refused_id(hub: &str, at: u64, n: u64) -> String {
    format!("{hub}/cr/{at}/{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn command() -> CommandMessage {
        CommandMessage {
            id: command_id(1_800_000_000_000, 7),
            center: "center01".into(),
            device: "piano1".into(),
            op: "unlock".into(),
            args: r#"{"minutes":30}"#.into(),
            issued_at: 1_800_000_000_000,
            expires_at: 1_800_000_060_000,
            key: String::new(),
            sig: String::new(),
        }
        .sign(&signer(1))
    }

    #[test]
    fn the_signed_bytes_are_the_documented_encoding() {
        let message = command();
        let mut expect = b"yizhan/v1/cmd\0".to_vec();
        for text in [
            message.id.as_str(),
            "center01",
            "piano1",
            "unlock",
            r#"{"minutes":30}"#,
            message.key.as_str(),
        ] {
            expect.extend_from_slice(&(text.len() as u32).to_be_bytes());
            expect.extend_from_slice(text.as_bytes());
        }
        expect.extend_from_slice(&1_800_000_000_000u64.to_be_bytes());
        expect.extend_from_slice(&1_800_000_060_000u64.to_be_bytes());
        assert_eq!(message.signed_bytes(), expect);
        assert_eq!(message.id, "001a3185c500000000000000000000000000000000007");
        assert_eq!(message.key, key_id(&signer(1).verifying_key()));
        assert_eq!(message.key.len(), 16);
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_every_field_is_covered() {
        let good = command();
        let key = signer(1).verifying_key();
        assert!(good.verify(&key));
        assert!(!good.verify(&signer(2).verifying_key()), "another key");
        let changes: [fn(&mut CommandMessage); 9] = [
            |m| m.id.push('0'),
            |m| m.center = "center02".into(),
            |m| m.device = "piano2".into(),
            |m| m.op = "lock".into(),
            |m| m.args = r#"{"minutes":31}"#.into(),
            |m| m.issued_at += 1,
            |m| m.expires_at += 1,
            |m| m.key = "0000000000000000".into(),
            |m| m.sig.replace_range(0..2, "00"),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut changed = good.clone();
            change(&mut changed);
            assert_ne!(changed, good);
            assert!(!changed.verify(&key), "change {n} still verifies");
        }
        // Moving bytes between fields changes the encoding (lengths).
        let mut shifted = good.clone();
        shifted.center = "center0".into();
        shifted.device = "1piano1".into();
        assert_ne!(shifted.signed_bytes(), good.signed_bytes());
        let mut not_hex = good.clone();
        not_hex.sig = "zz".repeat(64);
        assert!(!not_hex.verify(&key));
    }

    #[test]
    fn shapes_are_checked_field_by_field() {
        assert_eq!(command().check(), Ok(()));
        let check = |change: fn(&mut CommandMessage), field: &str| {
            let mut message = command();
            change(&mut message);
            let error = message.check().expect_err(field);
            assert!(error.contains(field), "{error} should name {field}");
        };
        check(|m| m.id = "short".into(), "`id`");
        check(|m| m.id = "x".repeat(65), "`id`");
        check(|m| m.id = format!("{}/x", "a".repeat(20)), "`id`");
        check(|m| m.center = "a/b".into(), "`center`");
        check(|m| m.device = "p-1".into(), "`device`");
        check(|m| m.op = "Unlock".into(), "`op`");
        check(|m| m.args = "[1]".into(), "`args`");
        check(|m| m.args = "{".into(), "`args`");
        check(
            |m| m.args = format!(r#"{{"x":"{}"}}"#, "y".repeat(5000)),
            "`args`",
        );
        check(|m| m.key = String::new(), "`key`");
        check(|m| m.sig = "ab".into(), "`sig`");
        let unknown = r#"{"id":"x","center":"c","device":"d","op":"o","args":"{}",
            "issued_at":1,"expires_at":2,"key":"k","sig":"s","extra":1}"#;
        assert!(serde_json::from_str::<CommandMessage>(unknown).is_err());
    }

    #[test]
    fn keys_parse_from_hex_and_name_themselves() {
        let key = signer(3).verifying_key();
        let text = hex::encode(key.as_bytes());
        assert_eq!(parse_public_key(&format!("{text}\n")), Ok(key));
        assert_eq!(parse_public_key("abcd"), Err(KeyError::NotHex));
        assert_eq!(parse_public_key(&"zz".repeat(32)), Err(KeyError::NotHex));
        let seed = hex::encode([3u8; 32]);
        assert_eq!(parse_signing_key(&seed).map(|k| k.verifying_key()), Ok(key));
        assert_ne!(key_id(&key), key_id(&signer(4).verifying_key()));
        for reason in Refusal::ALL {
            assert_eq!(Refusal::parse(reason.as_str()), Some(reason));
        }
    }
}
