//! Fuzz targets (issue 13, item 9): property-based, with proptest, run as
//! ordinary tests (so `./scripts/test.sh` and CI run them). Each target
//! feeds one decoder arbitrary input, and the real messages of its seed
//! corpus (`hub/fuzz/corpus/<target>/`) mutated: bits flipped, bytes set to
//! JSON or MQTT punctuation, inserted, deleted, truncated, chunks repeated,
//! seeds spliced, numbers swapped for extremes. No input may panic; each
//! is accepted, or refused with the decoder's typed error, and what is
//! accepted must hold up (round trips, ranges, a credential never kept in
//! clear). A failure prints the shrunk input and the seed to replay it.
//!
//! - `device`: telemetry, events, births and command acks (`input`,
//!   `protocol`, the ingest decoders, the command service's `on_ack`)
//! - `mqtt`: the edge's packet front (`edge::framing`) and CONNECT
//!   handling (`edge::connect`, `policy`, the tools listener's client ids)
//! - `config`: the config loader (`Settings::load`)
//!
//! Budget per target: `FUZZ_CASES` cases (default 3,000) within
//! `FUZZ_SECS` seconds (default 10, at most 30); a run of all of them
//! takes about ten seconds in a debug build. `FUZZ_SEED` replays a run.
//! (Not `YIZHAN_*`: the config loader reads those as configuration.) Coverage-guided fuzzing (cargo-afl) needs its own toolchain
//! install on every machine and CI run; proptest runs on stable as it is.

mod config;
mod device;
mod mqtt;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const DEFAULT_CASES: u32 = 3_000;
/// Cases run between two looks at the clock.
const CHUNK: u32 = 100;
const DEFAULT_SECS: u64 = 10;
const MAX_SECS: u64 = 30;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// What a target did with one input: whether its decoder took it (the
/// run reports how many did, to show the inputs reach past the decoder).
pub type Outcome = Result<bool, TestCaseError>;

/// Runs `check` on inputs from `strategy` within the budget; panics with
/// the shrunk failing input and the seed if one fails or panics.
pub fn run<S>(target: &str, strategy: S, check: impl Fn(S::Value) -> Outcome)
where
    S: Strategy,
    S::Value: Debug,
{
    let seed = env_number("FUZZ_SEED").unwrap_or_else(rand::random);
    let cases = env_number("FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let secs = env_number("FUZZ_SECS").map_or(DEFAULT_SECS, |s| s.min(MAX_SECS));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let config = Config {
        failure_persistence: None,
        max_shrink_time: 20_000,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut parent = TestRunner::new_with_rng(config.clone(), rng);
    let (ran, taken) = (AtomicU32::new(0), AtomicU32::new(0));
    let started = Instant::now();
    // In chunks, so the deadline also stops the generating of inputs.
    while ran.load(Ordering::Relaxed) < cases && Instant::now() < deadline {
        let chunk = CHUNK.min(cases - ran.load(Ordering::Relaxed));
        let config = Config {
            cases: chunk,
            ..config.clone()
        };
        let mut runner = TestRunner::new_with_rng(config, parent.new_rng());
        let result = runner.run(&strategy, |input| {
            ran.fetch_add(1, Ordering::Relaxed);
            if check(input)? {
                taken.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        if let Err(failure) = result {
            panic!("fuzz target {target} failed (replay with FUZZ_SEED={seed}): {failure}");
        }
    }
    let (ran, taken) = (ran.load(Ordering::Relaxed), taken.load(Ordering::Relaxed));
    eprintln!(
        "fuzz {target}: {ran} cases ({taken} past the decoder) in {:?}, seed {seed}",
        started.elapsed()
    );
}

/// The seed inputs of `target`, checked in under `hub/fuzz/corpus/`.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    // invariant: the corpus is checked in next to this crate.
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().flat_map(std::fs::read).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// An input of bytes, shown as escaped text when a case fails.
#[derive(Clone)]
pub struct Bytes(pub Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Numbers at the edges of every type a decoder reads numbers into.
const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "0.5",
    "1e309",
    "-1e309",
    "1e-400",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "253402300800000",
    "NaN",
];

/// Bytes that mean something to JSON, TOML, UTF-8 or MQTT.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0xff, 0x7f, 0x80, 0xc0, 0xe2, b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b'=',
    b'\n', b'#', b'+', b'/',
];

/// One change to a seed. Positions are `Index`es, scaled to the input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// A piece of another seed (`seed`, its start) put in at `at`.
    Splice {
        seed: Index,
        from: Index,
        at: Index,
    },
    /// A run of digits replaced by an extreme number.
    Number(Index, &'static str),
    /// A chunk repeated, for deep nesting and long fields.
    Repeat(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        1 => (any::<Index>(), select(INTERESTING_BYTES)).prop_map(|(at, b)| Edit::Set(at, b)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Edit::Insert(at, b)),
        1 => (any::<Index>(), 1..16usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(seed, from, at)| Edit::Splice { seed, from, at }),
        3 => (any::<Index>(), select(EXTREME_NUMBERS)).prop_map(|(at, n)| Edit::Number(at, n)),
        1 => (any::<Index>(), 1..64usize).prop_map(|(at, n)| Edit::Repeat(at, n)),
    ]
}

/// A position in `bytes` (0 when empty).
fn position(at: &Index, bytes: &[u8]) -> usize {
    match bytes.len() {
        0 => 0,
        len => at.index(len),
    }
}

impl Edit {
    fn apply(&self, bytes: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let at = |index: &Index| position(index, bytes);
        match self {
            Edit::Flip(i, bit) if !bytes.is_empty() => {
                let i = at(i);
                bytes[i] ^= 1 << bit;
            }
            Edit::Set(i, byte) if !bytes.is_empty() => {
                let i = at(i);
                bytes[i] = *byte;
            }
            Edit::Insert(i, new) => {
                let i = at(i);
                bytes.splice(i..i, new.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(i);
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(i);
                bytes.truncate(i);
            }
            Edit::Splice { seed, from, at: to } => {
                let other = &seeds[seed.index(seeds.len())];
                let start = position(from, other);
                let piece = &other[start..(start + 32).min(other.len())];
                let i = at(to);
                bytes.splice(i..i, piece.iter().copied());
            }
            Edit::Number(i, number) => replace_number(bytes, i, number),
            Edit::Repeat(i, times) if !bytes.is_empty() => {
                let i = at(i);
                let chunk = bytes[i..(i + 8).min(bytes.len())].to_vec();
                for _ in 0..*times {
                    bytes.splice(i..i, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
}

/// Replaces one run of digits (picked by `which`) with `number`, or puts
/// `number` in at that position when there is none.
fn replace_number(bytes: &mut Vec<u8>, which: &Index, number: &str) {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    match runs.len() {
        0 => {
            let at = position(which, bytes);
            bytes.splice(at..at, number.bytes());
        }
        n => {
            let run = runs[which.index(n)].clone();
            bytes.splice(run, number.bytes());
        }
    }
}

/// A seed of `seeds` with a few edits.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let seeds = Arc::new(seeds);
    (any::<Index>(), vec(edit(), 1..6)).prop_map(move |(pick, edits)| {
        let mut bytes = seeds[pick.index(seeds.len())].clone();
        for edit in &edits {
            edit.apply(&mut bytes, &seeds);
        }
        bytes
    })
}

/// Arbitrary bytes, and (mostly) the seeds mutated.
pub fn bytes_like(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..512),
        4 => mutated(seeds),
    ]
    .prop_map(Bytes)
}

/// A JSON value: scalars at the edges, strings, nested arrays and objects.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(EXTREME_NUMBERS).prop_map(|n| serde_json::from_str(n).unwrap_or(Value::Null)),
        "\\PC{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object mostly of the fields a message of this kind has
/// (`fields`), with values of any type: reaches past the decoder's shape
/// checks into its range checks.
pub fn json_object(fields: &'static [&'static str]) -> impl Strategy<Value = Bytes> {
    let key = prop_oneof![
        4 => select(fields).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ];
    proptest::collection::btree_map(key, json_value(), 0..8).prop_map(|map| {
        let object: serde_json::Map<String, serde_json::Value> = map.into_iter().collect();
        Bytes(serde_json::Value::Object(object).to_string().into_bytes())
    })
}

/// A change to one field of a JSON seed.
#[derive(Debug, Clone)]
enum FieldEdit {
    /// A field's value replaced.
    Set(Index, serde_json::Value),
    Remove(Index),
    /// A field (of `fields`) added or replaced.
    Put(&'static str, serde_json::Value),
}

/// The JSON object seeds with fields replaced by values of any type,
/// removed or added: valid JSON of nearly the right shape, which gets past
/// the JSON decoder to the checks of ranges and meaning behind it.
pub fn json_mutated(
    seeds: Vec<Vec<u8>>,
    fields: &'static [&'static str],
) -> impl Strategy<Value = Bytes> {
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = seeds
        .iter()
        .filter_map(|seed| serde_json::from_slice(seed).ok())
        .collect();
    assert!(!objects.is_empty(), "no JSON object among the seeds");
    let objects = Arc::new(objects);
    let field_edit = prop_oneof![
        (any::<Index>(), json_value()).prop_map(|(at, v)| FieldEdit::Set(at, v)),
        any::<Index>().prop_map(FieldEdit::Remove),
        (select(fields), json_value()).prop_map(|(k, v)| FieldEdit::Put(k, v)),
    ];
    (any::<Index>(), vec(field_edit, 1..4)).prop_map(move |(pick, edits)| {
        let mut object = objects[pick.index(objects.len())].clone();
        for edit in edits {
            let keys: Vec<String> = object.keys().cloned().collect();
            let key = |at: &Index| (!keys.is_empty()).then(|| keys[at.index(keys.len())].clone());
            match edit {
                FieldEdit::Set(at, value) => {
                    if let Some(key) = key(&at) {
                        object.insert(key, value);
                    }
                }
                FieldEdit::Remove(at) => {
                    if let Some(key) = key(&at) {
                        object.remove(&key);
                    }
                }
                FieldEdit::Put(key, value) => {
                    object.insert(key.to_string(), value);
                }
            }
        }
        Bytes(serde_json::Value::Object(object).to_string().into_bytes())
    })
}

#[test]
fn edits_stay_within_the_input() {
    let seeds = vec![b"{\"ts\":12,\"seq\":3}".to_vec(), Vec::new()];
    let mut runner = TestRunner::deterministic();
    for _ in 0..2_000 {
        let tree = (vec(edit(), 1..6), any::<Index>())
            .new_tree(&mut runner)
            .expect("a value");
        let (edits, pick) = tree.current();
        let mut bytes = seeds[pick.index(seeds.len())].clone();
        for edit in &edits {
            edit.apply(&mut bytes, &seeds);
        }
    }
    let any_index = any::<Index>().new_tree(&mut runner).expect("a value");
    let mut number = b"{\"ts\":12}".to_vec();
    replace_number(&mut number, &any_index.current(), "-1");
    assert_eq!(number, b"{\"ts\":-1}");
}
