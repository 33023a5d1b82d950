//! Helpers for the end-to-end tests: a real hub process on free loopback
//! ports with a temporary data dir (killed by PID however the test ends),
//! an API client, and MQTT device clients over mTLS with issued
//! certificates. mosquitto (`Mosquitto`) comes from device-sim's bench,
//! which starts it the same way. `stacks` drives three client stacks
//! through one interface; `raw_mqtt` writes packets by hand.

pub mod raw_mqtt;
pub mod stacks;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use protocol::api::{ProvisionRequest, Provisioned};
use protocol::{Channel, DeviceKind};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::Value;
use tokio::sync::mpsc;

pub use device_sim::bench::processes::{free_port, Mosquitto};
pub use device_sim::bench::received::sum_metric;

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// Hub config for devices on a simulated clock (`device-sim --start`,
/// `--speed`, or fixed dates in a test): a `ts` window holding the whole
/// calendar (`hub::config::IngestConfig::SIMULATED_CLOCK_WINDOW_SECS`).
pub const SIMULATED_CLOCKS: &str =
    "[ingest]\nmax_ts_behind_secs = 315360000000\nmax_ts_ahead_secs = 315360000000\n";

/// The real clock in Unix ms: the `ts` a device with a good clock sends.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path of a workspace binary built next to this test binary.
pub fn workspace_binary(name: &str) -> PathBuf {
    // invariant: a test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// Options for starting a hub.
#[derive(Clone, Default)]
pub struct HubOptions {
    /// Extra TOML appended to the generated config file.
    pub extra_config: String,
    /// Fixed device port (for restarts); 0 picks a free one.
    pub mqtt_port: u16,
    pub api_port: u16,
    /// Extra environment variables of the hub process.
    pub env: Vec<(String, String)>,
}

impl HubOptions {
    /// A hub whose devices run on a simulated clock.
    pub fn simulated_clocks() -> HubOptions {
        HubOptions {
            extra_config: SIMULATED_CLOCKS.into(),
            ..HubOptions::default()
        }
    }

    /// A hub whose loopback tools listener is on `port` with one user.
    pub fn with_tools_listener(port: u16, username: &str, password: &str) -> Result<HubOptions> {
        let hash = device_sim::bench::processes::hash_password(&workspace_binary("hub"), password)?;
        Ok(HubOptions {
            extra_config: format!(
                "[broker.plain]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
                 users = [{{ username = {username:?}, password_hash = {hash:?} }}]\n"
            ),
            ..HubOptions::default()
        })
    }
}

/// A hub process. Killed (SIGKILL) on drop; its data dir is removed.
pub struct HubProcess {
    child: Option<Child>,
    data: tempfile::TempDir,
    options: HubOptions,
    pub api: String,
    pub mqtt_port: u16,
    http: reqwest::Client,
}

impl HubProcess {
    pub async fn start(options: HubOptions) -> Result<HubProcess> {
        let data = tempfile::tempdir()?;
        let mut hub = HubProcess {
            child: None,
            data,
            options,
            api: String::new(),
            mqtt_port: 0,
            http: reqwest::Client::new(),
        };
        hub.spawn().await?;
        Ok(hub)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn spawn(&mut self) -> Result<()> {
        let config = self.data.path().join("hub.toml");
        let text = format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:{}\"\n[api]\nlisten = \"127.0.0.1:{}\"\n{}\n",
            self.data.path().display().to_string(),
            self.options.mqtt_port,
            self.options.api_port,
            self.options.extra_config
        );
        std::fs::write(&config, text)?;
        let endpoints = self.data.path().join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let log = std::fs::File::create(self.data.path().join("hub.log"))?;
        let child = Command::new(workspace_binary("hub"))
            .arg("--config")
            .arg(&config)
            .env("YIZHAN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("YIZHAN_LOG__FILTER", "info,rumqttd=warn")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning the hub")?;
        self.child = Some(child);
        let start = Instant::now();
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&endpoints) {
                break text;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(20) {
                bail!("the hub did not start ({exited:?}):\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let value: Value = serde_json::from_str(&text)?;
        self.api = format!("http://{}", value["api"].as_str().context("api address")?);
        let mqtt: std::net::SocketAddr = value["mqtt"].as_str().context("mqtt address")?.parse()?;
        self.mqtt_port = mqtt.port();
        let ready = format!("{}/readyz", self.api);
        let http = self.http.clone();
        eventually(Duration::from_secs(10), "/readyz", || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                http.get(ready)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await?;
        Ok(())
    }

    /// The hub's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("hub.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> Result<(std::process::ExitStatus, Duration)> {
        let mut child = self.child.take().context("hub not running")?;
        let start = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                bail!("hub did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `USR1`) to the hub process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Waits for the hub to exit by itself; its status and how long the
    /// wait took.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().context("hub not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                bail!("the hub still runs after {timeout:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The options the next `restart` uses.
    pub fn options_mut(&mut self) -> &mut HubOptions {
        &mut self.options
    }

    /// Starts the hub again on the same data dir and the same ports.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.options.mqtt_port = self.mqtt_port;
        self.options.api_port = self.api.rsplit(':').next().context("api port")?.parse()?;
        self.spawn().await
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.api))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.api))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}{path}", self.api))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.api))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Provisions a device in `center1`/`room1` through the API.
    pub async fn provision(&self, id: &str, kind: DeviceKind) -> Result<Provisioned> {
        self.provision_in(id, kind, "center1", "room1").await
    }

    /// Provisions a device in a given center and room.
    pub async fn provision_in(
        &self,
        id: &str,
        kind: DeviceKind,
        center: &str,
        room: &str,
    ) -> Result<Provisioned> {
        let request = ProvisionRequest {
            id: id.into(),
            center: center.into(),
            room: room.into(),
            kind,
        };
        let response = self.post("/api/v1/devices").json(&request).send().await?;
        anyhow::ensure!(
            response.status() == 201,
            "provision {id}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    pub async fn twin(&self, id: &str) -> Result<Value> {
        let response = self.get(&format!("/api/v1/devices/{id}")).send().await?;
        anyhow::ensure!(response.status() == 200, "twin {id}: {}", response.status());
        Ok(response.json().await?)
    }

    /// POSTs `body` to `path` and returns (status, JSON body).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self.post(path).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GETs `path` and returns its JSON body (fails on a non-2xx status).
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        self.get_as(path).await
    }

    /// GET `path` (admin token) and decode a successful answer as `T`.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.get(path).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .get("/metrics")
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Sum of a metric family's samples whose labels contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> Result<f64> {
        Ok(sum_metric(&self.metrics().await?, name, labels))
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Files of a provisioned device's credentials, as mosquitto clients want.
pub struct CredentialFiles {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn write_credentials(creds: &Provisioned) -> Result<CredentialFiles> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &creds.ca_certificate)?;
    std::fs::write(&cert, &creds.certificate)?;
    std::fs::write(&key, &creds.private_key)?;
    Ok(CredentialFiles { dir, ca, cert, key })
}

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

/// Runs `mosquitto_pub` (a client nobody here wrote) with a device's files.
pub fn mosquitto_pub(
    creds: &Provisioned,
    files: &CredentialFiles,
    port: u16,
    topic: &str,
    message: &str,
) -> Result<std::process::Output> {
    Ok(Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"])
        .args([
            "-i",
            &creds.id,
            "-u",
            &creds.mqtt_username,
            "-P",
            &creds.mqtt_password,
        ])
        .arg("--cafile")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(["-t", topic, "-m", message])
        .output()?)
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

/// What a `device-sim run` against a hub printed and its ground truth.
pub struct SimRun {
    pub stdout: String,
    pub truth: Value,
}

/// Runs `device-sim run` with `args` (split at spaces) against `hub` until
/// it stops by itself (within `timeout`, else it is killed), credentials in
/// a temp dir; fails unless it exits 0.
pub async fn run_device_sim(hub: &HubProcess, args: &str, timeout: Duration) -> Result<SimRun> {
    let dir = tempfile::tempdir()?;
    let truth_path = dir.path().join("truth.json");
    let run = tokio::process::Command::new(workspace_binary("device-sim"))
        .arg("run")
        .args(args.split_whitespace())
        .args(["--api", &hub.api, "--mqtt-host", "localhost"])
        .args(["--mqtt-port", &hub.mqtt_port.to_string()])
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .arg("--json")
        .arg(&truth_path)
        .env("YIZHAN_ADMIN_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .context("device-sim did not finish in time")??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "device-sim failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let truth = serde_json::from_slice(&std::fs::read(&truth_path)?)?;
    Ok(SimRun { stdout, truth })
}

/// A TCP relay that can cut a link silently: after `cut`, nothing is
/// forwarded either way but both sockets stay open — a network that went
/// dark, not a closed connection.
pub struct SilentCut {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentCut {
    pub async fn start(upstream_port: u16) -> Result<SilentCut> {
        SilentCut::start_on("127.0.0.1", upstream_port).await
    }

    /// A relay listening on `ip` (any loopback address) instead.
    pub async fn start_on(ip: &str, upstream_port: u16) -> Result<SilentCut> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let port = listener.local_addr()?.port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, flag.clone()));
                tokio::spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        Ok(SilentCut { port, cut })
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Keep both halves open and silent for as long as the test runs.
    if cut.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}

/// A tiny real HTTP/1.1 server receiving webhook POSTs: it answers the
/// first `fail_first` requests 500 (to make the sender retry), then 200,
/// and keeps the JSON bodies it accepted.
pub struct WebhookSink {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// Requests answered so far (500s included).
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WebhookSink {
    pub async fn start(fail_first: usize) -> Result<WebhookSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (store, count) = (received.clone(), answered.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_webhook(
                    socket,
                    store.clone(),
                    count.clone(),
                    fail_first,
                ));
            }
        });
        Ok(WebhookSink {
            url,
            received,
            answered,
        })
    }

    /// Bodies accepted (answered 200), in arrival order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn serve_webhook(
    socket: tokio::net::TcpStream,
    store: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    fail_first: usize,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut reader = BufReader::new(socket);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers, up to the blank line.
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let status = if n < fail_first {
            "500 Internal Server Error"
        } else {
            if let (Ok(value), Ok(mut list)) = (serde_json::from_slice(&body), store.lock()) {
                list.push(value);
            }
            "200 OK"
        };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
