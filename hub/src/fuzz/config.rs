//! Fuzz target for the config loader: a file (the printed default, the
//! schedule tests' hub) mutated, written and loaded as the hub loads it
//! (`Settings::load`: TOML, `YIZHAN_*` overrides, then every value parsed).
//! Never a panic; a refusal is a `ConfigError`; what loads is in range.

use proptest::prelude::*;

use super::{corpus, mutated, run, Bytes};
use crate::settings::resource::{MAX_CAPACITY, MAX_HORIZON_DAYS};
use crate::settings::Settings;

#[test]
fn config_files_never_panic_the_loader_and_what_loads_is_in_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hub.toml");
    let texts = mutated(corpus("config")).prop_map(Bytes);
    run("config", texts, |Bytes(text)| {
        std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Ok(settings) = Settings::load(Some(&path)) else {
            return Ok(false);
        };
        for resource in &settings.resources {
            let config = &resource.config;
            prop_assert!((1..=MAX_CAPACITY).contains(&config.capacity));
            prop_assert!((1..=MAX_HORIZON_DAYS).contains(&config.horizon_days));
            let held: u32 = resource.held.iter().map(|(_, n)| n).sum();
            prop_assert!(held <= config.capacity);
        }
        prop_assert!(settings.schedule.grace_minutes <= 366 * 24 * 60);
        Ok(true)
    });
}
