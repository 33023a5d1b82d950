//! A device's MQTT connection: the rumqttc options of contract v1 (mTLS,
//! credentials, will) and the task that drives the event loop, reconnects
//! with backoff and hands what arrives to the device.

use std::time::Duration;

use protocol::api::Provisioned;
use protocol::topic::{for_device, Channel};
use protocol::STATUS_OFFLINE;
use rand::rngs::StdRng;
use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// First pause after a failed connection; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Requests the client may queue before `try_publish` reports it full.
pub const REQUEST_CAPACITY: usize = 256;

/// Where and how a device connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// DNS name of the broker: it is also the TLS server name, and the
    /// broker refuses an IP address as SNI.
    pub host: String,
    pub port: u16,
    /// MQTT keepalive, whole seconds, at least 1 s.
    pub keepalive: Duration,
}

/// What the connection task tells the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A CONNACK arrived: the session is new (clean session).
    Connected,
    /// The connection broke; the task is reconnecting.
    Disconnected,
    /// A PUBLISH from the hub.
    Message { topic: String, payload: Vec<u8> },
}

/// rumqttc options for `creds` at `endpoint`: client id and username = the
/// device id, clean session, will `offline` retained QoS 1 on the status
/// topic, TLS with the hub's CA and the device's client certificate.
pub fn options(creds: &Provisioned, endpoint: &Endpoint) -> MqttOptions {
    let mut options = MqttOptions::new(&creds.id, &endpoint.host, endpoint.port);
    options
        .set_keep_alive(endpoint.keepalive)
        .set_clean_session(true)
        .set_credentials(&creds.mqtt_username, &creds.mqtt_password)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_last_will(LastWill::new(
            for_device(&creds.id, Channel::Status),
            STATUS_OFFLINE,
            QoS::AtLeastOnce,
            true,
        ))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: creds.ca_certificate.as_bytes().to_vec(),
            alpn: None,
            client_auth: Some((
                creds.certificate.as_bytes().to_vec(),
                creds.private_key.as_bytes().to_vec(),
            )),
        }));
    options
}

/// Makes aws-lc-rs the process's rustls crypto provider unless one is set,
/// so TLS keeps working if another crate in the process enables a second
/// rustls provider (then rustls cannot pick one by itself).
pub fn ensure_crypto_provider() {
    use rumqttc::tokio_rustls::rustls::crypto::{aws_lc_rs, CryptoProvider};
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is set.
        let _ = aws_lc_rs::default_provider().install_default();
    }
}

/// Pause before reconnect attempt number `failures` (from 1): exponential
/// from [`MIN_BACKOFF`] to [`MAX_BACKOFF`], then jittered by ±25% so a
/// fleet that lost the broker together does not come back together.
pub fn backoff(failures: u32, rng: &mut impl Rng) -> Duration {
    let exp = MIN_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(MAX_BACKOFF).mul_f64(rng.gen_range(0.75..1.25))
}

/// The client and the task driving its event loop.
pub struct Connection {
    pub client: AsyncClient,
    pub notices: mpsc::UnboundedReceiver<Notice>,
    /// Ends the driving task wherever it is (when a goodbye cannot finish).
    pub abort: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts connecting `options` in a new task. The task ends after the
/// client's DISCONNECT went out, when `abort` fires, or when every client
/// handle is dropped.
pub fn connect(options: MqttOptions, backoff_rng: StdRng) -> Connection {
    let id = options.client_id();
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let (tx, notices) = mpsc::unbounded_channel();
    let abort = CancellationToken::new();
    let task = tokio::spawn(drive(id, eventloop, tx, abort.clone(), backoff_rng));
    Connection {
        client,
        notices,
        abort,
        task,
    }
}

/// What the driver does after one poll.
enum Step {
    Continue,
    Stop,
}

async fn drive(
    id: String,
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Notice>,
    abort: CancellationToken,
    mut rng: StdRng,
) {
    let mut failures = 0u32;
    loop {
        let polled = tokio::select! {
            _ = abort.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        let step = match polled {
            Ok(event) => {
                failures = 0;
                forward(event, &tx)
            }
            Err(ConnectionError::RequestsDone) => Step::Stop,
            Err(e) => {
                failures += 1;
                report_failure(&id, failures, &e, &tx);
                tokio::select! {
                    _ = abort.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures, &mut rng)) => Step::Continue,
                }
            }
        };
        if let Step::Stop = step {
            return;
        }
    }
}

/// Passes what the device cares about on; stops after our DISCONNECT.
fn forward(event: Event, tx: &mpsc::UnboundedSender<Notice>) -> Step {
    let notice = match event {
        Event::Incoming(Packet::ConnAck(_)) => Notice::Connected,
        Event::Incoming(Packet::Publish(p)) => Notice::Message {
            topic: p.topic,
            payload: p.payload.to_vec(),
        },
        Event::Outgoing(Outgoing::Disconnect) => return Step::Stop,
        _ => return Step::Continue,
    };
    // The device gone means nobody listens any more.
    match tx.send(notice) {
        Ok(()) => Step::Continue,
        Err(_) => Step::Stop,
    }
}

/// Tells the device after the first failure of a streak (the connection was
/// up, or never came up) and logs the streak without flooding.
fn report_failure(
    id: &str,
    failures: u32,
    error: &ConnectionError,
    tx: &mpsc::UnboundedSender<Notice>,
) {
    if failures == 1 {
        tracing::warn!(device = id, %error, "connection lost or refused; reconnecting");
        let _ = tx.send(Notice::Disconnected);
    } else if failures.is_power_of_two() {
        tracing::warn!(device = id, %error, failures, "still cannot connect");
    } else {
        tracing::debug!(device = id, %error, failures, "reconnect failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::creds;
    use rand::SeedableRng;

    #[test]
    fn options_follow_the_contract() {
        let endpoint = Endpoint {
            host: "localhost".into(),
            port: 8883,
            keepalive: Duration::from_secs(30),
        };
        let o = options(&creds("c01gate01"), &endpoint);
        assert_eq!(o.client_id(), "c01gate01");
        assert_eq!(o.broker_address(), ("localhost".to_owned(), 8883));
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert!(o.clean_session());
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("c01gate01", "secret")
        );
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "/tenants/c01gate01/status");
        assert_eq!(&will.message[..], b"offline");
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert!(will.retain);
        match o.transport() {
            Transport::Tls(TlsConfiguration::Simple { client_auth, .. }) => {
                assert!(client_auth.is_some())
            }
            _ => panic!("transport must be TLS with a client certificate"),
        }
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let first = backoff(1, &mut rng);
            assert!(first >= MIN_BACKOFF.mul_f64(0.75) && first <= MIN_BACKOFF.mul_f64(1.25));
            let later = backoff(40, &mut rng);
            assert!(later >= MAX_BACKOFF.mul_f64(0.75) && later <= MAX_BACKOFF.mul_f64(1.25));
        }
        let mut a = StdRng::seed_from_u64(2);
        let mut b = StdRng::seed_from_u64(2);
        assert!(backoff(3, &mut a) > backoff(1, &mut b));
    }
}
