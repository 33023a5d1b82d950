//! The Yizhan district service: a durable consumer of every center's
//! uplink (docs/upstream.md) that keeps the district's view — per center
//! and local day the visits, events, alarms and bookings; each hub's and
//! each center's last status; the alarms — in its own store, exactly once
//! by message id across its restarts, and serves it over HTTP.
//!
//! - `settings`: the file and `DISTRICT_*` variables, parsed once
//! - `message`: a hub's message decoded and checked at the boundary
//! - `records`: what is stored; `store`: sled (the only code touching it)
//! - `tally`: how a message changes the view (pure rules over a batch)
//! - `intake`: a batch applied, committed and fsynced
//! - `source`: NATS (JetStream durable consumer) or MQTT (persistent
//!   session); acknowledges only what `intake` made durable
//! - `downlink`: commands to devices, signed and published through the
//!   hubs' upstream; `keygen`: its key pair
//! - `api`: the HTTP API; `metrics`: Prometheus

pub mod api;
pub mod downlink;
pub mod intake;
pub mod keygen;
pub mod message;
pub mod metrics;
pub mod records;
pub mod settings;
pub mod source;
pub mod store;
pub mod tally;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::intake::{Intake, Upkeep};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// Unix ms now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum DistrictError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the API's address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data dir: {0}")]
    DataDir(std::io::Error),
    #[error("the source stopped: {0}")]
    Source(String),
    #[error("the API server: {0}")]
    Api(std::io::Error),
}

/// A running district service.
pub struct District {
    pub api_addr: SocketAddr,
    store: Arc<Store>,
    stop: CancellationToken,
    source: JoinHandle<Result<(), source::SourceError>>,
    api: JoinHandle<std::io::Result<()>>,
    /// The command publisher, with `[downlink]`.
    publisher: Option<JoinHandle<()>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl District {
    /// Opens the store, binds the API (writing `endpoints.json` in the
    /// data dir), and starts consuming.
    pub async fn start(settings: Settings) -> Result<District, DistrictError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(DistrictError::DataDir)?;
        let store = Arc::new(Store::open(&settings.data_dir)?);
        let metrics = Metrics::new();
        count_at_start(&store, &metrics)?;
        let stop = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let intake = Intake {
            store: store.clone(),
            metrics: metrics.clone(),
            calendar: settings.calendar,
            upkeep: Upkeep {
                dedupe_ms: settings.dedupe.as_millis() as u64,
                max_alarms: settings.max_alarms,
                max_rejected: settings.max_rejected,
            },
            upkept_at: Arc::new(AtomicU64::new(0)),
        };
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| DistrictError::Bind {
                addr: settings.listen,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(DistrictError::Api)?;
        let (commands, publisher) = match settings.downlink.clone() {
            Some(downlink) => {
                let (commands, task) =
                    downlink::start(downlink, store.clone(), metrics.clone(), stop.clone());
                (Some(Arc::new(commands)), Some(task))
            }
            None => (None, None),
        };
        let state = Arc::new(ApiState {
            store: store.clone(),
            metrics,
            calendar: settings.calendar,
            token_sha256: settings.token_sha256.clone(),
            metrics_token_sha256: settings.metrics_token_sha256.clone(),
            ready: ready.clone(),
            failed: failed.clone(),
            commands,
        });
        let api = tokio::spawn({
            let stop = stop.clone();
            async move {
                axum::serve(listener, api::router(state))
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        });
        let source = tokio::spawn(source::run(source::Parts {
            settings: settings.source.clone(),
            intake,
            ready,
            stop: stop.clone(),
        }));
        write_endpoints(&settings, api_addr)?;
        tracing::info!(api = %api_addr, "district service started");
        Ok(District {
            api_addr,
            store,
            stop,
            source,
            api,
            publisher,
            failed,
        })
    }

    /// Runs until `shutdown` completes or the source fails; then stops the
    /// API and flushes the store last.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), DistrictError> {
        let District {
            store,
            stop,
            mut source,
            api,
            publisher,
            failed,
            ..
        } = self;
        let outcome = tokio::select! {
            _ = shutdown => None,
            ended = &mut source => Some(ended),
        };
        let result = match outcome {
            None => {
                stop.cancel();
                let _ = source.await;
                Ok(())
            }
            Some(ended) => {
                let reason = match ended {
                    Ok(Ok(())) => "the source ended".to_string(),
                    Ok(Err(error)) => error.to_string(),
                    Err(error) => error.to_string(),
                };
                tracing::error!(%reason, "stopping");
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                stop.cancel();
                Err(DistrictError::Source(reason))
            }
        };
        if let Some(publisher) = publisher {
            let _ = publisher.await;
        }
        match api.await {
            Ok(Err(error)) => tracing::warn!(%error, "the API server"),
            Err(error) => tracing::warn!(%error, "the API task"),
            Ok(Ok(())) => {}
        }
        store.flush()?;
        result
    }
}

/// The gauges kept from the store's contents.
fn count_at_start(store: &Store, metrics: &Metrics) -> Result<(), StoreError> {
    metrics.hubs.set(store.statuses(true)?.len() as i64);
    metrics.centers.set(store.statuses(false)?.len() as i64);
    metrics
        .store_bytes
        .set(i64::try_from(store.size_on_disk()).unwrap_or(i64::MAX));
    Ok(())
}

/// `endpoints.json`: where the API listens (tests, scripts).
fn write_endpoints(settings: &Settings, api: SocketAddr) -> Result<(), DistrictError> {
    let text = serde_json::json!({ "api": api.to_string() }).to_string();
    let path = settings.data_dir.join("endpoints.json");
    let partial = settings.data_dir.join("endpoints.json.partial");
    std::fs::write(&partial, text).map_err(DistrictError::DataDir)?;
    std::fs::rename(partial, path).map_err(DistrictError::DataDir)
}
