//! Accept loops: every accepted socket gets TCP_NODELAY and TCP keepalive,
//! then its own task. Handshakes (TLS and CONNECT) run concurrently, each
//! within one deadline, and only a bounded number at a time — globally and
//! per source address — so clients that connect and stall cannot starve
//! the others, and a reconnect storm queues instead of failing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::connect;
use super::tls::{self, PeerDevice};
use super::{Listener, Shared};

/// How a listener secures its connections.
#[derive(Clone)]
pub enum Security {
    /// TLS with a client certificate naming a device.
    DeviceTls(TlsAcceptor),
    /// Plain TCP (the loopback tools listener).
    Plain,
}

/// Bounds on connections in handshake.
pub struct HandshakeGate {
    global: Arc<Semaphore>,
    per_source: PerSourceLimit,
    timeout: Duration,
}

/// The permits a connection holds while in handshake.
pub struct InHandshake {
    _global: OwnedSemaphorePermit,
    _source: OwnedSemaphorePermit,
}

impl HandshakeGate {
    pub fn new(global: usize, per_source: usize, timeout: Duration) -> HandshakeGate {
        HandshakeGate {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_source: PerSourceLimit::new(per_source.max(1)),
            timeout,
        }
    }

    /// Waits for a place (source first, so one source cannot hold every
    /// global place while waiting).
    async fn enter(&self, ip: IpAddr) -> InHandshake {
        let source = self.per_source.acquire(ip).await;
        // invariant: the semaphore is never closed.
        let global = self.global.clone().acquire_owned().await.expect("open");
        InHandshake {
            _global: global,
            _source: source,
        }
    }
}

/// Accepts on `socket` until the hub stops.
pub async fn serve(
    socket: TcpListener,
    security: Security,
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    gate: Arc<HandshakeGate>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(%error, listener = listener.name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        configure(&stream);
        let connection = Connection {
            shared: shared.clone(),
            listener: listener.clone(),
            gate: gate.clone(),
            peer,
        };
        tokio::spawn(connection.run(stream, security.clone()));
    }
}

/// A client stream over TCP: its socket, for socket options.
pub trait OverTcp {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Acknowledges what arrives at once instead of after the delayed-ACK
/// timer (up to 40 ms). Most device stacks leave Nagle on: a device's next
/// small publish waits for the ACK of its last one, so a delayed ACK would
/// hold, say, an overheating robot's reading — and its `stop` — for that
/// long. Linux drops the flag on its own, so it is set again after every
/// read.
pub fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    // Clients with keepalive 0 are never timed out by MQTT; a dead peer is
    // still found by TCP.
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

struct Connection {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    gate: Arc<HandshakeGate>,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, stream: TcpStream, security: Security) {
        let metrics = self.shared.metrics.clone();
        let gauge = metrics.connections.with_label_values(&[self.listener.name]);
        gauge.inc();
        if let Err(reason) = self.serve(stream, security).await {
            metrics
                .handshake_failures
                .with_label_values(&[self.listener.name, reason])
                .inc();
            tracing::debug!(peer = %self.peer, reason, "connection closed before its session");
        }
        gauge.dec();
    }

    async fn serve(&self, stream: TcpStream, security: Security) -> Result<(), &'static str> {
        let timeout = self.gate.timeout;
        let permit = tokio::time::timeout(timeout, self.gate.enter(self.peer.ip()))
            .await
            .map_err(|_| "busy")?;
        let deadline = Instant::now() + timeout;
        match security {
            Security::Plain => self.establish(stream, None, deadline, permit).await,
            Security::DeviceTls(acceptor) => {
                // Boxed, like the CONNECT phase: a session keeps neither.
                let accepting = Box::pin(acceptor.accept(stream));
                let stream = tokio::time::timeout_at(deadline, accepting)
                    .await
                    .map_err(|_| "timeout")?
                    .map_err(|_| "tls_error")?;
                // Whether this device and certificate may connect is
                // decided at CONNECT, so a refusal gets a CONNACK saying so.
                let device = tls::peer_device(stream.get_ref().1).map_err(|e| e.label())?;
                self.establish(stream, Some(device), deadline, permit).await
            }
        }
    }

    async fn establish<S>(
        &self,
        stream: S,
        device: Option<PeerDevice>,
        deadline: Instant,
        permit: InHandshake,
    ) -> Result<(), &'static str>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + OverTcp,
    {
        let establishing = connect::establish(
            stream,
            &self.shared,
            &self.listener,
            device.as_ref(),
            deadline,
        );
        let established = Box::pin(establishing).await;
        drop(permit);
        self.count_connect(established.is_ok());
        match established {
            Ok((mut session, early)) => {
                session.run(early).await;
                Ok(())
            }
            Err(failed) => Err(failed.label()),
        }
    }
}

impl Connection {
    /// `yizhan_mqtt_connect_attempts_total`: a device or tool admitted, or
    /// refused once it showed who it is.
    fn count_connect(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.shared
            .metrics
            .connect_attempts
            .with_label_values(&[self.listener.name, result])
            .inc();
    }
}

/// At most `per_source` connections in handshake per source address.
struct PerSourceLimit {
    per_source: usize,
    semaphores: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl PerSourceLimit {
    fn new(per_source: usize) -> PerSourceLimit {
        PerSourceLimit {
            per_source,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, ip: IpAddr) -> OwnedSemaphorePermit {
        let semaphore = {
            // invariant: the lock is never held across an await or a panic.
            let mut map = self.semaphores.lock().expect("per-source map");
            // Forget addresses with nothing in progress, so the map stays
            // bounded by the handshakes under way.
            if map.len() > 64 {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            map.entry(ip)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_source)))
                .clone()
        };
        // invariant: the semaphore is never closed.
        semaphore.acquire_owned().await.expect("open semaphore")
    }
}
