//! A raw MQTT 3.1.1 client over mTLS (tokio-rustls): a valid CONNECT
//! written by hand, then whatever bytes a test wants the hub to refuse.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use protocol::api::Provisioned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// How a raw connection ended after the bytes a test sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The hub closed the connection (end of stream or reset).
    Closed,
    /// Still open when the wait ended; what the hub sent meanwhile.
    Open(Vec<u8>),
}

pub struct RawDevice {
    stream: TlsStream<TcpStream>,
}

impl RawDevice {
    /// TLS with the device's certificate to `127.0.0.1:port`, a CONNECT
    /// (clean session, keepalive 30 s), and an accepting CONNACK.
    pub async fn connect(creds: &Provisioned, port: u16) -> Result<RawDevice> {
        let (stream, code) = connack(creds, port).await?;
        anyhow::ensure!(code == 0, "CONNACK return code {code}");
        Ok(RawDevice { stream })
    }

    /// TLS with the device's certificate, a CONNECT, and the return code
    /// of the hub's CONNACK (0 accepted, 5 not authorised, ...); the
    /// connection is then dropped.
    pub async fn connack_code(creds: &Provisioned, port: u16) -> Result<u8> {
        Ok(connack(creds, port).await?.1)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads until the hub closes the connection or `wait` passes.
    pub async fn ending(&mut self, wait: Duration) -> Ending {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Ending::Closed,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Err(_) => return Ending::Open(received),
            }
        }
    }
}

/// TLS with the device's certificate to `127.0.0.1:port`, a CONNECT
/// (clean session, keepalive 30 s): the stream and the CONNACK's return
/// code.
async fn connack(creds: &Provisioned, port: u16) -> Result<(TlsStream<TcpStream>, u8)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    let mut stream = connector(creds)?.connect(name, tcp).await?;
    let connect = connect_packet(&creds.id, &creds.mqtt_username, &creds.mqtt_password);
    stream.write_all(&connect).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut connack))
        .await
        .context("no CONNACK")??;
    anyhow::ensure!(connack[..3] == [0x20, 2, 0], "not a CONNACK: {connack:?}");
    Ok((stream, connack[3]))
}

fn connector(creds: &Provisioned) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        creds.ca_certificate.as_bytes(),
    )?)?;
    let cert = CertificateDer::from_pem_slice(creds.certificate.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(creds.private_key.as_bytes())?;
    let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// An MQTT 3.1.1 CONNECT: clean session, username and password,
/// keepalive 30 s.
pub fn connect_packet(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, "MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&30u16.to_be_bytes());
    for field in [client_id, username, password] {
        push_str(&mut body, field);
    }
    packet(0x10, &body)
}

/// A PUBLISH with first byte `header` (QoS bits as given: a packet id 1
/// follows the topic unless both are clear).
pub fn publish(header: u8, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_bytes(&mut body, topic);
    if header & 0b0110 != 0 {
        body.extend_from_slice(&1u16.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(header, &body)
}

/// A SUBSCRIBE of `filter` at QoS 1 with first byte `header` (0x82 is
/// the valid one).
pub fn subscribe(header: u8, filter: &str) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    push_bytes(&mut body, filter.as_bytes());
    body.push(1);
    packet(header, &body)
}

/// A packet: `header` byte, remaining length, `body`.
pub fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    push_bytes(out, s.as_bytes());
}

/// A length-prefixed field.
fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // invariant: the tests' fields are far below 64 KiB.
    out.extend_from_slice(&u16::try_from(bytes.len()).expect("short").to_be_bytes());
    out.extend_from_slice(bytes);
}
