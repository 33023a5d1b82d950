//! One MQTT session after its CONNECT: socket → router link and back.
//!
//! The session reads its socket only when it can pass what it read on:
//! a publish bound for ingest waits for room in the ingest window, a
//! publish over the connection's rate waits for its token, and while it
//! waits the socket is not read, so TCP slows the client down. Nothing a
//! client sent is dropped without being counted and, for a device,
//! reported on its `error` topic.
//!
//! Acks and deliveries come from the router through the link. The session
//! answers PINGREQ itself, merges refused filters into the router's SUBACK,
//! and sends one UNSUBACK per UNSUBSCRIBE (the router sends one per filter
//! it removed). The will is the session's own: on an abnormal end it is
//! published through the link before the link is closed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, LastWill, Packet, PingResp, PubAck, PubAckReason, Publish,
    SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::accept::{quickack, OverTcp};
use super::auth::Admitted;
use super::flow::{FloodWatch, TokenBucket};
use super::framing::{read_packets, write_packets, FrameError, Framer};
use super::policy::{self, Refused, Scope};
use super::registry::{Claim, Kick};
use super::{Listener, Shared};
use crate::broker;
use crate::broker::window::message_bytes;

/// Longest a write to a client may take before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most router notifications written with one flush.
const DELIVERY_BATCH: usize = 256;
/// At most one error report per connection per this interval.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a session ended; the `reason` label of
/// `yizhan_edge_disconnects_total`.
#[derive(Debug)]
pub enum End {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    Frame(FrameError),
    KeepaliveTimeout,
    Kicked(Kick),
    /// A packet a client may not send, or a refused QoS 2 publish.
    ProtocolViolation,
    /// Throttled without pause for longer than the limit allows.
    Flooding,
    /// A device reached outside its own topics.
    Confinement,
    /// The router dropped the link.
    RouterClosed,
    WriteTimeout,
}

impl End {
    pub fn label(&self) -> &'static str {
        match self {
            End::ClientDisconnect => "client_disconnect",
            End::Frame(error) => error.label(),
            End::KeepaliveTimeout => "keepalive_timeout",
            End::Kicked(Kick::TakenOver) => "taken_over",
            End::Kicked(Kick::Revoked) => "revoked",
            End::Kicked(Kick::Shutdown) => "shutdown",
            End::Kicked(Kick::Superseded) => "certificate_superseded",
            End::ProtocolViolation => "protocol_violation",
            End::Flooding => "flooding",
            End::Confinement => "confinement",
            End::RouterClosed => "router_closed",
            End::WriteTimeout => "write_timeout",
        }
    }

    /// MQTT 3.1.1 §3.1.2.5: the will is published unless the client said
    /// DISCONNECT; the hub stopping is not the device's failure either.
    fn fires_will(&self) -> bool {
        !matches!(
            self,
            End::ClientDisconnect | End::Kicked(Kick::Shutdown) | End::RouterClosed
        )
    }
}

/// What a session is made of once its CONNECT was accepted.
pub struct Parts<S> {
    pub stream: S,
    pub framer: Framer,
    pub tx: LinkTx,
    pub rx: LinkRx,
    pub admitted: Admitted,
    pub claim: Claim,
    pub clean_session: bool,
    /// 0 = no keepalive.
    pub keepalive_secs: u16,
    pub will: Option<LastWill>,
    /// Filters a persistent session still holds in the router.
    pub filters: HashSet<String>,
}

pub struct Session<S> {
    stream: S,
    framer: Framer,
    tx: LinkTx,
    rx: LinkRx,
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    admitted: Admitted,
    claim: Claim,
    clean_session: bool,
    /// 1.5 × the client's keepalive.
    silence_limit: Option<Duration>,
    last_heard: Instant,
    will: Option<LastWill>,
    filters: HashSet<String>,
    /// SUBSCRIBE pkid → positions of the filters refused here.
    suback_refusals: HashMap<u16, Vec<usize>>,
    /// UNSUBSCRIBE pkid → UNSUBACKs the router still owes.
    unsuback_owed: HashMap<u16, usize>,
    bucket: TokenBucket,
    flood: FloodWatch,
    last_report: Option<Instant>,
    to_router: Vec<Packet>,
    to_client: Vec<Packet>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + OverTcp> Session<S> {
    pub fn new(parts: Parts<S>, shared: Arc<Shared>, listener: Arc<Listener>) -> Session<S> {
        let limits = &shared.limits;
        let silence_limit = (parts.keepalive_secs > 0)
            .then(|| Duration::from_millis(u64::from(parts.keepalive_secs) * 1_500));
        let fresh = TokenBucket::new(
            limits.messages_per_second,
            limits.burst,
            std::time::Instant::now(),
        );
        let bucket = shared
            .registry
            .take_bucket(&parts.admitted.session_key, fresh);
        Session {
            stream: parts.stream,
            framer: parts.framer,
            tx: parts.tx,
            rx: parts.rx,
            admitted: parts.admitted,
            claim: parts.claim,
            clean_session: parts.clean_session,
            silence_limit,
            last_heard: Instant::now(),
            will: parts.will,
            filters: parts.filters,
            suback_refusals: HashMap::new(),
            unsuback_owed: HashMap::new(),
            bucket,
            flood: FloodWatch::default(),
            last_report: None,
            to_router: Vec::new(),
            to_client: Vec::new(),
            shared,
            listener,
        }
    }

    /// Serves the session until it ends, then closes it: will, router
    /// disconnect, socket. (The session is boxed by its owner and the
    /// closing steps are boxed here: what an idle session holds is the
    /// session and `serve`'s small state, see docs/benchmarks.md.)
    pub async fn run(&mut self, early: Vec<Packet>) {
        let end = self.serve(early).await;
        Box::pin(self.finish(end)).await;
    }

    async fn serve(&mut self, early: Vec<Packet>) -> End {
        if let Err(end) = self.handle_all(early).await {
            return end;
        }
        let mut packets = Vec::new();
        // One timer for the session, moved on only when it fires: hearing
        // from the client just updates `last_heard`.
        let limit = self.silence_limit;
        let keepalive = tokio::time::sleep(limit.unwrap_or(Duration::MAX / 4));
        tokio::pin!(keepalive);
        loop {
            tokio::select! {
                biased;
                _ = self.claim.kicked().cancelled() => return End::Kicked(self.claim.reason()),
                notification = next_notification(&mut self.rx) => match notification {
                    Some(Some(notification)) => {
                        if let Err(end) = self.deliver(notification).await {
                            return end;
                        }
                    }
                    Some(None) => {}
                    None => return End::RouterClosed,
                },
                read = read_packets(&mut self.stream, &mut self.framer, &mut packets) => {
                    if let Err(error) = read {
                        return End::Frame(error);
                    }
                    quickack(self.stream.tcp());
                    let batch = std::mem::take(&mut packets);
                    if let Err(end) = self.handle_all(batch).await {
                        return end;
                    }
                    self.last_heard = Instant::now();
                }
                _ = &mut keepalive, if limit.is_some() => {
                    let due = self.last_heard + limit.unwrap_or_default();
                    if due <= Instant::now() {
                        return End::KeepaliveTimeout;
                    }
                    keepalive.as_mut().reset(due);
                }
            }
        }
    }

    /// Writes `first` and every notification already waiting, with one
    /// flush; tells the router when it may send more.
    async fn deliver(&mut self, first: Notification) -> Result<(), End> {
        let mut unscheduled = false;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(notification) = next.take() {
            match notification {
                Notification::Unschedule => unscheduled = true,
                Notification::Disconnect(..) => return Err(End::RouterClosed),
                other => {
                    if let Some(packet) = Option::<Packet>::from(other) {
                        self.relay_to_client(packet);
                    }
                }
            }
            taken += 1;
            if taken < DELIVERY_BATCH {
                next = match self.rx.next().now_or_never() {
                    Some(Ok(found)) => found,
                    Some(Err(_)) => return Err(End::RouterClosed),
                    None => None,
                };
            }
        }
        self.write_out().await?;
        if unscheduled {
            self.rx.wake().await.map_err(|_| End::RouterClosed)?;
        }
        Ok(())
    }

    /// A packet from the router on its way to the client.
    fn relay_to_client(&mut self, packet: Packet) {
        match packet {
            Packet::SubAck(suback, _) => {
                let suback = self.merge_refusals(suback);
                self.to_client.push(Packet::SubAck(suback, None));
            }
            Packet::UnsubAck(unsuback, _) => self.router_unsuback(unsuback),
            other => self.to_client.push(other),
        }
    }

    /// Handles what one read brought, then hands it on with one router
    /// notification and one write. Waiting (a rate limit, a full ingest
    /// window) is the exception and happens in `resume`, boxed, so the
    /// common path keeps no wait state in the session's future.
    async fn handle_all(&mut self, packets: Vec<Packet>) -> Result<(), End> {
        for packet in packets {
            if let Some(pending) = self.handle(packet)? {
                Box::pin(self.resume(pending)).await?;
            }
        }
        self.flush_router()?;
        self.write_out().await
    }

    fn handle(&mut self, packet: Packet) -> Result<Option<Pending>, End> {
        match packet {
            Packet::Publish(publish, _) => return self.publish(publish),
            Packet::PubAck(..) | Packet::PubRec(..) | Packet::PubRel(..) | Packet::PubComp(..) => {
                self.to_router.push(packet)
            }
            Packet::Subscribe(subscribe, _) => self.subscribe(subscribe)?,
            Packet::Unsubscribe(unsubscribe, _) => self.unsubscribe(unsubscribe),
            Packet::PingReq(_) => self.to_client.push(Packet::PingResp(PingResp)),
            Packet::Disconnect(..) => return Err(End::ClientDisconnect),
            _ => return Err(End::ProtocolViolation),
        }
        Ok(None)
    }

    fn publish(&mut self, publish: Publish) -> Result<Option<Pending>, End> {
        // MQTT 3.1.1 §1.5.3: ill-formed UTF-8 makes the packet malformed,
        // and the connection is closed.
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            let error = FrameError::Malformed("topic is not UTF-8".into());
            return Err(End::Frame(error));
        };
        let checked = policy::check_publish(&self.admitted.scope, topic, publish.retain)
            .map(|()| broker::reaches_ingest(topic));
        let to_ingest = match checked {
            Ok(to_ingest) => to_ingest,
            Err(refused) => return self.refuse_publish(&publish, refused).map(|()| None),
        };
        if let Some(wait) = self.token_wait()? {
            return Ok(Some(Pending::Token {
                wait,
                publish,
                to_ingest,
            }));
        }
        Ok(self.admit(publish, to_ingest))
    }

    /// Passes `publish` on if the ingest window has room for it (or it is
    /// not bound for ingest); else it waits for room.
    fn admit(&mut self, publish: Publish, to_ingest: bool) -> Option<Pending> {
        if to_ingest {
            let bytes = message_bytes(&publish.topic, &publish.payload);
            if !self.shared.window.try_admit(bytes) {
                return Some(Pending::Room { bytes, publish });
            }
        }
        self.to_router.push(Packet::Publish(publish, None));
        None
    }

    /// Waits out what `handle` could not do at once, then does it.
    async fn resume(&mut self, mut pending: Pending) -> Result<(), End> {
        loop {
            // What this session holds must reach ingest before room can
            // open, and should not wait behind this publish either.
            self.flush_router()?;
            match pending {
                Pending::Token {
                    wait,
                    publish,
                    to_ingest,
                } => {
                    self.wait(tokio::time::sleep(wait)).await?;
                    match self.admit(publish, to_ingest) {
                        Some(next) => pending = next,
                        None => return Ok(()),
                    }
                }
                Pending::Room { bytes, publish } => {
                    let window = self.shared.window.clone();
                    self.wait(window.admit(bytes)).await?;
                    self.to_router.push(Packet::Publish(publish, None));
                    return Ok(());
                }
            }
        }
    }

    /// Counts and reports a refused publish. QoS 1 is acknowledged (MQTT
    /// 3.1.1 §3.3.5: ack or close); QoS 2 closes the connection.
    fn refuse_publish(&mut self, publish: &Publish, refused: Refused) -> Result<(), End> {
        self.count_refusal(refused.label());
        if refused == Refused::OutsidePrefix {
            return Err(End::Confinement);
        }
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        self.report(&topic, refused.label(), "refused by the hub's edge");
        match qos_and_pkid(publish) {
            (0, _) => Ok(()),
            (1, pkid) => {
                let puback = PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                };
                self.to_client.push(Packet::PubAck(puback, None));
                Ok(())
            }
            _ => Err(End::ProtocolViolation),
        }
    }

    /// Takes a token of the connection's rate: how long to wait for it, if
    /// at all. Ends a connection throttled without pause for too long.
    fn token_wait(&mut self) -> Result<Option<Duration>, End> {
        if self.bucket.is_unlimited() {
            return Ok(None);
        }
        let now = std::time::Instant::now();
        let wait = self.bucket.take(now);
        let limit = self.shared.limits.flood_after;
        if self.flood.observe(wait.is_some(), now, limit) {
            return Err(End::Flooding);
        }
        let Some(wait) = wait else {
            return Ok(None);
        };
        self.shared
            .metrics
            .edge_throttled
            .with_label_values(&[self.listener.name])
            .inc();
        let topic = self.device_topic(protocol::Channel::Error);
        self.report(
            &topic,
            "rate_limited",
            "slowed to the device's message rate",
        );
        Ok(Some(wait))
    }

    /// Awaits `future` unless the session is told to end first.
    async fn wait(&self, future: impl Future<Output = ()>) -> Result<(), End> {
        tokio::select! {
            _ = self.claim.kicked().cancelled() => Err(End::Kicked(self.claim.reason())),
            _ = future => Ok(()),
        }
    }

    fn subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let count = subscribe.filters.len();
        let mut allowed = Vec::with_capacity(count);
        let mut refused_at = Vec::new();
        for (position, filter) in subscribe.filters.into_iter().enumerate() {
            let verdict = policy::check_filter(&self.admitted.scope, &filter.path)
                .and_then(|()| self.room_for(&filter.path));
            match verdict {
                Ok(()) => {
                    self.filters.insert(filter.path.clone());
                    allowed.push(filter);
                }
                Err(refused) => {
                    self.count_refusal(refused.label());
                    if refused == Refused::OutsidePrefix {
                        return Err(End::Confinement);
                    }
                    refused_at.push(position);
                }
            }
        }
        let pkid = subscribe.pkid;
        if allowed.is_empty() {
            let return_codes = vec![SubscribeReasonCode::Failure; count];
            self.to_client
                .push(Packet::SubAck(SubAck { pkid, return_codes }, None));
            return Ok(());
        }
        if !refused_at.is_empty() {
            self.suback_refusals.insert(pkid, refused_at);
        }
        let forwarded = Subscribe {
            pkid,
            filters: allowed,
        };
        self.to_router.push(Packet::Subscribe(forwarded, None));
        Ok(())
    }

    fn room_for(&self, filter: &str) -> Result<(), Refused> {
        let held = self.filters.contains(filter);
        if held || self.filters.len() < self.shared.limits.max_subscriptions {
            Ok(())
        } else {
            Err(Refused::TooManySubscriptions)
        }
    }

    fn merge_refusals(&mut self, mut suback: SubAck) -> SubAck {
        if let Some(refused_at) = self.suback_refusals.remove(&suback.pkid) {
            for position in refused_at {
                let at = position.min(suback.return_codes.len());
                suback.return_codes.insert(at, SubscribeReasonCode::Failure);
            }
        }
        suback
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let pkid = unsubscribe.pkid;
        let mut held: Vec<String> = unsubscribe.filters;
        held.retain(|filter| self.filters.remove(filter));
        if held.is_empty() {
            self.to_client.push(unsuback(pkid));
            return;
        }
        self.unsuback_owed.insert(pkid, held.len());
        let forwarded = Unsubscribe {
            pkid,
            filters: held,
        };
        self.to_router.push(Packet::Unsubscribe(forwarded, None));
    }

    fn router_unsuback(&mut self, answer: UnsubAck) {
        let pkid = answer.pkid;
        let Some(owed) = self.unsuback_owed.get_mut(&pkid) else {
            self.to_client.push(Packet::UnsubAck(answer, None));
            return;
        };
        *owed -= 1;
        if *owed == 0 {
            self.unsuback_owed.remove(&pkid);
            self.to_client.push(unsuback(pkid));
        }
    }

    /// Hands what was read to the router: every packet into the link's
    /// buffer, then one notification. (`LinkTx::send` never waits: it is
    /// an async fn around a channel send, done on its first poll.)
    fn flush_router(&mut self) -> Result<(), End> {
        let mut packets = std::mem::take(&mut self.to_router);
        let Some(last) = packets.pop() else {
            return Ok(());
        };
        self.tx.buffer().extend(packets);
        match self.tx.send(last).now_or_never() {
            Some(Ok(_)) => Ok(()),
            _ => Err(End::RouterClosed),
        }
    }

    async fn write_out(&mut self) -> Result<(), End> {
        if self.to_client.is_empty() {
            return Ok(());
        }
        let packets = std::mem::take(&mut self.to_client);
        match tokio::time::timeout(WRITE_TIMEOUT, write_packets(&mut self.stream, packets)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::Frame(error)),
            Err(_) => Err(End::WriteTimeout),
        }
    }

    /// Publishes an error report to the device's `error` topic (devices
    /// only, at most one per `REPORT_INTERVAL`).
    fn report(&mut self, topic: &str, reason: &str, detail: &str) {
        let Scope::Device(_) = self.admitted.scope else {
            return;
        };
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|last| now.duration_since(last) < REPORT_INTERVAL)
        {
            return;
        }
        self.last_report = Some(now);
        let report = protocol::ErrorReport {
            topic: topic.to_owned(),
            reason: format!("{reason}: {detail}"),
        };
        // invariant: ErrorReport serializes.
        let payload = serde_json::to_vec(&report).expect("report serializes");
        let error_topic = self.device_topic(protocol::Channel::Error);
        let publish = Publish::new(error_topic.into_bytes(), payload, false);
        self.to_router.push(Packet::Publish(publish, None));
    }

    fn device_topic(&self, channel: protocol::Channel) -> String {
        match &self.admitted.scope {
            Scope::Device(id) => protocol::topic::for_device(id, channel),
            Scope::Tool => String::new(),
        }
    }

    fn count_refusal(&self, reason: &str) {
        self.shared
            .metrics
            .edge_refused
            .with_label_values(&[self.listener.name, reason])
            .inc();
    }

    /// Will (on an abnormal end), router disconnect, socket close.
    async fn finish(&mut self, end: End) {
        self.shared
            .metrics
            .edge_disconnects
            .with_label_values(&[self.listener.name, end.label()])
            .inc();
        tracing::debug!(client = %self.admitted.client_id, reason = end.label(), "session ended");
        if !matches!(end, End::RouterClosed) {
            // What the client sent before the session ended (its DISCONNECT
            // often comes in the same read) was admitted: it goes on.
            if end.fires_will() {
                self.push_will();
            }
            let disconnect = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            self.to_router.push(Packet::Disconnect(disconnect, None));
            let _ = self.flush_router();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        let registry = &self.shared.registry;
        let key = &self.admitted.session_key;
        if !self.clean_session {
            registry.persist_filters(key, std::mem::take(&mut self.filters));
        }
        let spent = std::mem::replace(&mut self.bucket, TokenBucket::unlimited());
        registry.keep_bucket(key, spent);
    }

    fn push_will(&mut self) {
        let Some(will) = self.will.take() else {
            return;
        };
        if broker::reaches_ingest(&String::from_utf8_lossy(&will.topic)) {
            // Never waits: a closing session must not hang on the window.
            let bytes = message_bytes(&will.topic, &will.message);
            self.shared.window.force_admit(bytes);
        }
        let publish = Publish::new(will.topic, will.message, will.retain);
        self.to_router.push(Packet::Publish(publish, None));
    }
}

/// A publish `handle` could not pass on at once.
enum Pending {
    /// Over the connection's rate: its token comes in `wait`.
    Token {
        wait: Duration,
        publish: Publish,
        to_ingest: bool,
    },
    /// The ingest window has no room for its `bytes` yet.
    Room { bytes: u64, publish: Publish },
}

/// The link's next notification: `None` once the router dropped the link.
/// (Mapped here so the session's future keeps no `LinkError`, which is
/// larger than everything else it holds.)
async fn next_notification(rx: &mut LinkRx) -> Option<Option<Notification>> {
    rx.next().await.ok()
}

/// A publish's QoS and packet id. rumqttd keeps both fields private; its
/// own serialization carries them in its first three bytes. Only refused
/// publishes need them, so the copy it makes does not matter.
fn qos_and_pkid(publish: &Publish) -> (u8, u16) {
    let head = publish.serialize();
    (
        (head[0] >> 1) & 0b11,
        u16::from_be_bytes([head[1], head[2]]),
    )
}

fn unsuback(pkid: u16) -> Packet {
    let unsuback = UnsubAck {
        pkid,
        reasons: Vec::new(),
    };
    Packet::UnsubAck(unsuback, None)
}
