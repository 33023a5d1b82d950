//! The public device port: a TCP relay in front of rumqttd's TLS listener.
//!
//! rumqttd runs each TLS handshake inline in its accept loop with no
//! timeout, so one idle socket would block every new device. This front
//! owns the public port and forwards a connection to rumqttd (bound on
//! loopback) only once the client has sent a complete TLS record. Until the
//! handshake is over, every flight must come within `handshake_timeout` and
//! at most `max_handshakes_per_ip` handshakes from one address are in
//! progress; then the two sockets are spliced. TLS stays end to end, so the
//! broker still sees the client certificate and confines the device.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// TLS record header: content type, version (2), length (2).
const RECORD_HEADER: usize = 5;
const HANDSHAKE_RECORD: u8 = 0x16;
const MAX_RECORD: usize = 16 * 1024 + 2048;

#[derive(Debug, Clone)]
pub struct FrontConfig {
    pub upstream: SocketAddr,
    pub handshake_timeout: Duration,
    pub max_handshakes_per_ip: usize,
}

/// Why a connection was dropped before its handshake finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    Timeout,
    NotTls,
    Closed,
    Upstream,
}

impl Abort {
    fn label(self) -> &'static str {
        match self {
            Abort::Timeout => "timeout",
            Abort::NotTls => "not_tls",
            Abort::Closed => "closed",
            Abort::Upstream => "upstream",
        }
    }
}

/// Serves the public listener until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: FrontConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let limits = Arc::new(PerIpLimit::new(config.max_handshakes_per_ip));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed on the device port");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (config, metrics, limits) = (config.clone(), metrics.clone(), limits.clone());
        tokio::spawn(async move {
            metrics.connections.inc();
            if let Err(abort) = relay(client, peer.ip(), &config, &limits).await {
                metrics
                    .handshake_failures
                    .with_label_values(&[abort.label()])
                    .inc();
                tracing::debug!(%peer, cause = abort.label(), "device connection dropped during TLS handshake");
            }
            metrics.connections.dec();
        });
    }
}

/// Buffer per direction of a spliced connection, held for the life of the
/// connection: device traffic is small messages, and a larger TLS record
/// just takes more reads (measured in docs/benchmarks.md: RSS per idle
/// device; 8 KiB per direction cost ~13 KB more per device).
const SPLICE_BUFFER_BYTES: usize = 2 * 1024;

async fn relay(
    mut client: TcpStream,
    ip: IpAddr,
    config: &FrontConfig,
    limits: &PerIpLimit,
) -> Result<(), Abort> {
    let _ = client.set_nodelay(true);
    let wait = config.handshake_timeout;
    let hello = timeout(wait, read_record(&mut client))
        .await
        .map_err(|_| Abort::Timeout)??;
    let permit = timeout(wait, limits.acquire(ip))
        .await
        .map_err(|_| Abort::Timeout)?;
    let mut upstream = TcpStream::connect(config.upstream)
        .await
        .map_err(|_| Abort::Upstream)?;
    let _ = upstream.set_nodelay(true);
    upstream
        .write_all(&hello)
        .await
        .map_err(|_| Abort::Upstream)?;
    handshake(&mut client, &mut upstream, wait).await?;
    drop(permit);
    splice(client, upstream).await;
    Ok(())
}

/// Relays both ways until either side closes.
///
/// Neither rumqttd nor most device stacks set TCP_NODELAY, so with Nagle a
/// small packet (a `stop` right after the PUBACK of the telemetry that
/// caused it; a device's next publish right after its last one) waits for
/// the ACK of the one before, which the receiving kernel delays by up to
/// 40 ms. So both ends of the relay acknowledge at once: TCP_QUICKACK,
/// re-armed after every read because Linux drops it on its own.
async fn splice(client: TcpStream, upstream: TcpStream) {
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::select! {
        _ = pump(client_read, upstream_write) => {}
        _ = pump(upstream_read, client_write) => {}
    }
}

/// Copies until EOF or an error, acknowledging every read at once.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let mut buf = vec![0u8; SPLICE_BUFFER_BYTES];
    loop {
        quickack(from.as_ref());
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn quickack(socket: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(socket).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Where the handshake stands after the ClientHello went upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flight {
    /// Waiting for the server's first flight.
    ServerHello,
    /// Waiting for the client's answer (certificate, Finished).
    ClientFinished,
    /// Waiting for the server's reply to that: the broker's accept loop
    /// has finished the handshake once the server speaks again.
    ServerAnswer,
}

/// Relays both ways until the server answered the client's second flight.
/// Each awaited flight must arrive within `wait`.
async fn handshake(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    wait: Duration,
) -> Result<(), Abort> {
    let (mut from_client, mut from_server) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut flight = Flight::ServerHello;
    let mut deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let n = nonzero(read)?;
                upstream.write_all(&from_client[..n]).await.map_err(|_| Abort::Upstream)?;
                if flight == Flight::ClientFinished {
                    flight = Flight::ServerAnswer;
                    deadline = tokio::time::Instant::now() + wait;
                }
            }
            read = upstream.read(&mut from_server) => {
                let n = nonzero(read).map_err(|_| Abort::Upstream)?;
                client.write_all(&from_server[..n]).await.map_err(|_| Abort::Closed)?;
                match flight {
                    Flight::ServerHello => {
                        flight = Flight::ClientFinished;
                        deadline = tokio::time::Instant::now() + wait;
                    }
                    Flight::ClientFinished => {}
                    Flight::ServerAnswer => return Ok(()),
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Err(Abort::Timeout),
        }
    }
}

fn nonzero(read: std::io::Result<usize>) -> Result<usize, Abort> {
    match read {
        Ok(0) | Err(_) => Err(Abort::Closed),
        Ok(n) => Ok(n),
    }
}

/// Reads one complete TLS handshake record (header and body).
async fn read_record(stream: &mut TcpStream) -> Result<Vec<u8>, Abort> {
    let mut header = [0u8; RECORD_HEADER];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|_| Abort::Closed)?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if header[0] != HANDSHAKE_RECORD || len == 0 || len > MAX_RECORD {
        return Err(Abort::NotTls);
    }
    let mut record = vec![0u8; RECORD_HEADER + len];
    record[..RECORD_HEADER].copy_from_slice(&header);
    stream
        .read_exact(&mut record[RECORD_HEADER..])
        .await
        .map_err(|_| Abort::Closed)?;
    Ok(record)
}

/// At most `per_ip` handshakes in progress per source address.
struct PerIpLimit {
    per_ip: usize,
    semaphores: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl PerIpLimit {
    fn new(per_ip: usize) -> PerIpLimit {
        PerIpLimit {
            per_ip,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, ip: IpAddr) -> OwnedSemaphorePermit {
        let semaphore = {
            // invariant: the lock is never held across an await or a panic.
            let mut map = self.semaphores.lock().expect("per-ip map");
            // Forget addresses with nothing in progress, so the map stays
            // bounded by the handshakes under way.
            map.retain(|_, s| s.available_permits() < self.per_ip || Arc::strong_count(s) > 1);
            map.entry(ip)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_ip)))
                .clone()
        };
        // invariant: the semaphore is never closed.
        semaphore.acquire_owned().await.expect("open semaphore")
    }
}
