//! The NATS source: a JetStream durable pull consumer, explicit acks.
//!
//! NATS's MQTT stores every QoS 1 message a client publishes in the stream
//! `$MQTT_msgs` (subject `$MQTT.msgs.` + the topic with `/` as `.`) and
//! sends the PUBACK only after JetStream confirmed that store; the stream
//! keeps a message until every consumer interested in it acknowledged it.
//! The district's durable consumer on `$MQTT.msgs.yz.v1.>` is that
//! interest, so what a hub had acknowledged waits for the district however
//! long it is away. (A stream of our own over `yz.v1.>` would capture the
//! messages without the PUBACK waiting for it, and lose those published
//! while its leader moves.) If no MQTT client has connected yet, the
//! district creates `$MQTT_msgs` as NATS would, so the interest exists
//! before the first hub publishes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;

use super::{apply, Parts, SessionEnd};
use crate::message::Incoming;
use crate::settings::Source;

/// The stream NATS's MQTT keeps QoS 1 messages in, and its subjects.
const MQTT_STREAM: &str = "$MQTT_msgs";
const MQTT_SUBJECTS: &str = "$MQTT.msgs.>";
const MQTT_PREFIX: &str = "$MQTT.msgs.";

/// How long one pull waits for messages.
const PULL_WAIT: Duration = Duration::from_millis(500);
/// How often the consumer's pending count is read.
const PENDING_EVERY: Duration = Duration::from_secs(1);

fn retry(what: &str) -> impl Fn(&dyn std::fmt::Display) -> SessionEnd + '_ {
    move |error| SessionEnd::Retry(format!("{what}: {error}"))
}

pub(super) async fn session(parts: &Parts) -> SessionEnd {
    let settings = &parts.settings;
    let client = match connect(parts).await {
        Ok(client) => client,
        Err(end) => return end,
    };
    let js = jetstream::new(client.clone());
    let mut consumer = match consumer(&js, settings).await {
        Ok(consumer) => consumer,
        Err(end) => return end,
    };
    parts.intake.metrics.source_connected.set(1);
    parts.ready.store(true, Ordering::Relaxed);
    tracing::info!(stream = %settings.stream, consumer = %settings.consumer, "consuming");
    let mut pending_read = Instant::now() - PENDING_EVERY;
    loop {
        if pending_read.elapsed() >= PENDING_EVERY {
            pending_read = Instant::now();
            if let Ok(info) = consumer.info().await {
                let pending = info.num_pending + info.num_ack_pending as u64;
                parts.intake.metrics.source_pending.set(pending as i64);
            }
        }
        let batch = tokio::select! {
            _ = parts.stop.cancelled() => return SessionEnd::Stopped,
            batch = pull(&consumer, settings.batch) => batch,
        };
        let messages = match batch {
            Ok(messages) => messages,
            Err(end) => return end,
        };
        if messages.is_empty() {
            continue;
        }
        let incoming = messages
            .iter()
            .map(|m| Incoming {
                topic: topic_of(m.subject.as_str()),
                payload: m.payload.to_vec(),
            })
            .collect();
        if let Err(error) = apply(&parts.intake, incoming).await {
            return SessionEnd::Fatal(error);
        }
        for message in &messages {
            if let Err(error) = message.ack().await {
                return retry("ack")(&error);
            }
        }
        if let Err(error) = client.flush().await {
            return retry("flush")(&error);
        }
    }
}

async fn connect(parts: &Parts) -> Result<async_nats::Client, SessionEnd> {
    let settings = &parts.settings;
    let connected = parts.intake.metrics.source_connected.clone();
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(settings.connect_timeout)
        .event_callback(move |event| {
            let connected = connected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => connected.set(1),
                    async_nats::Event::Disconnected => connected.set(0),
                    _ => {}
                }
                tracing::info!(%event, "nats");
            }
        });
    if let Some((user, password)) = &settings.credentials {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let urls: Vec<async_nats::ServerAddr> = settings
        .endpoints
        .iter()
        .filter_map(|e| format!("nats://{}:{}", e.host, e.port).parse().ok())
        .collect();
    tokio::select! {
        _ = parts.stop.cancelled() => Err(SessionEnd::Stopped),
        client = options.connect(urls) => client.map_err(|e| retry("connect")(&e)),
    }
}

/// The durable consumer, created with the stream if need be.
async fn consumer(js: &Context, settings: &Source) -> Result<PullConsumer, SessionEnd> {
    let subjects = match settings.stream.as_str() {
        MQTT_STREAM => MQTT_SUBJECTS.to_string(),
        _ => settings.subject.clone(),
    };
    let stream = js
        .get_or_create_stream(StreamConfig {
            name: settings.stream.clone(),
            subjects: vec![subjects],
            retention: RetentionPolicy::Interest,
            storage: StorageType::File,
            num_replicas: settings.stream_replicas,
            ..StreamConfig::default()
        })
        .await
        .map_err(|e| retry("stream")(&e))?;
    stream
        .get_or_create_consumer(
            &settings.consumer,
            pull::Config {
                durable_name: Some(settings.consumer.clone()),
                filter_subject: settings.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                deliver_policy: DeliverPolicy::All,
                max_ack_pending: (settings.batch * 4) as i64,
                ..pull::Config::default()
            },
        )
        .await
        .map_err(|e| retry("consumer")(&e))
}

/// Up to `max` messages, waiting at most `PULL_WAIT` for the first.
async fn pull(consumer: &PullConsumer, max: usize) -> Result<Vec<jetstream::Message>, SessionEnd> {
    let mut batch = consumer
        .batch()
        .max_messages(max)
        .expires(PULL_WAIT)
        .messages()
        .await
        .map_err(|e| retry("pull")(&e))?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message.map_err(|e| retry("pull")(&e))?);
    }
    Ok(messages)
}

/// The MQTT topic of a subject: `$MQTT.msgs.yz.v1.c1.p1.event` →
/// `yz/v1/c1/p1/event` (NATS's MQTT refuses `.` in topics, so the mapping
/// is one to one).
pub fn topic_of(subject: &str) -> String {
    subject
        .strip_prefix(MQTT_PREFIX)
        .unwrap_or(subject)
        .replace('.', "/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_map_back_to_topics() {
        for (subject, topic) in [
            ("$MQTT.msgs.yz.v1.c1.p1.event", "yz/v1/c1/p1/event"),
            ("$MQTT.msgs.yz.v1.c1.booking", "yz/v1/c1/booking"),
            ("yz.v1.c1.p1.telemetry.raw", "yz/v1/c1/p1/telemetry/raw"),
        ] {
            assert_eq!(super::topic_of(subject), topic);
        }
    }
}
