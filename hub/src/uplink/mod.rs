//! The uplink: forwarding to the district's MQTT broker with
//! store-and-forward (docs/upstream.md).
//!
//! - the outbox is the store's (`store::uplink`): events, bookings and
//!   visits get their entries in the same sled transaction as themselves;
//! - `feed`: what ingest adds itself (twin changes, telemetry windows);
//! - `downlink`: district commands taken on the same session (signed,
//!   checked, recorded, handed to ingest) and refusals reported;
//! - `forward`: the forwarder, a thread of its own (`uplink` component)
//!   running a current-thread runtime for the MQTT client, so its outbox
//!   reads and removals never run on the device runtime. It runs at nice
//!   10 and paces its publishes (`max_messages_per_second`, default
//!   10,000), so a drain takes the CPU ingest leaves. Measured on 2 busy
//!   cores with mosquitto beside it: a 310,000-message backlog beside
//!   1,000 readings/s drained unpaced at nice 0 in 5.5 s with ingest p99
//!   raised from ≤ 0.8 to ≤ 6.4 ms (≤ 3.2 ms at nice 10); paced at
//!   10,000/s in 35 s with p99 ≤ 0.8 ms against ≤ 0.4 ms before.
//!
//! An entry leaves the outbox only after the upstream's PUBACK for it.

pub mod downlink;
pub mod feed;
pub mod forward;

use std::sync::Arc;
use std::thread::JoinHandle;

use rumqttc::TlsConfiguration;
use tokio::sync::Notify;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_util::sync::CancellationToken;

pub use downlink::Downlink;
pub use feed::Feed;
use forward::Forwarder;

use crate::metrics::Metrics;
use crate::settings::{UplinkSettings, UplinkTls};
use crate::store::{OutboxConfig, OutboxMeters, Store, StoreError};
use crate::supervise::{component, InjectedFault, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    #[error("the uplink's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Fault(#[from] InjectedFault),
}

/// How the store keeps the outbox for `settings`, waking `wake` on writes.
pub fn outbox_config(
    hub: String,
    settings: &UplinkSettings,
    metrics: &Metrics,
    wake: Arc<Notify>,
) -> OutboxConfig {
    OutboxConfig {
        hub,
        max_bytes: settings.max_backlog_bytes,
        wake: Box::new(move || wake.notify_one()),
        meters: OutboxMeters::of(metrics),
    }
}

/// What the forwarder thread needs.
pub struct Parts {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub settings: UplinkSettings,
    pub client_id: String,
    pub wake: Arc<Notify>,
    pub stop: CancellationToken,
    /// District commands, when a key is trusted (`[uplink.downlink]`).
    pub downlink: Option<Downlink>,
}

/// Starts the forwarder thread under the supervisor. Fails (before
/// anything starts) on TLS files rustls refuses.
pub fn start(parts: Parts, supervisor: &Supervisor) -> Result<JoinHandle<()>, UplinkError> {
    let tls = parts.settings.tls.as_ref().map(client_tls).transpose()?;
    let forwarder = Forwarder { parts, tls };
    supervisor
        .spawn_thread(component::UPLINK, move || run(forwarder))
        .map_err(UplinkError::Runtime)
}

fn run(forwarder: Forwarder) -> Result<(), UplinkError> {
    yield_to_ingest();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UplinkError::Runtime)?;
    runtime.block_on(forwarder.run())
}

/// The nice value of the forwarder's thread.
const FORWARDER_NICE: i32 = 10;

/// Lowers the calling thread's priority (Linux: a thread's nice value is
/// its own), so the devices' messages come first on a busy machine.
fn yield_to_ingest() {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), FORWARDER_NICE)
    {
        tracing::warn!(%error, "the forwarder keeps its priority");
    }
}

/// The client side of `mqtts://`: the CA file's certificates as roots, and
/// the client certificate if one is given.
fn client_tls(files: &UplinkTls) -> Result<TlsConfiguration, UplinkError> {
    let tls = |error: &dyn std::fmt::Display| UplinkError::Tls(error.to_string());
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&files.ca_pem) {
        roots
            .add(certificate.map_err(|e| tls(&e))?)
            .map_err(|e| tls(&e))?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(&e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls(&e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e: rustls::Error| tls(&e))?
        }
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}
