//! A subscriber of the hub's upstream broker: a persistent MQTT session
//! (QoS 1, `clean_session = false`) on `yz/v1/#`, as a district service
//! would hold, collecting every message it is given (duplicates included),
//! and what the tests read from them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;

/// One message as received.
#[derive(Debug, Clone)]
pub struct UpstreamMessage {
    pub topic: String,
    pub payload: Value,
}

impl UpstreamMessage {
    /// The message id (`payload.id`).
    pub fn id(&self) -> &str {
        self.payload["id"].as_str().unwrap_or_default()
    }

    /// The last topic level: `event`, `alarm`, `twin`, `telemetry`, `raw`
    /// (`telemetry/raw`), `booking`, `visits`.
    pub fn what(&self) -> &str {
        self.topic.rsplit('/').next().unwrap_or_default()
    }
}

/// How a subscriber connects.
#[derive(Clone)]
pub struct SubscriberOptions {
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
}

/// A persistent-session subscriber; its event loop runs in a task and
/// reconnects by itself.
pub struct UpstreamSubscriber {
    options: SubscriberOptions,
    received: Arc<Mutex<Vec<UpstreamMessage>>>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl UpstreamSubscriber {
    /// Connects, subscribes to `yz/v1/#` at QoS 1 and waits for the SUBACK.
    pub async fn connect(options: SubscriberOptions) -> Result<UpstreamSubscriber> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let (client, task) = session(&options, received.clone()).await?;
        Ok(UpstreamSubscriber {
            options,
            received,
            client,
            task,
        })
    }

    /// Drops the connection without a DISCONNECT (a crash) and connects
    /// again under the same client id: the broker kept the session and
    /// what arrived meanwhile.
    pub async fn reconnect(&mut self) -> Result<()> {
        self.task.abort();
        let (client, task) = session(&self.options, self.received.clone()).await?;
        self.client = client;
        self.task = task;
        Ok(())
    }

    /// Publishes `payload` on `topic` at QoS 1 (a raw publish on the
    /// upstream, as anyone holding the broker's credentials could).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        Ok(())
    }

    /// Every message received so far, in order, duplicates included.
    pub fn messages(&self) -> Vec<UpstreamMessage> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The messages so far, by id.
    pub fn by_id(&self) -> Received {
        Received::of(&self.messages())
    }
}

impl Drop for UpstreamSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    options: &SubscriberOptions,
    received: Arc<Mutex<Vec<UpstreamMessage>>>,
) -> Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let mut mqtt = MqttOptions::new(options.client_id.clone(), "127.0.0.1", options.port);
    mqtt.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1024 * 1024, 1024 * 1024);
    if let Some((username, password)) = &options.credentials {
        mqtt.set_credentials(username.clone(), password.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 64);
    client.subscribe("yz/v1/#", QoS::AtLeastOnce).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll()).await;
        match event {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => keep(&received, &publish),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => bail!("the upstream subscriber could not connect: {error}"),
            Err(_) => bail!("no SUBACK from the upstream within 10 s"),
        }
    }
    let task = tokio::spawn(drive(eventloop, received));
    Ok((client, task))
}

async fn drive(mut eventloop: EventLoop, received: Arc<Mutex<Vec<UpstreamMessage>>>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => keep(&received, &publish),
            Ok(_) => {}
            // rumqttc reconnects on the next poll; do not spin meanwhile.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn keep(received: &Mutex<Vec<UpstreamMessage>>, publish: &rumqttc::Publish) {
    let payload = serde_json::from_slice(&publish.payload).unwrap_or(Value::Null);
    let message = UpstreamMessage {
        topic: publish.topic.clone(),
        payload,
    };
    received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(message);
}

/// Messages grouped by id.
pub struct Received {
    /// id → the first copy and how many copies came.
    pub by_id: BTreeMap<String, (UpstreamMessage, usize)>,
    /// Copies beyond the first, in all.
    pub duplicates: usize,
}

impl Received {
    pub fn of(messages: &[UpstreamMessage]) -> Received {
        let mut by_id: BTreeMap<String, (UpstreamMessage, usize)> = BTreeMap::new();
        for message in messages {
            by_id
                .entry(message.id().to_string())
                .and_modify(|(_, copies)| *copies += 1)
                .or_insert((message.clone(), 1));
        }
        let duplicates = messages.len() - by_id.len();
        Received { by_id, duplicates }
    }

    /// The distinct messages on topics ending in one of `what`.
    pub fn on(&self, what: &[&str]) -> Vec<&UpstreamMessage> {
        self.by_id
            .values()
            .map(|(message, _)| message)
            .filter(|message| what.contains(&message.what()))
            .collect()
    }

    /// How many distinct messages per last topic level.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (message, _) in self.by_id.values() {
            *counts.entry(message.what().to_string()).or_default() += 1;
        }
        counts
    }
}
