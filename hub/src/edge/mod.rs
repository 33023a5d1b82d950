//! The device edge: the hub's own MQTT 3.1.1 front in front of rumqttd's
//! router. It owns every client socket: accept, TLS, CONNECT checks,
//! keepalive, flow control, limits, wills, takeovers and revocations. Each
//! session is a router link whose tenant is the device id, so the router
//! still confines a device to `/tenants/D/` and keeps routing,
//! subscriptions, retained messages and QoS 1/2 state.
//!
//! - `accept`: accept loops, socket options, bounded concurrent handshakes
//! - `tls`: the device listener's TLS and the device a handshake names
//! - `connect`: CONNECT → checks → takeover → link → CONNACK
//! - `auth`: who may connect on each listener
//! - `session`: one session's loop, socket ⇄ link
//! - `policy`: what a session may publish and subscribe to
//! - `flow`: per-connection rate limits (the ingest window is
//!   `broker::window`'s)
//! - `framing`: packets off and onto the socket with idle-free buffers
//! - `registry`: live sessions by client id

pub mod accept;
pub mod auth;
pub mod connect;
pub mod flow;
pub mod framing;
pub mod policy;
pub mod registry;
pub mod session;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::broker::window::IngestWindow;
use crate::broker::LinkFactory;
use crate::clock::unix_ms;
use crate::metrics::Metrics;
use crate::pki::ServerIdentity;
use crate::records::Standing;
use crate::settings::BrokerConfig;
use crate::store::Store;
use crate::supervise::component;
use accept::{HandshakeGate, Security};
use auth::ToolUsers;
use registry::{Kick, Registry};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Per-connection limits, the same code for both listeners.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_packet_bytes: usize,
    pub max_subscriptions: usize,
    /// 0 = no rate limit.
    pub messages_per_second: u32,
    pub burst: u32,
    /// Throttled without pause this long: disconnected (0 = never).
    pub flood_after: Duration,
}

impl Limits {
    fn from_config(config: &BrokerConfig) -> Limits {
        let limits = &config.limits;
        Limits {
            max_packet_bytes: config.max_packet_bytes,
            max_subscriptions: limits.max_subscriptions,
            messages_per_second: limits.messages_per_second,
            burst: limits.burst,
            flood_after: Duration::from_secs(limits.flood_disconnect_secs),
        }
    }
}

/// What every session shares.
pub struct Shared {
    pub links: LinkFactory,
    pub registry: Arc<Registry>,
    pub window: Arc<IngestWindow>,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub limits: Limits,
    pub shutdown: CancellationToken,
}

/// One listener's name (the `listener` label) and its users.
pub struct Listener {
    pub name: &'static str,
    /// The tools listener's users; `None` on the device listener.
    pub tool_users: Option<Arc<ToolUsers>>,
}

/// An accept loop to run (and supervise) for the life of the hub.
pub type Acceptor = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What `Edge::start` needs besides the config.
pub struct EdgeParts {
    pub identity: ServerIdentity,
    pub links: LinkFactory,
    pub window: Arc<IngestWindow>,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

/// The running edge: its bound addresses and the sessions it serves.
pub struct Edge {
    shared: Arc<Shared>,
    device_addr: SocketAddr,
    tools_addr: Option<SocketAddr>,
}

impl Edge {
    /// Binds the listeners; the returned acceptors serve them once spawned.
    pub async fn start(
        config: &BrokerConfig,
        parts: EdgeParts,
    ) -> Result<(Edge, Vec<(&'static str, Acceptor)>), EdgeError> {
        let tls = TlsAcceptor::from(tls::server_config(&parts.identity)?);
        let shared = Arc::new(Shared {
            links: parts.links,
            registry: Arc::new(Registry::default()),
            window: parts.window,
            store: parts.store,
            metrics: parts.metrics,
            limits: Limits::from_config(config),
            shutdown: parts.shutdown,
        });
        let gate = Arc::new(HandshakeGate::new(
            config.max_handshakes,
            config.max_handshakes_per_ip,
            Duration::from_millis(config.handshake_timeout_ms),
        ));
        let devices = Listener {
            name: "devices",
            tool_users: None,
        };
        let (device_socket, device_addr) = bind(config.listen).await?;
        let mut acceptors: Vec<(&'static str, Acceptor)> = vec![(
            component::EDGE_DEVICES,
            Box::pin(accept::serve(
                device_socket,
                Security::DeviceTls(tls),
                shared.clone(),
                Arc::new(devices),
                gate.clone(),
            )),
        )];
        let mut tools_addr = None;
        if config.plain.enabled {
            let tools = Listener {
                name: "tools",
                tool_users: Some(Arc::new(ToolUsers::new(config))),
            };
            let (socket, addr) = bind(config.plain.listen).await?;
            tools_addr = Some(addr);
            acceptors.push((
                component::EDGE_TOOLS,
                Box::pin(accept::serve(
                    socket,
                    Security::Plain,
                    shared.clone(),
                    Arc::new(tools),
                    gate,
                )),
            ));
        }
        let edge = Edge {
            shared,
            device_addr,
            tools_addr,
        };
        Ok((edge, acceptors))
    }

    pub fn device_addr(&self) -> SocketAddr {
        self.device_addr
    }

    pub fn tools_addr(&self) -> Option<SocketAddr> {
        self.tools_addr
    }

    /// Closes a revoked device's session, if it has one.
    pub fn disconnect_device(&self, device_id: &str) -> bool {
        let key = auth::device_session_key(device_id);
        self.shared.registry.kick(&key, Kick::Revoked)
    }

    /// Ends `device`'s session at `deadline_ms` (unix ms) if it is then on
    /// a certificate the device's record no longer accepts: the end of a
    /// renewal's grace. Set at every renewal and, at start, for every device
    /// still within one (a session on the old certificate may have
    /// connected since); a timer ends with the hub. A session on the new
    /// certificate, or on none of the record's, is left alone (the latter
    /// cannot exist: it would have been refused).
    pub fn end_superseded_at(&self, device: &str, deadline_ms: u64) {
        let shared = self.shared.clone();
        let device = device.to_owned();
        tokio::spawn(async move {
            let wait = Duration::from_millis(deadline_ms.saturating_sub(unix_ms()));
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let (store, id) = (shared.store.clone(), device.clone());
            let record = match tokio::task::spawn_blocking(move || store.device(&id)).await {
                Ok(Ok(Some(record))) => record,
                // Gone: nothing to end (a revoke ends its session itself).
                Ok(Ok(None)) => return,
                Ok(Err(error)) => return tracing::warn!(%error, %device, "grace end not checked"),
                Err(error) => return tracing::warn!(%error, %device, "grace end not checked"),
            };
            // The timer may fire a little before the wall clock's deadline.
            let at = deadline_ms.max(unix_ms());
            let superseded = |certificate: Option<&str>| {
                certificate.is_some_and(|sha256| {
                    !matches!(
                        record.standing(sha256, at),
                        Standing::Current | Standing::InGrace(_)
                    )
                })
            };
            let key = auth::device_session_key(&device);
            if shared.registry.kick_if(&key, Kick::Superseded, superseded) {
                tracing::info!(%device, "session on a superseded certificate ended");
            }
        });
    }

    /// Sessions connected now.
    pub fn sessions(&self) -> usize {
        self.shared.registry.len()
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), EdgeError> {
    let io = |source| EdgeError::Bind { addr, source };
    let socket = TcpListener::bind(addr).await.map_err(io)?;
    let local = socket.local_addr().map_err(io)?;
    Ok((socket, local))
}
