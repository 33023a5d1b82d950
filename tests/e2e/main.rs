//! End-to-end tests: one test binary (faster to link), real hub processes,
//! real MQTT clients over real sockets. See `tests/src/lib.rs` for helpers.

mod access;
mod bad_input;
mod bench;
mod commands;
mod conformance;
mod counting;
mod demo;
mod devices;
mod district;
mod edge_load;
mod fleet;
mod interlock;
mod isolation;
mod lifecycle;
mod metrics_series;
mod operations;
mod pianos;
mod resilience;
mod schedule;
mod supervision;
mod uplink;
