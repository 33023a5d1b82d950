//! Yizhan hub: one process per neighbourhood service center.
//!
//! `Hub::start` opens the store, loads the CA, starts rumqttd's router,
//! the ingest thread, the device edge and the HTTP API, each long-lived part
//! under the `supervise::Supervisor`; `Hub::run_until` waits for the
//! shutdown future or a component going down, stops ingest (which writes
//! twins and fsyncs) and returns. See ARCHITECTURE.md for the map.

// The modules by layer, bottom to top; each imports only from its own
// layer or below (ARCHITECTURE.md draws them, docs/internals.md in full;
// the test in `layers.rs` keeps them so).

// Support: no domain knowledge.
pub mod clock;
pub mod data_dir;
pub mod metrics;
pub mod pki;
pub mod secrets;
pub mod supervise;
// Records: the stored types.
pub mod records;
// Store: sled.
pub mod store;
// Settings: the configuration parsed once.
pub mod settings;
// Rules: pure decisions.
pub mod access;
pub mod authorise;
pub mod counting;
pub mod hours;
pub mod input;
pub mod interlock;
pub mod schedule;
// Services: threads and the state they own.
pub mod actions;
pub mod activity;
pub mod bookings;
pub mod broker;
pub mod commands;
pub mod commit;
pub mod credential_key;
pub mod gauges;
pub mod ingest;
pub mod occupancy;
pub mod retention;
pub mod uplink;
pub mod usage;
pub mod visits;
pub mod webhook;
// Top: the edge and the API.
pub mod api;
pub mod edge;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod layers;

/// jemalloc, for every binary built on this library (the hub, its benches
/// and tests measure what ships). The booking desk, sled and the API
/// threads allocate and free across threads, where glibc's malloc showed
/// lock waits in profiles; mimalloc, tried first, held 287 KB per idle
/// device against jemalloc's 34 KB and glibc's 49 KB (2,000 mTLS devices,
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`): memory freed is given back to
/// the system within a second, by a background thread, instead of being
/// kept for ten (and then kept in RSS as MADV_FREE pages until the kernel
/// wants them). A district of 1,818 devices measured 248 MB right after
/// its devices connected with the defaults, 198 MB with these.
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_OPTIONS: &[u8] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bookings::{Bookings, ToIngest};
use crate::ingest::{Control, Inbox, Ingest, IngestError};
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::settings::{RoomRules, Rooms, Settings};
use crate::store::Store;
use crate::supervise::{component, Down, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Private(#[from] data_dir::DataDirError),
    #[error("credential key: {0}")]
    CredentialKey(#[from] credential_key::KeyError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("broker: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("device edge: {0}")]
    Edge(#[from] edge::EdgeError),
    #[error("ingest: {0}")]
    Ingest(#[from] IngestError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("thread: {0}")]
    Thread(std::io::Error),
    #[error("bookings: {0}")]
    Bookings(#[from] bookings::StartError),
    #[error("{0}")]
    Api(#[from] api::ServeError),
    #[error("{0}")]
    Supervise(#[from] supervise::SuperviseError),
    #[error("uplink: {0}")]
    Uplink(#[from] uplink::UplinkError),
    #[error("components down: {}", supervise::describe(.0))]
    ComponentsDown(Vec<Down>),
}

impl HubError {
    /// Whether the start was refused for something an operator must fix
    /// (the data dir's owner, the credential key): restarting cannot help,
    /// so `main` exits 2, as for an invalid configuration.
    pub fn needs_operator(&self) -> bool {
        match self {
            HubError::Private(_) => true,
            HubError::CredentialKey(error) => error.needs_operator(),
            _ => false,
        }
    }
}

/// A started hub.
pub struct Hub {
    api_addr: SocketAddr,
    device_addr: SocketAddr,
    store: Arc<Store>,
    supervisor: Supervisor,
    ingest: std::thread::JoinHandle<()>,
    desk: std::thread::JoinHandle<()>,
    /// The forwarder to the upstream, with `[uplink]`.
    uplink: Option<std::thread::JoinHandle<()>>,
}

impl Hub {
    /// Starts every part; returns once the ports are bound and ingest runs.
    pub async fn start(settings: Settings) -> Result<Hub, HubError> {
        data_dir::prepare(&settings.data_dir)?;
        let _ = std::fs::remove_file(settings.data_dir.join(ENDPOINTS_FILE));
        let metrics = Metrics::new();
        let mut store = Store::open(&settings.data_dir.join("db"))?;
        let uplink_wake = Arc::new(tokio::sync::Notify::new());
        let uplink_id = match &settings.uplink {
            Some(uplink) => Some(enable_uplink(&mut store, uplink, &metrics, &uplink_wake)?),
            None => None,
        };
        let store = Arc::new(store);
        let credential_key = credential_key::resolve(&settings.credential_key, &store)?;
        let epoch = store.next_boot_epoch()?;
        let admin_token_sha256 = resolve_admin_token(&settings, &store)?;
        let pki = Arc::new(Pki::load_or_create(&settings.data_dir)?);
        let identity = pki.server_identity(&settings.broker.server_names)?;
        let api_tls = match settings.http.tls {
            true => Some(api::tls_acceptor(&identity)?),
            false => None,
        };
        let live = store.live_devices()?;
        let census = Arc::new(gauges::Census::load(&live, metrics.clone()));
        let in_grace = in_grace(live, clock::unix_ms());
        census.hub_certificates(pki.ca_not_after_ms()?, identity.not_after_ms);
        metrics
            .webhook_outbox
            .set(i64::try_from(store.outbox_len()).unwrap_or(i64::MAX));
        let fault = supervise::FaultPlan::from_env()?;
        let supervisor = Supervisor::new(CancellationToken::new(), &metrics, fault);
        if let Some(fault) = supervisor.fault_point(supervise::fault_point::STORE_FLUSH) {
            store.inject_flush_fault(fault);
        }
        let stop = supervisor.stop_token();

        let broker = broker::start(&settings.broker)?;
        let window = broker::window::IngestWindow::new(settings.broker.ingest_window_bytes as u64);
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        let inbox = Arc::new(Inbox::new(control_tx, Arc::new(broker.waker)));
        let outbox = Arc::new(tokio::sync::Notify::new());
        let (bookings, desk) = Bookings::start(
            store.clone(),
            metrics.clone(),
            &settings,
            hand_over(inbox.clone()),
            outbox.clone(),
            &supervisor,
        )?;
        let rooms = rooms_with_stored(&settings, &store)?;
        let mut actions =
            actions::Actions::new(store.clone(), metrics.clone(), &settings, rooms.clone())?;
        actions.set_bookings(bookings.clone());
        let commit = commit::GroupCommit::start(store.clone(), broker.commit_link, &supervisor)
            .map_err(HubError::Thread)?;
        let feed = match (&settings.uplink, &uplink_id) {
            (Some(uplink), Some(id)) => {
                let feed = uplink::Feed::new(store.clone(), id.clone(), uplink);
                feed.offline_after_restart(epoch, clock::unix_ms())?;
                Some(feed)
            }
            _ => None,
        };
        let mut ingest = Ingest::new(
            store.clone(),
            metrics.clone(),
            settings.ingest.clone(),
            epoch,
            ingest::Wiring {
                credential_key,
                link_tx: broker.link_tx,
                control: control_rx,
                actions,
                commit,
                window: window.clone(),
                uplink: feed,
            },
        )?;
        ingest.subscribe()?;

        let ingest_stop = stop.clone();
        let link_rx = broker.link_rx;
        let ingest = supervisor
            .spawn_thread(component::INGEST, move || ingest.run(link_rx, ingest_stop))
            .map_err(HubError::Thread)?;

        if !settings.schedule.webhook_url.is_empty() {
            let deliver = webhook::deliver(
                store.clone(),
                metrics.clone(),
                settings.schedule.clone(),
                outbox,
                stop.clone(),
            );
            supervisor.spawn_task(component::WEBHOOK, deliver);
        }
        let uplink = match (&settings.uplink, uplink_id) {
            (Some(uplink), Some(client_id)) => {
                let downlink = uplink.downlink.clone().map(|downlink| {
                    uplink::Downlink::new(
                        store.clone(),
                        metrics.clone(),
                        downlink,
                        client_id.clone(),
                        {
                            let inbox = inbox.clone();
                            Box::new(move |record| inbox.send(Control::Command(record)))
                        },
                    )
                });
                let parts = uplink::Parts {
                    store: store.clone(),
                    metrics: metrics.clone(),
                    settings: uplink.clone(),
                    client_id,
                    wake: uplink_wake,
                    stop: stop.clone(),
                    downlink,
                };
                Some(uplink::start(parts, &supervisor)?)
            }
            _ => None,
        };
        supervisor.spawn_task(
            component::GAUGES,
            gauges::refresh_store_size(store.clone(), metrics.clone(), stop.clone()),
        );
        let (audit, audit_queue) = api::AuditLog::channel();
        supervisor.spawn_task(
            component::AUDIT,
            api::keep_audit(store.clone(), audit_queue, stop.clone()),
        );
        supervisor.spawn_task(
            component::RETENTION,
            retention::keep(
                store.clone(),
                metrics.clone(),
                settings.retention.clone(),
                stop.clone(),
            ),
        );
        let (edge, acceptors) = edge::Edge::start(
            &settings.broker,
            edge::EdgeParts {
                identity,
                links: broker.links,
                window,
                store: store.clone(),
                metrics: metrics.clone(),
                shutdown: stop.clone(),
            },
        )
        .await?;
        for (name, acceptor) in acceptors {
            supervisor.spawn_task(name, acceptor);
        }
        for (device, until) in in_grace {
            edge.end_superseded_at(&device, until);
        }
        let edge = Arc::new(edge);
        let device_addr = edge.device_addr();

        let state = Arc::new(api::ApiState {
            store: store.clone(),
            pki,
            metrics,
            ingest: inbox,
            bookings,
            credential_key,
            edge,
            keys: Arc::new(api::Keys::new(
                &admin_token_sha256,
                Some(settings.api.metrics_token_sha256.as_str()).filter(|hash| !hash.is_empty()),
                &store.api_tokens()?,
            )),
            audit,
            request_timeout: settings.http.request_timeout,
            supervisor: supervisor.clone(),
            epoch,
            device_cert_days: settings.broker.device_cert_days,
            renewal_grace_secs: settings.broker.certificate_renewal_grace_secs,
            ready: AtomicBool::new(false),
            calendar: settings.calendar,
            rooms: std::sync::RwLock::new(rooms),
            census,
        });
        let api_listener = bind(settings.api.listen).await?;
        let api_addr = local_addr(&api_listener, settings.api.listen)?;
        let app = api::router(state.clone());
        let api_supervisor = supervisor.clone();
        let stop_api = async move { api_supervisor.api_may_stop().await };
        let serve = api::serve(api_listener, app, api_tls, settings.http.clone(), stop_api);
        supervisor.spawn_task(component::API, serve);
        write_endpoints(&settings.data_dir, api_addr, device_addr)?;
        state.ready.store(true, Ordering::Relaxed);
        tracing::info!(%api_addr, %device_addr, epoch, "hub started");
        Ok(Hub {
            api_addr,
            device_addr,
            store,
            supervisor,
            ingest,
            desk,
            uplink,
        })
    }

    /// The bound HTTP API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The bound public device (mTLS) address.
    pub fn device_addr(&self) -> SocketAddr {
        self.device_addr
    }

    /// Cancelled once the hub stops, whether asked to or because a
    /// component went down (`main` bounds the shutdown from then on).
    pub fn stopping(&self) -> CancellationToken {
        self.supervisor.stop_token()
    }

    /// Runs until `shutdown` resolves or a component goes down, then stops
    /// ingest (which writes the twins and fsyncs), the tasks and the desk,
    /// and flushes the store last. Fails naming every component that went
    /// down.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), HubError> {
        let stopping = self.supervisor.stop_token();
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down"),
            _ = stopping.cancelled() => tracing::error!("a component is down; shutting down"),
        }
        self.supervisor.stop();
        join(self.ingest).await;
        self.supervisor.wait_tasks(Duration::from_secs(2)).await;
        join(self.desk).await;
        if let Some(uplink) = self.uplink {
            join(uplink).await;
        }
        let flushed = flush_last(self.store).await;
        let down = self.supervisor.down();
        if down.is_empty() {
            return flushed;
        }
        if let Err(error) = flushed {
            tracing::error!(%error, "the last flush failed");
        }
        Err(HubError::ComponentsDown(down))
    }
}

/// The file's rooms, then those set through the API (checked when the API
/// took them: one that no longer passes is logged and left out).
fn rooms_with_stored(settings: &Settings, store: &Store) -> Result<Rooms, HubError> {
    let mut rooms = settings.rooms.clone();
    for entry in store.stored_rooms()? {
        match RoomRules::from_config(&entry) {
            Ok(rules) => rooms.put(&entry.center, &entry.id, rules),
            Err((field, reason)) => {
                tracing::error!(center = %entry.center, room = %entry.id, field, reason, "a stored room is invalid; left out")
            }
        }
    }
    Ok(rooms)
}

/// The devices whose previous certificate still connects, and until when.
fn in_grace(live: Vec<records::DeviceRecord>, now_ms: u64) -> Vec<(String, u64)> {
    live.into_iter()
        .filter_map(|record| {
            let until = record.previous_certificate?.accepted_until;
            (until > now_ms).then_some((record.id, until))
        })
        .collect()
}

/// Joins a supervised thread (its panic was caught and reported already).
async fn join(thread: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// Fsyncs what is left, on a blocking thread: the last step of a shutdown.
async fn flush_last(store: Arc<Store>) -> Result<(), HubError> {
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(flushed) => flushed.map(drop).map_err(HubError::from),
        Err(error) => Err(HubError::Thread(std::io::Error::other(error))),
    }
}

/// Runs a hub until `shutdown` resolves.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), HubError> {
    Hub::start(settings).await?.run_until(shutdown).await
}

/// Turns the store's uplink outbox on; returns the hub's client id (the
/// configured one, else the hub's own).
fn enable_uplink(
    store: &mut Store,
    settings: &settings::UplinkSettings,
    metrics: &Metrics,
    wake: &Arc<tokio::sync::Notify>,
) -> Result<String, HubError> {
    let client_id = match &settings.client_id {
        Some(id) => id.clone(),
        None => store.hub_id()?,
    };
    let config = uplink::outbox_config(client_id.clone(), settings, metrics, wake.clone());
    store.enable_uplink(config)?;
    let (messages, bytes) = store.uplink_backlog();
    tracing::info!(%client_id, messages, bytes, "uplink outbox open");
    Ok(client_id)
}

/// How the booking desk hands its commands and events to ingest: through
/// ingest's inbox, like the API's.
fn hand_over(inbox: Arc<Inbox>) -> bookings::HandOver {
    Box::new(move |message| {
        inbox.send(match message {
            ToIngest::Command(record) => Control::Command(record),
            ToIngest::PlaceEnded { device } => Control::PlaceEnded(device),
        })
    })
}

/// The admin token's hash: from the settings (the file, or
/// `YIZHAN_ADMIN_TOKEN[_FILE]`), else the one generated at an earlier start,
/// else a new one printed once.
fn resolve_admin_token(settings: &Settings, store: &Store) -> Result<String, HubError> {
    if !settings.api.admin_token_sha256.is_empty() {
        return Ok(settings.api.admin_token_sha256.to_lowercase());
    }
    if let Some(hash) = store.admin_token_hash()? {
        return Ok(hash);
    }
    let token = secrets::random_secret();
    let hash = secrets::sha256_hex(&token);
    store.set_admin_token_hash(&hash)?;
    eprintln!("Generated admin token (shown once, only its hash is kept): {token}");
    Ok(hash)
}

/// File in the data dir naming the bound addresses, for tools and tests that
/// start the hub on port 0.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

fn write_endpoints(
    dir: &std::path::Path,
    api: SocketAddr,
    mqtt: SocketAddr,
) -> Result<(), HubError> {
    let body = serde_json::json!({ "api": api.to_string(), "mqtt": mqtt.to_string() });
    let (path, tmp) = (dir.join(ENDPOINTS_FILE), dir.join("endpoints.json.tmp"));
    let io = |source| HubError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, body.to_string()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, HubError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, HubError> {
    listener
        .local_addr()
        .map_err(|source| HubError::Bind { addr, source })
}
