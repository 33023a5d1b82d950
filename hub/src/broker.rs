//! The embedded rumqttd broker, built from its parts: the router, the
//! in-process link the hub reads and publishes through, and three listeners.
//!
//! - **devices**: mTLS on loopback behind `tls_front` (the public port).
//!   `validate-tenant-prefix` confines a certificate with Organization `D`
//!   to `/tenants/D/`; the auth handler also requires client id = username
//!   = `D`, a live (unrevoked) device and its password.
//! - **control**: plain, loopback, a per-process secret. The hub uses it to
//!   cut a session off (a client with the session's id takes it over).
//! - **tools** (optional): plain, loopback, Argon2-hashed users; refuses the
//!   client ids of devices and of the hub, since plain clients have no tenant.
//!
//! A second in-process link (`Waker`) only publishes to `WAKE_TOPIC`, which
//! wakes the ingest thread from its wait on the first; a third publishes
//! event acks from the group-commit thread (`commit`).
//!
//! rumqttd has no stop API: its threads end with the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::v4::V4;
use rumqttd::{
    ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings, TlsConfig,
};

use protocol::Channel;

use crate::config::BrokerConfig;
use crate::metrics::Metrics;
use crate::pki::ServerTlsFiles;
use crate::secrets;
use crate::store::Store;

/// Client id of the in-process link. Plain clients may not use it (or any
/// id starting with `__`): taking it over would kill ingest.
pub const HUB_CLIENT_ID: &str = "__yizhan_hub";
/// Client id of the second in-process link, which only wakes ingest.
const WAKER_CLIENT_ID: &str = "__yizhan_waker";
/// Client id of the third in-process link, which publishes event acks once
/// their batch is durable (`commit`).
const COMMIT_CLIENT_ID: &str = "__yizhan_commit";
/// Topic the waker publishes to and ingest listens on. Devices cannot reach
/// it (they are confined to `/tenants/D/`); ingest never treats it as data.
pub const WAKE_TOPIC: &str = "/hub/wake";
const CONTROL_USER: &str = "__yizhan_control";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker link: {0}")]
    Link(Box<rumqttd::local::LinkError>),
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("starting listener thread: {0}")]
    Thread(std::io::Error),
}

impl From<rumqttd::local::LinkError> for BrokerError {
    fn from(error: rumqttd::local::LinkError) -> Self {
        BrokerError::Link(Box::new(error))
    }
}

/// A running broker: the link halves and the internal addresses.
pub struct Broker {
    pub link_tx: LinkTx,
    pub link_rx: LinkRx,
    /// rumqttd's own TLS listener (loopback); `tls_front` relays to it.
    pub device_tls: SocketAddr,
    pub control: ControlAccess,
    pub waker: Waker,
    /// The group-commit thread's link (publish only).
    pub commit_link: (LinkTx, LinkRx),
}

/// Wakes the ingest thread out of its wait on the link, so work handed to it
/// from outside (a command issued through the API, an alarm acknowledged)
/// starts at once instead of at its next idle timeout.
pub struct Waker {
    /// std Mutex: held only to publish, never across an await.
    tx: std::sync::Mutex<LinkTx>,
    /// Kept so the router keeps the link.
    _rx: LinkRx,
}

impl Waker {
    pub fn wake(&self) {
        let Ok(mut tx) = self.tx.lock() else {
            return;
        };
        if let Err(error) = tx.publish(WAKE_TOPIC, &b"1"[..]) {
            tracing::warn!(?error, "could not wake ingest");
        }
    }
}

/// Where and how the hub reaches its control listener.
#[derive(Clone)]
pub struct ControlAccess {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

/// Starts the router, the link and the listeners.
pub fn start(
    config: &BrokerConfig,
    tls: &ServerTlsFiles,
    store: Arc<Store>,
    metrics: &Metrics,
) -> Result<Broker, BrokerError> {
    let router_tx = Router::new(0, router_config(config)).spawn();
    // The link may publish to a topic nobody subscribed yet (a command to a
    // device that never connected): without dynamic filters the router
    // would disconnect it.
    let (link_tx, link_rx, _ack) = LinkBuilder::new(HUB_CLIENT_ID, router_tx.clone())
        .dynamic_filters(true)
        .build()?;
    let (waker_tx, waker_rx, _ack) = LinkBuilder::new(WAKER_CLIENT_ID, router_tx.clone())
        .dynamic_filters(true)
        .build()?;
    let waker = Waker {
        tx: std::sync::Mutex::new(waker_tx),
        _rx: waker_rx,
    };
    let (commit_tx, commit_rx, _ack) = LinkBuilder::new(COMMIT_CLIENT_ID, router_tx.clone())
        .dynamic_filters(true)
        .build()?;

    let device_tls = free_loopback_port()?;
    let mut devices = listener("devices", device_tls, config);
    devices.tls = Some(TlsConfig::Rustls {
        capath: Some(tls.ca.display().to_string()),
        certpath: tls.cert.display().to_string(),
        keypath: tls.key.display().to_string(),
    });
    devices.set_auth_handler(device_auth(store.clone(), metrics.clone()));

    let control = ControlAccess {
        addr: free_loopback_port()?,
        username: CONTROL_USER.into(),
        password: secrets::random_secret(),
    };
    let mut control_listener = listener("control", control.addr, config);
    control_listener.set_auth_handler(control_auth(control.clone()));

    let mut listeners = vec![devices, control_listener];
    if config.plain.enabled {
        let mut tools = listener("tools", config.plain.listen, config);
        tools.set_auth_handler(tools_auth(config, store, metrics.clone()));
        listeners.push(tools);
    }
    for settings in listeners {
        let (listen, router_tx) = (settings.listen, router_tx.clone());
        spawn_listener(listen, move || Server::new(settings, router_tx, V4))?;
    }
    Ok(Broker {
        link_tx,
        link_rx,
        device_tls,
        control,
        waker,
        commit_link: (commit_tx, commit_rx),
    })
}

fn router_config(config: &BrokerConfig) -> RouterConfig {
    RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        max_segment_size: config.segment_bytes,
        max_segment_count: config.segment_count,
        custom_segment: Some(downlink_segments()),
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// rumqttd keeps a log per filter and drops by size, not by consumption:
/// with the default size every device's `cmd`, `event/ack` and `error`
/// filter could hold megabytes. Downlink traffic per device is small and
/// read at once, so its logs are kept small (a device that falls behind
/// misses acks and resends; commands are retried until acknowledged).
fn downlink_segments() -> HashMap<String, rumqttd::SegmentConfig> {
    [Channel::Cmd, Channel::EventAck, Channel::Error]
        .into_iter()
        .map(|channel| {
            let segment = rumqttd::SegmentConfig {
                max_segment_size: DOWNLINK_SEGMENT_BYTES,
                max_segment_count: 2,
            };
            (channel.filter_all_devices(), segment)
        })
        .collect()
}

const DOWNLINK_SEGMENT_BYTES: usize = 16 * 1024;

fn listener(name: &str, listen: SocketAddr, config: &BrokerConfig) -> ServerSettings {
    ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: config.max_packet_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            // A device publishing outside the contract's topics is
            // disconnected instead of growing a new in-memory log.
            dynamic_filters: false,
        },
    }
}

/// Runs one listener on its own thread and current-thread runtime, as
/// rumqttd expects.
fn spawn_listener(
    listen: SocketAddr,
    make_server: impl FnOnce() -> Server<V4> + Send + 'static,
) -> Result<(), BrokerError> {
    let name = format!("mqtt-{}", listen.port());
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start a listener runtime");
                    return;
                }
            };
            let mut server = make_server();
            runtime.block_on(async move {
                if let Err(error) = server.start(LinkType::Remote).await {
                    tracing::error!(%listen, ?error, "MQTT listener stopped");
                }
            });
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}

/// Devices: client id = username = a provisioned, unrevoked device id, and
/// that device's password. The certificate is checked by TLS; the tenant
/// prefix comes from it.
fn device_auth(
    store: Arc<Store>,
    metrics: Metrics,
) -> impl Fn(String, String, String) -> std::future::Ready<bool> + Send + Sync + 'static {
    move |client_id, username, password| {
        let ok = client_id == username && device_password_ok(&store, &client_id, &password);
        count_attempt(&metrics, "devices", ok);
        if !ok {
            tracing::info!(client_id, "device refused at connect");
        }
        std::future::ready(ok)
    }
}

fn device_password_ok(store: &Store, id: &str, password: &str) -> bool {
    if !protocol::is_valid_device_id(id) || store.is_revoked(id).unwrap_or(true) {
        return false;
    }
    match store.device(id) {
        Ok(Some(record)) => secrets::matches_sha256(password, &record.password_sha256),
        _ => false,
    }
}

fn control_auth(
    control: ControlAccess,
) -> impl Fn(String, String, String) -> std::future::Ready<bool> + Send + Sync + 'static {
    move |_client_id, username, password| {
        std::future::ready(username == control.username && password == control.password)
    }
}

/// Tools on the plain listener: a configured user, and a client id that is
/// neither the hub's nor a device's (a takeover would cut that session off).
fn tools_auth(
    config: &BrokerConfig,
    store: Arc<Store>,
    metrics: Metrics,
) -> impl Fn(String, String, String) -> std::future::Ready<bool> + Send + Sync + 'static {
    let users = ToolUsers::new(config);
    move |client_id, username, password| {
        let id_ok = tools_client_id_allowed(&client_id, &store);
        let user_ok = users.verify(&username, &password);
        let ok = id_ok && user_ok;
        count_attempt(&metrics, "tools", ok);
        if !ok {
            tracing::info!(client_id, username, id_ok, "tool client refused at connect");
        }
        std::future::ready(ok)
    }
}

/// The tools listener's users. Argon2 is slow on purpose (tens of ms
/// here) and rumqttd calls the auth handler inline on the listener's
/// single-threaded runtime: checking every connect would queue a burst of
/// tool connects behind it (5,000 connects ≈ 2 minutes, most timing out).
/// A password that verified once is remembered as its SHA-256 — how device
/// passwords are kept — for the life of the process; a wrong one still
/// costs a full Argon2 check every time.
struct ToolUsers {
    hashes: HashMap<String, String>,
    verified: std::sync::Mutex<HashMap<String, String>>,
}

impl ToolUsers {
    fn new(config: &BrokerConfig) -> ToolUsers {
        let hashes = config
            .plain
            .users
            .iter()
            .map(|u| (u.username.clone(), u.password_hash.clone()))
            .collect();
        ToolUsers {
            hashes,
            verified: Default::default(),
        }
    }

    fn verify(&self, username: &str, password: &str) -> bool {
        if self
            .verified()
            .get(username)
            .is_some_and(|known| secrets::matches_sha256(password, known))
        {
            return true;
        }
        let Some(phc) = self.hashes.get(username) else {
            return false;
        };
        let ok = secrets::verify_password(password, phc);
        if ok {
            self.verified()
                .insert(username.to_owned(), secrets::sha256_hex(password));
        }
        ok
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // invariant: no holder of this lock panics while holding it.
        self.verified.lock().expect("tool users lock")
    }
}

fn tools_client_id_allowed(client_id: &str, store: &Store) -> bool {
    !client_id.is_empty()
        && !client_id.starts_with("__")
        && !client_id.contains('.')
        && !matches!(store.device(client_id), Ok(Some(_)))
}

fn count_attempt(metrics: &Metrics, listener: &str, ok: bool) {
    let result = if ok { "accepted" } else { "refused" };
    metrics
        .connect_attempts
        .with_label_values(&[listener, result])
        .inc();
}

/// A free loopback port for an internal listener. rumqttd binds its own
/// sockets, so the port is picked here and released just before.
fn free_loopback_port() -> Result<SocketAddr, BrokerError> {
    let socket = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(BrokerError::Port)?;
    socket.local_addr().map_err(BrokerError::Port)
}

/// Cuts a device's live session off: a control client takes over the
/// session id `D.D` (tenant `D`, client id `D`) and disconnects. The
/// device's will fires.
pub async fn disconnect_device(control: &ControlAccess, device_id: &str) -> Result<(), String> {
    let session_id = format!("{device_id}.{device_id}");
    let mut options = rumqttc::MqttOptions::new(
        session_id,
        control.addr.ip().to_string(),
        control.addr.port(),
    );
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_credentials(control.username.clone(), control.password.clone());
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let session = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.disconnect().await;
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), session)
        .await
        .map_err(|_| "control connection timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PlainUser;

    #[test]
    fn a_tool_password_is_checked_once_then_remembered_and_a_wrong_one_never() {
        let mut config = BrokerConfig::default();
        config.plain.users = vec![PlainUser {
            username: "tool".into(),
            password_hash: secrets::hash_password("right").unwrap(),
        }];
        let users = ToolUsers::new(&config);
        assert!(!users.verify("tool", "wrong"));
        assert!(!users.verify("nobody", "right"));
        assert!(users.verify("tool", "right"));
        assert!(users.verify("tool", "right"));
        assert!(!users.verify("tool", "wrong"));
        assert_eq!(users.verified.lock().unwrap().len(), 1);
    }
}
