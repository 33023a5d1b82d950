//! Three MQTT client stacks behind one interface, so a conformance
//! scenario is written once and run with each: rumqttc (in this process),
//! the mosquitto command-line clients and paho-mqtt (Python), both as real
//! child processes.
//!
//! A client runs a `Plan`: connect over mTLS, subscribe (QoS 1), publish,
//! then leave with DISCONNECT or stay until told to leave (`disconnect`)
//! or killed without a word (`kill`). What it sees comes back as `Event`s;
//! a client never reconnects by itself (mosquitto's tools do: for them a
//! new CONNECT is reported as `Closed`, since the previous connection was
//! lost).
//!
//! The stacks' limits are data (`Stack::min_keepalive`,
//! `Stack::publishes_while_subscribed`), so scenarios adapt instead of
//! branching per stack.

mod mosquitto;
mod paho;
mod process;
mod rumqttc_driver;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use protocol::api::Provisioned;
use protocol::{Channel, DeviceKind};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{eventually, write_credentials, CredentialFiles, HubProcess};

/// Longest a client may take for a whole plan that does not stay.
const PLAN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Rumqttc,
    Mosquitto,
    Paho,
}

impl Stack {
    pub const ALL: [Stack; 3] = [Stack::Rumqttc, Stack::Mosquitto, Stack::Paho];

    pub fn name(self) -> &'static str {
        match self {
            Stack::Rumqttc => "rumqttc",
            Stack::Mosquitto => "mosquitto",
            Stack::Paho => "paho",
        }
    }

    /// A short tag for device ids.
    fn tag(self) -> &'static str {
        match self {
            Stack::Rumqttc => "rc",
            Stack::Mosquitto => "mq",
            Stack::Paho => "ph",
        }
    }

    /// The smallest keepalive the stack lets one configure (mosquitto's
    /// tools refuse anything between 0 and 4 s, 0 included).
    pub fn min_keepalive(self) -> u16 {
        match self {
            Stack::Mosquitto => 5,
            Stack::Rumqttc | Stack::Paho => 0,
        }
    }

    /// Whether one connection can both subscribe and publish
    /// (`mosquitto_sub` only subscribes, `mosquitto_pub` only publishes).
    pub fn publishes_while_subscribed(self) -> bool {
        self != Stack::Mosquitto
    }

    /// Starts a client running `plan`.
    pub fn start(self, plan: &Plan) -> Result<Client> {
        let (tx, events) = mpsc::unbounded_channel();
        let end = match self {
            Stack::Rumqttc => rumqttc_driver::start(plan, tx)?,
            Stack::Mosquitto => mosquitto::start(plan, tx)?,
            Stack::Paho => paho::start(plan, tx)?,
        };
        Ok(Client {
            stack: self,
            subscribes: !plan.subscribe.is_empty(),
            events,
            seen: Vec::new(),
            end,
        })
    }
}

/// A message to publish (or to leave as the will).
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
}

/// What a client does, whatever its stack.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub host: String,
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_id: String,
    pub username: String,
    pub password: String,
    /// Seconds; 0 = none.
    pub keepalive: u16,
    pub clean_session: bool,
    pub will: Option<Message>,
    /// Topic filters, subscribed at QoS 1 right after CONNACK.
    pub subscribe: Vec<String>,
    /// Published in order after the subscriptions, each acknowledged
    /// (QoS 1) or sent (QoS 0) before the next.
    pub publish: Vec<Message>,
    /// Stay connected after the last step (until `disconnect` or `kill`).
    pub stay: bool,
}

impl Plan {
    pub fn subscribe(mut self, topic: String) -> Plan {
        self.subscribe.push(topic);
        self
    }

    pub fn publish(mut self, message: Message) -> Plan {
        self.publish.push(message);
        self
    }

    pub fn will(mut self, message: Message) -> Plan {
        self.will = Some(message);
        self
    }

    pub fn keepalive(mut self, secs: u16) -> Plan {
        self.keepalive = secs;
        self
    }

    /// Clean session false.
    pub fn persistent(mut self) -> Plan {
        self.clean_session = false;
        self
    }

    pub fn stay(mut self) -> Plan {
        self.stay = true;
        self
    }

    /// Dial `host:port` instead of the hub (a relay).
    pub fn via(mut self, host: &str, port: u16) -> Plan {
        self.host = host.into();
        self.port = port;
        self
    }
}

/// What a client reports. paho's script prints these as JSON lines; the
/// other stacks are translated into them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `session_present` is `None` where the stack does not tell.
    Connack {
        code: u8,
        session_present: Option<bool>,
    },
    Suback,
    Puback,
    /// A QoS 0 publish written.
    Sent,
    /// `payload` is `None` where the stack shows only the topic.
    Message {
        topic: String,
        payload: Option<String>,
        #[serde(default)]
        retain: bool,
    },
    /// The connection was lost without the client leaving.
    Closed {
        reason: String,
    },
    /// No MQTT session came about (TLS refused, socket error).
    Failed {
        error: String,
    },
    /// The client ended.
    Exited,
    /// Anything else the client printed (kept for failure messages).
    Output {
        line: String,
    },
}

/// The CONNACK a client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    pub code: u8,
    pub session_present: Option<bool>,
}

/// How a client that ran to its end fared.
#[derive(Debug)]
pub struct Outcome {
    pub connack: Option<ConnAck>,
    pub pubacks: usize,
    pub sent: usize,
    pub closed: bool,
    pub failed: bool,
    /// Topics of the messages received.
    pub received: Vec<String>,
    /// Everything the client reported, for failure messages.
    pub transcript: String,
}

/// How a client is ended.
enum End {
    Process(tokio::process::Child),
    Task {
        task: tokio::task::JoinHandle<()>,
        client: rumqttc::AsyncClient,
    },
}

/// A running client.
pub struct Client {
    pub stack: Stack,
    subscribes: bool,
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
    end: End,
}

impl Client {
    /// Waits until an event matching `wanted` has been seen (at any time
    /// since the start); events are not consumed.
    pub async fn seen(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.seen.iter().find(|e| wanted(e)) {
                return Ok(found.clone());
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.seen.push(event),
                Ok(None) => bail!(
                    "{}: ended before {what}:\n{}",
                    self.stack.name(),
                    self.log()
                ),
                Err(_) => bail!(
                    "{}: no {what} within {timeout:?}:\n{}",
                    self.stack.name(),
                    self.log()
                ),
            }
        }
    }

    /// Waits for the CONNACK and, if accepted, for the SUBACK.
    pub async fn ready(&mut self) -> Result<ConnAck> {
        let timeout = Duration::from_secs(10);
        let connack = match self
            .seen("CONNACK", timeout, |e| {
                matches!(e, Event::Connack { .. } | Event::Failed { .. })
            })
            .await?
        {
            Event::Connack {
                code,
                session_present,
            } => ConnAck {
                code,
                session_present,
            },
            other => bail!("{}: {other:?}\n{}", self.stack.name(), self.log()),
        };
        if connack.code == 0 && self.subscribes {
            self.seen("SUBACK", timeout, |e| *e == Event::Suback)
                .await?;
        }
        Ok(connack)
    }

    /// The CONNACK, once `ready` has seen it.
    pub fn connack(&self) -> Option<ConnAck> {
        self.outcome().connack
    }

    /// Waits for a message on `topic`; its payload if the stack shows it.
    pub async fn message_on(&mut self, topic: &str, timeout: Duration) -> Result<Option<String>> {
        let found = self
            .seen(
                &format!("message on {topic}"),
                timeout,
                |e| matches!(e, Event::Message { topic: t, .. } if t == topic),
            )
            .await?;
        match found {
            Event::Message { payload, .. } => Ok(payload),
            _ => unreachable!("matched a message"),
        }
    }

    /// Waits until the client lost its connection.
    pub async fn closed(&mut self, timeout: Duration) -> Result<()> {
        self.seen("connection lost", timeout, |e| {
            matches!(e, Event::Closed { .. })
        })
        .await
        .map(|_| ())
    }

    /// Whether the client has lost its connection so far.
    pub fn has_closed(&mut self) -> bool {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        self.seen.iter().any(|e| matches!(e, Event::Closed { .. }))
    }

    /// Ends the client without DISCONNECT: SIGKILL for a process; for
    /// rumqttc its event loop is dropped, which closes the socket.
    pub fn kill(&mut self) {
        match &mut self.end {
            End::Process(child) => {
                let _ = child.start_kill();
            }
            End::Task { task, .. } => task.abort(),
        }
    }

    /// Leaves with DISCONNECT (SIGTERM makes both tools do so) and waits
    /// for the client to end.
    pub async fn disconnect(self) -> Result<Outcome> {
        match &self.end {
            End::Process(child) => {
                let pid = child.id().context("the client has already exited")?;
                process::until_idle(pid, Duration::from_secs(2)).await;
                let status = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()?;
                anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
            }
            End::Task { client, .. } => client.disconnect().await?,
        }
        self.finish().await
    }

    /// Waits for a plan that does not stay to end.
    pub async fn finish(mut self) -> Result<Outcome> {
        self.seen("the end", PLAN_TIMEOUT, |e| *e == Event::Exited)
            .await?;
        Ok(self.outcome())
    }

    fn outcome(&self) -> Outcome {
        let count = |wanted: &Event| self.seen.iter().filter(|e| *e == wanted).count();
        let connack = self.seen.iter().find_map(|e| match e {
            Event::Connack {
                code,
                session_present,
            } => Some(ConnAck {
                code: *code,
                session_present: *session_present,
            }),
            _ => None,
        });
        Outcome {
            connack,
            pubacks: count(&Event::Puback),
            sent: count(&Event::Sent),
            closed: self.seen.iter().any(|e| matches!(e, Event::Closed { .. })),
            failed: self.seen.iter().any(|e| matches!(e, Event::Failed { .. })),
            received: self
                .seen
                .iter()
                .filter_map(|e| match e {
                    Event::Message { topic, .. } => Some(topic.clone()),
                    _ => None,
                })
                .collect(),
            transcript: self.log(),
        }
    }

    fn log(&self) -> String {
        let lines: Vec<String> = self.seen.iter().map(|e| format!("  {e:?}")).collect();
        lines.join("\n")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A provisioned device driven by one stack.
pub struct Device<'a> {
    pub stack: Stack,
    pub hub: &'a HubProcess,
    pub id: String,
    pub creds: Provisioned,
    files: CredentialFiles,
}

impl<'a> Device<'a> {
    /// Provisions device `id` (a piano) for `stack`.
    pub async fn provision(hub: &'a HubProcess, stack: Stack, id: &str) -> Result<Device<'a>> {
        let creds = hub.provision(id, DeviceKind::Piano).await?;
        let files = write_credentials(&creds)?;
        Ok(Device {
            stack,
            hub,
            id: id.into(),
            creds,
            files,
        })
    }

    /// Another device for the same stack, named after this one.
    pub async fn peer(&self, suffix: &str) -> Result<Device<'a>> {
        Device::provision(self.hub, self.stack, &format!("{}{suffix}", self.id)).await
    }

    pub fn topic(&self, channel: Channel) -> String {
        protocol::topic::for_device(&self.id, channel)
    }

    /// The device's own credentials, dialing `127.0.0.1` (the server
    /// certificate is verified against that IP address), clean session,
    /// keepalive 30 s, nothing else.
    pub fn plan(&self) -> Plan {
        Plan {
            host: "127.0.0.1".into(),
            port: self.hub.mqtt_port,
            ca: self.files.ca.clone(),
            cert: self.files.cert.clone(),
            key: self.files.key.clone(),
            client_id: self.id.clone(),
            username: self.creds.mqtt_username.clone(),
            password: self.creds.mqtt_password.clone(),
            keepalive: 30,
            clean_session: true,
            will: None,
            subscribe: Vec::new(),
            publish: Vec::new(),
            stay: false,
        }
    }

    /// `payload` on the device's status topic, retained, QoS 1.
    pub fn status(&self, payload: &str) -> Message {
        self.message(Channel::Status, payload.into(), 1, true)
    }

    /// The will of contract v1: `offline`, retained, QoS 1.
    pub fn offline_will(&self) -> Message {
        self.status(protocol::STATUS_OFFLINE)
    }

    /// Telemetry with `seq` and `key_presses`.
    pub fn telemetry(&self, seq: u64, key_presses: u64, qos: u8) -> Message {
        let payload = json!({"ts": crate::now_ms(), "seq": seq, "key_presses": key_presses});
        self.message(Channel::Telemetry, payload.to_string(), qos, false)
    }

    pub fn message(&self, channel: Channel, payload: String, qos: u8, retain: bool) -> Message {
        Message {
            topic: self.topic(channel),
            payload,
            qos,
            retain,
        }
    }

    pub fn start(&self, plan: &Plan) -> Result<Client> {
        self.stack.start(plan)
    }

    /// Runs a plan that does not stay to its end.
    pub async fn run(&self, plan: &Plan) -> Result<Outcome> {
        anyhow::ensure!(!plan.stay, "a plan that stays never ends");
        self.start(plan)?.finish().await
    }

    /// Starts a plan that stays and waits until it is connected and
    /// subscribed; fails unless the CONNACK accepted it.
    pub async fn connect(&self, plan: &Plan) -> Result<Client> {
        let mut client = self.start(&plan.clone().stay())?;
        let connack = client.ready().await?;
        anyhow::ensure!(
            connack.code == 0,
            "{}: refused: {connack:?}",
            self.stack.name()
        );
        Ok(client)
    }

    /// Publishes `message` and waits for the device's session to receive a
    /// message on `reply`; its payload where the stack shows it. A stack
    /// that cannot publish while subscribed uses a persistent session:
    /// subscribe and leave, publish (the reply may come then), come back.
    pub async fn publish_and_receive(
        &self,
        message: Message,
        reply: &str,
    ) -> Result<Option<String>> {
        let wait = Duration::from_secs(5);
        if self.stack.publishes_while_subscribed() {
            let plan = self.plan().subscribe(reply.into()).publish(message);
            return self.connect(&plan).await?.message_on(reply, wait).await;
        }
        let plan = self.plan().persistent();
        let subscribed = self.run(&plan.clone().subscribe(reply.into())).await?;
        anyhow::ensure!(
            subscribed.connack.map(|c| c.code) == Some(0),
            "{}",
            subscribed.transcript
        );
        let published = self
            .run_acknowledged(&plan.clone().publish(message))
            .await?;
        if published.received.iter().any(|topic| topic == reply) {
            return Ok(None);
        }
        let mut back = self.connect(&plan.subscribe(reply.into())).await?;
        back.message_on(reply, wait).await
    }

    /// Publishes `online` (retained) on its own connection and waits for
    /// the twin to show the device online.
    pub async fn announce_online(&self) -> Result<()> {
        let plan = self.plan().publish(self.status(protocol::STATUS_ONLINE));
        self.run_acknowledged(&plan).await?;
        self.twin_online(true, Duration::from_secs(5)).await?;
        Ok(())
    }

    /// Runs `plan` and fails unless every QoS 1 publish was acknowledged.
    pub async fn run_acknowledged(&self, plan: &Plan) -> Result<Outcome> {
        let outcome = self.run(plan).await?;
        let qos1 = plan.publish.iter().filter(|m| m.qos == 1).count();
        anyhow::ensure!(
            outcome.connack.map(|c| c.code) == Some(0)
                && outcome.pubacks == qos1
                && !outcome.closed,
            "{}: {} of {qos1} acknowledged:\n{}",
            self.stack.name(),
            outcome.pubacks,
            outcome.transcript
        );
        Ok(outcome)
    }

    /// Waits until the twin's telemetry field `field` reads `value`.
    pub async fn twin_field(&self, field: &str, value: f64) -> Result<()> {
        eventually(
            Duration::from_secs(5),
            &format!("{} ({}) {field} = {value}", self.id, self.stack.name()),
            || async {
                let twin = self.hub.twin(&self.id).await.ok()?;
                (twin["fields"][field]["value"] == json!(value)).then_some(())
            },
        )
        .await
    }

    /// Issues command `op` through the API; its id.
    pub async fn issue_command(&self, op: &str) -> Result<String> {
        let path = format!("/api/v1/devices/{}/commands", self.id);
        let body = json!({"op": op, "expires_in_ms": 60_000});
        let (status, record) = self.hub.post_json(&path, &body).await?;
        anyhow::ensure!(status == 202, "issue {op}: {status} {record}");
        Ok(record["id"].as_str().context("command id")?.to_owned())
    }

    /// Waits until command `id`'s record has `status`; the record.
    pub async fn command_record(&self, id: &str, status: &str) -> Result<serde_json::Value> {
        let path = format!("/api/v1/devices/{}/commands/{id}", self.id);
        eventually(
            Duration::from_secs(5),
            &format!("command {status}"),
            || async {
                let record = self.hub.get_json(&path).await.ok()?;
                (record["status"] == json!(status)).then_some(record)
            },
        )
        .await
    }

    /// Waits until the twin's `online` is `online`; how long that took.
    pub async fn twin_online(&self, online: bool, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        eventually(
            timeout,
            &format!("{} ({}) online = {online}", self.id, self.stack.name()),
            || async {
                let twin = self.hub.twin(&self.id).await.ok()?;
                (twin["online"] == json!(online)).then_some(())
            },
        )
        .await?;
        Ok(start.elapsed())
    }
}

/// Runs `scenario` once per stack, all at once against one hub, each with
/// its own device `{name}{stack tag}`; fails naming every stack that
/// failed.
pub async fn on_stacks<'a, F, Fut>(
    hub: &'a HubProcess,
    stacks: &[Stack],
    name: &str,
    scenario: F,
) -> Result<()>
where
    F: Fn(Device<'a>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let runs = stacks.iter().map(|&stack| {
        let id = format!("{name}{}", stack.tag());
        let scenario = &scenario;
        async move {
            let device = Device::provision(hub, stack, &id).await?;
            scenario(device).await
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let failures: Vec<String> = stacks
        .iter()
        .zip(results)
        .filter_map(|(stack, result)| {
            result
                .err()
                .map(|error| format!("[{}] {error:#}", stack.name()))
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    bail!("{}", failures.join("\n\n"))
}
