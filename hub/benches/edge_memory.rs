//! Memory per idle device, broken into the shares issue 9 asks for, with
//! the allocator the hub ships (the library declares it):
//!
//! - **router**: rumqttd's state for one session link — the link built with
//!   the device as tenant and the three subscriptions a device makes
//!   (`cmd`, `event/ack`, `error`), acks drained as the edge drains them;
//! - **tls**: one server-side TLS 1.3 session after a full mTLS handshake
//!   with a device certificate (what `tokio-rustls` keeps per connection);
//! - the **edge**'s own share is the rest of the end-to-end figure
//!   (`./scripts/peer-bench.sh`: RSS per idle mTLS device) minus these two.
//!
//! `cargo bench -p hub --bench edge_memory [-- <sessions>]` (default 5,000)
//! prints KB per session for each share. RSS is read from /proc, so the
//! figures are what the process holds, not what it asked for.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use hub::broker;
use hub::edge::tls::server_config;
use hub::pki::Pki;
use hub::settings::BrokerConfig;
use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

fn main() -> Result<()> {
    let sessions: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(5_000);
    let runtime = tokio::runtime::Runtime::new()?;
    let bare = runtime.block_on(router_share(sessions, &[]))?;
    let device = runtime.block_on(router_share(sessions, &DEVICE_FILTERS))?;
    let tls = tls_share(sessions)?;
    println!("sessions: {sessions}");
    println!(
        "router share: {:.1} KB per session without subscriptions, {:.1} KB with a device's three",
        bare / 1024.0,
        device / 1024.0
    );
    println!("tls share:    {:.1} KB per session", tls / 1024.0);
    Ok(())
}

/// What a device subscribes to after every connect (docs/protocol.md).
const DEVICE_FILTERS: [&str; 3] = ["cmd", "event/ack", "error"];

fn rss_bytes() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024.0)
}

/// Bytes per link: `sessions` device links, each subscribed to its
/// `channels`, all acks read. Each call has a router of its own.
async fn router_share(sessions: usize, channels: &[&str]) -> Result<f64> {
    let config = BrokerConfig {
        max_connections: sessions + 16,
        ..BrokerConfig::default()
    };
    let broker = broker::start(&config)?;
    let before = rss_bytes()?;
    let started = Instant::now();
    let mut links = Vec::with_capacity(sessions);
    for n in 0..sessions {
        let id = format!("dev{n}");
        let (tx, rx, _connack) = broker
            .links
            .build(id.clone(), Some(id.clone()), true)
            .await
            .map_err(|e| anyhow::anyhow!("link {n}: {e}"))?;
        links.push((tx, rx));
        if channels.is_empty() {
            continue;
        }
        let (tx, rx) = links.last_mut().context("just pushed")?;
        let filters = channels
            .iter()
            .map(|channel| Filter {
                path: format!("/tenants/{id}/{channel}"),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::Never,
            })
            .collect();
        tx.send(Packet::Subscribe(Subscribe { pkid: 1, filters }, None))
            .await?;
        // The SUBACK, as the session would read it.
        rx.next().await?;
    }
    let after = rss_bytes()?;
    eprintln!(
        "router: {sessions} links in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok((after - before) / sessions as f64)
}

/// Bytes per server-side TLS session after an in-memory mTLS handshake.
fn tls_share(sessions: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::load_or_create(dir.path())?;
    let names = vec!["localhost".to_string()];
    let identity = pki.server_identity(&names)?;
    let server = server_config(&identity)?;
    let device = pki.issue_device("dev1", 1)?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(identity.ca.clone()))?;
    let client = Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(
                    device.certificate_pem.as_bytes(),
                )?],
                PrivateKeyDer::from_pem_slice(device.private_key_pem.as_bytes())?,
            )?,
    );
    let before = rss_bytes()?;
    let mut kept = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut server_side = ServerConnection::new(server.clone())?;
        let name = ServerName::try_from("localhost")?.to_owned();
        let mut client_side = ClientConnection::new(client.clone(), name)?;
        handshake(&mut client_side, &mut server_side)?;
        kept.push(server_side);
    }
    let after = rss_bytes()?;
    Ok((after - before) / sessions as f64)
}

/// Moves bytes both ways until both sides are done handshaking and the
/// server's tickets reached the client.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<()> {
    let mut buf = Vec::new();
    for _ in 0..10 {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf)?;
        }
        server.read_tls(&mut buf.as_slice())?;
        server.process_new_packets()?;
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf)?;
        }
        client.read_tls(&mut buf.as_slice())?;
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
            return Ok(());
        }
    }
    anyhow::bail!("handshake did not finish")
}
