//! What the hub and the district service run on alike, written once: the
//! configuration's loading and its error (`config`), the HTTP request
//! timing (`http`), the log's filter and format (`log`), the shutdown
//! signal (`signal`) and the exit statuses (`exit`). No domain knowledge;
//! `protocol` stays free of axum and figment.

pub mod config;
pub mod exit;
pub mod http;
pub mod log;
pub mod signal;
