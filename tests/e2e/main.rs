//! End-to-end tests: one test binary (faster to link), real hub processes,
//! real MQTT clients over real sockets. See `tests/src/lib.rs` for helpers.

mod bad_input;
mod bench;
mod devices;
mod isolation;
mod lifecycle;
mod resilience;
