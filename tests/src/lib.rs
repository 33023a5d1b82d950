//! Helpers for the end-to-end tests, one module per helper:
//!
//! - `hub_process`: a real hub process on free loopback ports with a
//!   temporary data dir (killed by PID however the test ends) and an API
//!   client
//! - `test_device`: an MQTT device client over mTLS with issued
//!   certificates (rumqttc), and telemetry payloads
//! - `credentials`: a device's credentials as files, for `mosquitto_pub`
//! - `device_sim_run`: a `device-sim run` against a hub, with its ground truth
//! - `district_process`: a real district service process and its API
//! - `http`: reading the services' answers
//! - `https`: one HTTPS request to a hub serving its API over TLS
//! - `promtool`: `promtool check metrics` on a scrape
//! - `nats_cluster`: a cluster of Debian `nats-server` nodes (JetStream,
//!   MQTT) on `deploy/nats/yizhan-nats.conf`
//! - `silent_cut`: a TCP relay that goes dark
//! - `tcp_proxy`: a TCP relay that goes dark and comes back (an uplink's
//!   network)
//! - `tls_files`: a throwaway CA, server and client certificate as PEM files
//! - `upstream`: a persistent-session subscriber of the hub's upstream
//!   broker, and its messages grouped by id
//! - `webhook_sink`: an HTTP server receiving webhook POSTs
//! - `wait`: polling until something holds, the real clock
//! - `stacks`: three client stacks through one interface; `raw_mqtt`:
//!   packets written by hand
//! - `prometheus`: a real Prometheus server (Debian's package) on a free
//!   loopback port, killed by PID however the test ends, and its query API
//! - `promql`: the metric names a PromQL expression selects
//! - `ops_files`: the dashboards, alert rules and their promtool tests as
//!   the tests read them, and the validation tools
//!
//! mosquitto (`Mosquitto`) comes from device-sim's bench, which starts it
//! the same way.

pub mod credentials;
pub mod device_sim_run;
pub mod district_process;
pub mod http;
pub mod https;
pub mod hub_process;
pub mod nats_cluster;
pub mod ops_files;
pub mod prometheus;
pub mod promql;
pub mod promtool;
pub mod raw_mqtt;
pub mod silent_cut;
pub mod stacks;
pub mod tcp_proxy;
pub mod test_device;
pub mod tls_files;
pub mod upstream;
pub mod wait;
pub mod webhook_sink;

pub use credentials::{mosquitto_pub, write_credentials, CredentialFiles};
pub use device_sim::bench::processes::{free_port, Mosquitto};
pub use device_sim::bench::received::sum_metric;
pub use device_sim_run::{run_device_sim, run_device_sim_at, SimRun};
pub use district_process::{DistrictProcess, DISTRICT_TOKEN};
pub use https::https_request;
pub use hub_process::{
    fill_template, listed_routes, workspace_binary, HubApi, HubOptions, HubProcess, ListedRoute,
    SIMULATED_CLOCKS,
};
pub use nats_cluster::NatsCluster;
pub use silent_cut::SilentCut;
pub use tcp_proxy::TcpProxy;
pub use test_device::{telemetry, DeviceEvent, DeviceOptions, TestDevice};
pub use tls_files::TlsFiles;
pub use upstream::{Received, SubscriberOptions, UpstreamMessage, UpstreamSubscriber};
pub use wait::{eventually, now_ms};
pub use webhook_sink::WebhookSink;

/// Held for its whole run by each test that loads the machine most (a
/// district of hubs, a simulated week, thousands of devices, the crash
/// loop): two of them at once on a 2-core runner starved each other into
/// timeouts; so they run one at a time, beside the light tests.
pub fn heavy() -> Heavy {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Heavy {
        _turn: HEAVY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    }
}

/// The turn of a heavy test (see `heavy`), given back when dropped.
#[must_use]
pub struct Heavy {
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// The admin token every test hub takes (`YIZHAN_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// The scrape-only token of hubs started with `HubOptions::token_files`.
pub const METRICS_TOKEN: &str = "e2e-metrics-token-0123456789";
