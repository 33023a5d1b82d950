//! End-to-end tests: one test binary (faster to link), real hub processes,
//! real MQTT clients over real sockets. See `tests/src/lib.rs` for helpers.

mod access;
mod bad_input;
mod bench;
mod booking_faults;
mod bookings_district;
mod certificates;
mod commands;
mod conformance;
mod counting;
mod crash_loop;
mod dashboards;
mod demo;
mod deploy;
mod devices;
mod district;
mod downlink;
mod edge_load;
mod fleet;
mod http_limits;
mod input_ranges;
mod interlock;
mod isolation;
mod lifecycle;
mod metrics_series;
mod openapi;
mod operations;
mod pianos;
mod privacy;
mod prometheus_live;
mod resilience;
mod retention;
mod roles;
mod schedule;
mod supervision;
mod uplink;
