//! The downlink (docs/upstream.md, "Downlink"): commands from district
//! operators to devices, signed with the district's Ed25519 key and
//! published at QoS 1 on `yz/v1/{center}/{device}/cmd` through the hubs'
//! upstream broker, where each hub checks and delivers them and sends the
//! outcome back up (`tally` keeps it on the command).
//!
//! `Commands::send` checks the request (the ranges the hubs' command
//! service takes, the lifetime bounded by `max_lifetime_secs`), signs it
//! under a fresh id, records it `publishing` (fsynced), hands it to the
//! publisher and waits for the broker's PUBACK: then `sent`, or after
//! `publish_timeout` `unconfirmed` (it may still go out: the publisher
//! drops a request only once its caller stopped waiting, before publishing
//! it).
//!
//! The publisher is one task holding one MQTT session (a clean session
//! under its own client id; a new one after every failure, so nothing of
//! a lost session is resent behind the operator's back), publishing one
//! command at a time.

use std::sync::Arc;
use std::time::Duration;

use protocol::api::CommandRequest;
use protocol::mqtt::{poll_in_background, Events};
use protocol::upstream::{command_id, key_id, CommandMessage};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, SENT, UNCONFIRMED};
use crate::records::CommandState;
use crate::settings::{Downlink, Endpoint};
use crate::store::{Store, StoreError};

/// Statuses the API writes.
const PUBLISHING: &str = "publishing";

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request is out of range (422).
    #[error("{0}")]
    Invalid(String),
    /// No PUBACK in time (503).
    #[error("the broker did not acknowledge command {0} in time; it may still reach the hub: GET /api/v1/district/commands/{0}")]
    Unconfirmed(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the store's thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// One command for the publisher; `done` hears how it went.
struct Request {
    topic: String,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// What the API sends commands through.
pub struct Commands {
    settings: Downlink,
    store: Arc<Store>,
    metrics: Metrics,
    requests: mpsc::Sender<Request>,
}

/// Requests waiting for the publisher, at most.
const QUEUE: usize = 64;

/// Starts the publisher; the `Commands` to send through and its task.
pub fn start(
    settings: Downlink,
    store: Arc<Store>,
    metrics: Metrics,
    stop: CancellationToken,
) -> (Commands, tokio::task::JoinHandle<()>) {
    let (requests, queue) = mpsc::channel(QUEUE);
    let publisher = Publisher {
        settings: settings.clone(),
        metrics: metrics.clone(),
        stop,
    };
    let task = tokio::spawn(publisher.run(queue));
    tracing::info!(key = %key_id(&settings.signer.verifying_key()), "commands on; signing key loaded");
    let commands = Commands {
        settings,
        store,
        metrics,
        requests,
    };
    (commands, task)
}

impl Commands {
    /// Checks, signs, records and publishes a command to `device` in
    /// `center` (both checked by the caller); its record once the broker
    /// acknowledged it.
    pub async fn send(
        &self,
        center: &str,
        device: &str,
        request: CommandRequest,
        now_ms: u64,
    ) -> Result<CommandState, SendError> {
        let message = self.sign(center, device, request, now_ms)?;
        let mut state = CommandState {
            id: message.id.clone(),
            center: center.into(),
            device: device.into(),
            op: message.op.clone(),
            args: message.args_value().map_err(SendError::Invalid)?,
            issued_at: message.issued_at,
            expires_at: message.expires_at,
            key: message.key.clone(),
            status: PUBLISHING.into(),
            outcome: None,
            refusals: Vec::new(),
        };
        let recorded = state.clone();
        let store = self.store.clone();
        blocking(move || store.insert_command(&recorded)).await?;
        let published = self.publish(&message).await;
        let status = if published { SENT } else { UNCONFIRMED };
        self.metrics
            .commands_published
            .with_label_values(&[status])
            .inc();
        let (store, id) = (self.store.clone(), message.id.clone());
        blocking(move || store.advance_command(&id, PUBLISHING, status)).await?;
        if !published {
            return Err(SendError::Unconfirmed(message.id));
        }
        state.status = SENT.into();
        tracing::info!(command = %state.id, center, device, op = %state.op, "command sent");
        Ok(state)
    }

    /// The signed message of a request, its fields checked.
    fn sign(
        &self,
        center: &str,
        device: &str,
        request: CommandRequest,
        now_ms: u64,
    ) -> Result<CommandMessage, SendError> {
        let max = u64::try_from(self.settings.max_lifetime.as_millis()).unwrap_or(u64::MAX);
        let expires_at = request
            .expires_at(now_ms, max)
            .map_err(SendError::Invalid)?;
        let args = protocol::api::command_args(request.args).map_err(SendError::Invalid)?;
        let message = CommandMessage {
            id: command_id(now_ms, rand::random()),
            center: center.into(),
            device: device.into(),
            op: request.op,
            args: args.to_string(),
            issued_at: now_ms,
            expires_at,
            key: String::new(),
            sig: String::new(),
        }
        .sign(&self.settings.signer);
        message.check().map_err(SendError::Invalid)?;
        Ok(message)
    }

    /// Hands `message` to the publisher; whether the broker acknowledged
    /// it within `publish_timeout`.
    async fn publish(&self, message: &CommandMessage) -> bool {
        let (done, answer) = oneshot::channel();
        let request = Request {
            topic: message.topic(),
            // invariant: a struct of strings and numbers serializes.
            payload: serde_json::to_vec(message).expect("a command serializes"),
            done,
        };
        let waited = tokio::time::timeout(self.settings.publish_timeout, async {
            self.requests.send(request).await.ok()?;
            answer.await.ok()
        })
        .await;
        match waited {
            Ok(Some(Ok(()))) => true,
            Ok(Some(Err(reason))) => {
                tracing::warn!(command = %message.id, %reason, "command not published");
                false
            }
            Ok(None) | Err(_) => false,
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SendError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

/// The publishing session.
struct Publisher {
    settings: Downlink,
    metrics: Metrics,
    stop: CancellationToken,
}

/// How a session ended.
enum End {
    Stopped,
    Lost(String),
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Publisher {
    async fn run(self, mut queue: mpsc::Receiver<Request>) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0.. {
            let endpoints = &self.settings.endpoints;
            let endpoint = &endpoints[attempt % endpoints.len()];
            let (connected, end) = self.session(endpoint, &mut queue).await;
            self.metrics.downlink_connected.set(0);
            let End::Lost(reason) = end else {
                return;
            };
            tracing::warn!(broker = %format!("{}:{}", endpoint.host, endpoint.port), %reason, "command publisher's session ended");
            backoff = match connected {
                true => FIRST_BACKOFF,
                false => (backoff * 2).min(MAX_BACKOFF),
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    fn options(&self, endpoint: &Endpoint) -> MqttOptions {
        let mut options = MqttOptions::new(
            self.settings.client_id.clone(),
            endpoint.host.clone(),
            endpoint.port,
        );
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(10));
        if let Some((user, password)) = &self.settings.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        options
    }

    /// One connection: publishes requests one at a time until it fails or
    /// the service stops. `true` once it was connected.
    async fn session(
        &self,
        endpoint: &Endpoint,
        queue: &mut mpsc::Receiver<Request>,
    ) -> (bool, End) {
        let (client, eventloop) = AsyncClient::new(self.options(endpoint), 8);
        let (mut events, _poller) = poll_in_background(eventloop);
        let connack = tokio::select! {
            _ = self.stop.cancelled() => return (false, End::Stopped),
            first = events.recv() => first,
        };
        match connack {
            Some(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == ConnectReturnCode::Success => {}
            other => return (false, End::Lost(format!("no session: {other:?}"))),
        }
        self.metrics.downlink_connected.set(1);
        tracing::info!(broker = %format!("{}:{}", endpoint.host, endpoint.port), "command publisher connected");
        loop {
            let request = tokio::select! {
                _ = self.stop.cancelled() => return (true, End::Stopped),
                request = queue.recv() => request,
                event = events.recv() => match event {
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return (true, End::Lost(error.to_string())),
                    None => return (true, End::Lost("the event loop ended".into())),
                },
            };
            let Some(request) = request else {
                return (true, End::Stopped);
            };
            if let Err(reason) = self.publish_one(&client, &mut events, request).await {
                return (true, End::Lost(reason));
            }
        }
    }

    /// Publishes one request and waits for its PUBACK (telling its caller);
    /// `Err` ends the session.
    async fn publish_one(
        &self,
        client: &AsyncClient,
        events: &mut Events,
        request: Request,
    ) -> Result<(), String> {
        if request.done.is_closed() {
            // Its caller answered `unconfirmed` already: never sent late.
            return Ok(());
        }
        if let Err(error) =
            client.try_publish(request.topic, QoS::AtLeastOnce, false, request.payload)
        {
            let reason = format!("publish: {error}");
            let _ = request.done.send(Err(reason.clone()));
            return Err(reason);
        }
        let mut pkid = None;
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return Err("stopping".into()),
                event = events.recv() => event,
            };
            match event {
                Some(Ok(Event::Outgoing(Outgoing::Publish(id)))) => pkid = Some(id),
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) if Some(ack.pkid) == pkid => {
                    let _ = request.done.send(Ok(()));
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let reason = error.to_string();
                    let _ = request.done.send(Err(reason.clone()));
                    return Err(reason);
                }
                None => {
                    let _ = request.done.send(Err("the event loop ended".into()));
                    return Err("the event loop ended".into());
                }
            }
        }
    }
}
