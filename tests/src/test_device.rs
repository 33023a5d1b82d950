//! An MQTT device client over mTLS with its issued credentials (rumqttc),
//! whose event loop reports to a channel; and telemetry payloads.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use protocol::api::Provisioned;
use protocol::{Channel, DeviceKind};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::now_ms;

/// What a test device's event loop reports.
#[derive(Debug)]
pub enum DeviceEvent {
    Connected,
    Message { topic: String, payload: Vec<u8> },
    PubAck(u16),
    SubAck(Vec<rumqttc::SubscribeReasonCode>),
    Error(String),
}

/// How a test device connects.
#[derive(Clone)]
pub struct DeviceOptions {
    pub client_id: Option<String>,
    pub keepalive: Duration,
    /// Send the client certificate (false: TLS without one).
    pub with_certificate: bool,
    pub will: bool,
    /// Set TCP_NODELAY on the socket (most device stacks leave Nagle on).
    pub tcp_nodelay: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            client_id: None,
            keepalive: Duration::from_secs(30),
            with_certificate: true,
            will: true,
            tcp_nodelay: false,
        }
    }
}

/// An MQTT device client over mTLS with its issued credentials. Its event
/// loop runs in a task that reports to `events`.
pub struct TestDevice {
    pub id: String,
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<DeviceEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDevice {
    pub fn connect(creds: &Provisioned, port: u16, options: DeviceOptions) -> TestDevice {
        let id = creds.id.clone();
        let client_id = options.client_id.clone().unwrap_or_else(|| id.clone());
        let mut mqtt = MqttOptions::new(client_id, "localhost", port);
        mqtt.set_max_packet_size(256 * 1024, 256 * 1024)
            .set_keep_alive(options.keepalive)
            .set_clean_session(true)
            .set_credentials(creds.mqtt_username.clone(), creds.mqtt_password.clone());
        if options.will {
            let will = rumqttc::LastWill::new(
                protocol::topic::for_device(&id, Channel::Status),
                protocol::STATUS_OFFLINE,
                QoS::AtLeastOnce,
                true,
            );
            mqtt.set_last_will(will);
        }
        let client_auth = options.with_certificate.then(|| {
            (
                creds.certificate.clone().into_bytes(),
                creds.private_key.clone().into_bytes(),
            )
        });
        mqtt.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: creds.ca_certificate.clone().into_bytes(),
            alpn: None,
            client_auth,
        }));
        let (client, mut eventloop) = AsyncClient::new(mqtt, 1000);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(options.tcp_nodelay);
        eventloop.set_network_options(network);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        TestDevice {
            id,
            client,
            events,
            task,
        }
    }

    /// Connects with default options, waits for the CONNACK and says hello
    /// (subscriptions, status, birth with a 30 s keepalive).
    pub async fn online(creds: &Provisioned, port: u16, kind: DeviceKind) -> Result<TestDevice> {
        TestDevice::online_with(creds, port, kind, DeviceOptions::default()).await
    }

    /// `online` with options.
    pub async fn online_with(
        creds: &Provisioned,
        port: u16,
        kind: DeviceKind,
        options: DeviceOptions,
    ) -> Result<TestDevice> {
        let mut device = TestDevice::connect(creds, port, options);
        device.connected(Duration::from_secs(5)).await?;
        device.hello(kind, 30).await?;
        Ok(device)
    }

    /// Waits for the next CONNACK (or fails on the first error).
    pub async fn connected(&mut self, timeout: Duration) -> Result<()> {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                match event {
                    DeviceEvent::Connected => return Ok(()),
                    DeviceEvent::Error(e) => bail!("connection failed: {e}"),
                    _ => {}
                }
            }
            bail!("event loop ended")
        };
        tokio::time::timeout(timeout, wait)
            .await
            .context("connect timed out")?
    }

    /// Waits for a connection error (the broker closed the socket).
    pub async fn disconnected(&mut self, timeout: Duration) -> Result<String> {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if let DeviceEvent::Error(e) = event {
                    return Ok(e);
                }
            }
            bail!("event loop ended")
        };
        tokio::time::timeout(timeout, wait)
            .await
            .context("still connected")?
    }

    /// Waits for a message on `topic`.
    pub async fn message_on(&mut self, topic: &str, timeout: Duration) -> Result<Vec<u8>> {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if let DeviceEvent::Message { topic: t, payload } = event {
                    if t == topic {
                        return Ok(payload);
                    }
                }
            }
            bail!("event loop ended")
        };
        tokio::time::timeout(timeout, wait)
            .await
            .with_context(|| format!("no message on {topic}"))?
    }

    /// Waits for the next SUBACK's return codes.
    pub async fn next_suback(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<rumqttc::SubscribeReasonCode>> {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if let DeviceEvent::SubAck(codes) = event {
                    return Ok(codes);
                }
            }
            bail!("event loop ended")
        };
        tokio::time::timeout(timeout, wait)
            .await
            .context("no SUBACK")?
    }

    /// Waits for the hub's next report on the device's `error` topic.
    pub async fn next_error(&mut self, timeout: Duration) -> Result<protocol::ErrorReport> {
        let topic = self.topic(Channel::Error);
        let payload = self.message_on(&topic, timeout).await?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// Waits for the next command on the device's `cmd` topic.
    pub async fn next_command(&mut self, timeout: Duration) -> Result<protocol::Command> {
        let topic = self.topic(Channel::Cmd);
        let payload = self.message_on(&topic, timeout).await?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// Answers a command on `cmd/ack`.
    pub async fn ack(&self, id: &str, ok: bool, error: Option<&str>) -> Result<()> {
        let ack = protocol::CommandAck {
            id: id.into(),
            ok,
            error: error.map(Into::into),
        };
        self.publish(Channel::CmdAck, serde_json::to_vec(&ack)?)
            .await
    }

    /// Publishes an event `{"id","ts","seq","type", ...body}`, stamped now.
    pub async fn event(&self, id: &str, seq: u64, event_type: &str, body: Value) -> Result<()> {
        let mut map = match body {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        map.insert("id".into(), id.into());
        map.insert("ts".into(), now_ms().into());
        map.insert("seq".into(), seq.into());
        map.insert("type".into(), event_type.into());
        self.publish(Channel::Event, serde_json::to_vec(&map)?)
            .await
    }

    /// The device's own topic for `channel`.
    pub fn topic(&self, channel: Channel) -> String {
        protocol::topic::for_device(&self.id, channel)
    }

    /// Subscribes to what the hub sends the device, then publishes status
    /// and birth, as contract v1 asks after every connect.
    pub async fn hello(&self, kind: DeviceKind, keepalive_secs: u16) -> Result<()> {
        for channel in [Channel::Cmd, Channel::EventAck, Channel::Error] {
            self.client
                .subscribe(self.topic(channel), QoS::AtLeastOnce)
                .await?;
        }
        self.client
            .publish(
                self.topic(Channel::Status),
                QoS::AtLeastOnce,
                true,
                "online",
            )
            .await?;
        let birth = protocol::Birth {
            kind,
            fw: "1.0.0".into(),
            model: "e2e".into(),
            keepalive: Some(keepalive_secs),
        };
        self.client
            .publish(
                self.topic(Channel::Birth),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&birth)?,
            )
            .await?;
        Ok(())
    }

    pub async fn publish(&self, channel: Channel, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(self.topic(channel), QoS::AtLeastOnce, false, payload.into())
            .await?;
        Ok(())
    }

    /// Stops polling the event loop: the socket stays open but silent.
    pub fn freeze(&self) {
        self.task.abort();
    }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<DeviceEvent>) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => DeviceEvent::Connected,
            Ok(Event::Incoming(Packet::Publish(p))) => DeviceEvent::Message {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
            },
            Ok(Event::Incoming(Packet::PubAck(ack))) => DeviceEvent::PubAck(ack.pkid),
            Ok(Event::Incoming(Packet::SubAck(ack))) => DeviceEvent::SubAck(ack.return_codes),
            Ok(_) => continue,
            Err(error) => {
                let _ = tx.send(DeviceEvent::Error(error.to_string()));
                // Do not hammer the broker with reconnects.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// Telemetry payload with `seq` and fields, stamped now.
pub fn telemetry(seq: u64, fields: &[(&str, Value)]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("ts".into(), now_ms().into());
    map.insert("seq".into(), seq.into());
    for (name, value) in fields {
        map.insert((*name).into(), value.clone());
    }
    serde_json::to_vec(&map).expect("json")
}
