//! Key layouts and values: `first\0second` pairs, time-ordered keys, JSON
//! records and big-endian counters.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// `first \0 second`: keys of per-device (and per-center) records, so a
/// prefix scan finds one owner's records.
pub(super) fn pair_key(first: &str, second: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + 1 + second.len());
    key.extend_from_slice(first.as_bytes());
    key.push(0);
    key.extend_from_slice(second.as_bytes());
    key
}

/// `owner \0 at(16 hex) \0 id`: records of an owner in time order.
pub(super) fn time_key(owner: &str, at: u64, id: &str) -> Vec<u8> {
    pair_key(owner, &format!("{at:016x}\0{id}"))
}

/// Entries of `owner` keyed by `time_key` with times in `[from, to)`.
pub(super) fn time_range<T: DeserializeOwned>(
    tree: &sled::Tree,
    owner: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, String, T)>, StoreError> {
    let (start, end) = (time_key(owner, from, ""), time_key(owner, to, ""));
    let prefix = owner.len() + 1;
    tree.range(start..end)
        .map(|entry| {
            let (key, value) = entry?;
            let bad = || StoreError::BadKey(format!("{key:?}"));
            let rest = key.get(prefix..).ok_or_else(bad)?;
            let at = std::str::from_utf8(rest.get(..16).ok_or_else(bad)?)
                .ok()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(bad)?;
            let id = String::from_utf8_lossy(rest.get(17..).unwrap_or_default()).into_owned();
            Ok((at, id, decode(&key, &value)?))
        })
        .collect()
}

/// `first\0second` as text, to nest inside another key.
pub(super) fn pair_key_text(first: &str, second: &str) -> String {
    format!("{first}\0{second}")
}

pub(super) fn scan_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    tree.scan_prefix(prefix)
        .map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
        .collect()
}

/// One page of the records under `prefix`, in key order: at most `limit`
/// after the key `prefix + after` (from the first when `None`); and the
/// `after` of the next page (the last record's key past the prefix) when
/// more follow. Records inserted behind a walk are not met by it; none is
/// met twice.
pub(super) fn page_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Page<T>, StoreError> {
    let mut start = prefix.to_vec();
    if let Some(after) = after {
        start.extend_from_slice(after);
        start.push(0);
    }
    let mut page = Page {
        items: Vec::with_capacity(limit.min(1_024)),
        next: None,
    };
    let mut last: Option<sled::IVec> = None;
    for entry in tree.range(start..).take(limit.saturating_add(1)) {
        let (key, value) = entry?;
        if !key.starts_with(prefix) {
            break;
        }
        if page.items.len() == limit {
            page.next = last.map(|key| key[prefix.len()..].to_vec());
            break;
        }
        page.items.push(decode(&key, &value)?);
        last = Some(key);
    }
    Ok(page)
}

/// A page of records and where the next one starts.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key (past its owner's prefix) of the last record, to pass as
    /// `after`; `None` on the last page.
    pub next: Option<Vec<u8>>,
}

pub(super) fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // invariant: our records are plain structs with string keys; they
    // always serialize.
    serde_json::to_vec(value).expect("record serializes")
}

pub(super) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

pub(super) fn get_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?
        .map(|value| decode(key.as_bytes(), &value))
        .transpose()
}
