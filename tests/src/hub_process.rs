//! A real hub process on free loopback ports with a temporary data dir,
//! killed (SIGKILL) on drop however the test ends, with an API client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use protocol::api::{ProvisionRequest, Provisioned};
use protocol::DeviceKind;
use serde_json::Value;

use crate::http::{json_of, text_of};
use crate::wait::{endpoints_of, ready};
use crate::{eventually, sum_metric, ADMIN_TOKEN, METRICS_TOKEN};

/// Hub config for devices on a simulated clock (`device-sim --start`,
/// `--speed`, or fixed dates in a test): a `ts` window holding the whole
/// calendar (`hub::config::IngestConfig::SIMULATED_CLOCK_WINDOW_SECS`).
pub const SIMULATED_CLOCKS: &str =
    "[ingest]\nmax_ts_behind_secs = 315360000000\nmax_ts_ahead_secs = 315360000000\n";

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

/// A route as `hub print-routes` lists it: method, path template, and the
/// roles that may call it (`anyone` for no token).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedRoute {
    pub method: String,
    pub path: String,
    pub roles: std::collections::BTreeSet<String>,
}

/// Every route of the API, from `hub print-routes`.
pub fn listed_routes() -> Result<Vec<ListedRoute>> {
    let output = Command::new(workspace_binary("hub"))
        .arg("print-routes")
        .output()?;
    anyhow::ensure!(output.status.success(), "hub print-routes failed");
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [method, path, roles] = fields[..] else {
                bail!("not `METHOD /path roles`: {line:?}");
            };
            Ok(ListedRoute {
                method: method.to_string(),
                path: path.to_string(),
                roles: roles.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// A path a route template matches, naming nothing that exists (`{id}` →
/// `x1`).
pub fn fill_template(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
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
    /// The admin token (and `METRICS_TOKEN`) in files named by
    /// `YIZHAN_ADMIN_TOKEN_FILE` and `YIZHAN_METRICS_TOKEN_FILE`, instead
    /// of the admin token in `YIZHAN_ADMIN_TOKEN`.
    pub token_files: bool,
    /// Extra lines of the `[api]` table (e.g. `header_read_timeout_ms = 2000`).
    pub api_config: String,
    /// The API over TLS (`api.tls`): `api` is `https://…`, readiness is
    /// polled through `https_request`, and the reqwest helpers do not work.
    pub api_tls: bool,
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
    client: HubApi,
}

impl std::ops::Deref for HubProcess {
    type Target = HubApi;

    fn deref(&self) -> &HubApi {
        &self.client
    }
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
            client: HubApi {
                http: reqwest::Client::new(),
                base: String::new(),
            },
        };
        hub.spawn().await?;
        Ok(hub)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn spawn(&mut self) -> Result<()> {
        let endpoints = self.data.path().join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let child = self.command()?.spawn().context("spawning the hub")?;
        let child = self.child.insert(child);
        let value = match endpoints_of(child, &endpoints, Duration::from_secs(20)).await {
            Ok(value) => value,
            Err(error) => bail!("the hub: {error}:\n{}", self.log()),
        };
        let api = value["api"].as_str().context("api address")?;
        let scheme = if self.options.api_tls {
            "https"
        } else {
            "http"
        };
        self.api = format!("{scheme}://{api}");
        self.client.base = self.api.clone();
        let mqtt: std::net::SocketAddr = value["mqtt"].as_str().context("mqtt address")?.parse()?;
        self.mqtt_port = mqtt.port();
        if self.options.api_tls {
            return self.wait_ready_over_tls(api).await;
        }
        ready(
            &self.client.http,
            &format!("{}/readyz", self.api),
            Duration::from_secs(10),
        )
        .await?;
        Ok(())
    }

    /// Writes the config file and returns the hub's command on it, with
    /// the options' environment and its output into `hub.log` (new).
    fn command(&self) -> Result<Command> {
        let config = self.data.path().join("hub.toml");
        let text = format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:{}\"\n[api]\nlisten = \"127.0.0.1:{}\"\ntls = {}\n{}\n{}\n",
            self.data.path().display().to_string(),
            self.options.mqtt_port,
            self.options.api_port,
            self.options.api_tls,
            self.options.api_config,
            self.options.extra_config
        );
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(self.data.path().join("hub.log"))?;
        let mut command = Command::new(workspace_binary("hub"));
        command
            .envs(self.token_env()?)
            .arg("--config")
            .arg(&config)
            .env("YIZHAN_LOG__FILTER", "info,rumqttd=warn")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(command)
    }

    /// Stops the hub (SIGKILL) and starts it again on the same data dir,
    /// expecting it to refuse to start: its exit status once it exited by
    /// itself within `timeout`, and its log.
    pub async fn restart_refused(&mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        self.kill9();
        self.child = Some(self.command()?.spawn().context("spawning the hub")?);
        let (status, _) = self.wait_exit(timeout).await?;
        Ok((status, self.log()))
    }

    /// Polls `/readyz` over TLS until it answers 200.
    async fn wait_ready_over_tls(&self, api: &str) -> Result<()> {
        let ca = std::fs::read_to_string(self.data.path().join("ca.pem"))?;
        eventually(Duration::from_secs(10), "/readyz over TLS", || async {
            let answer = crate::https_request(api, &ca, "GET", "/readyz", None).await;
            answer.ok().filter(|(status, _)| *status == 200)
        })
        .await?;
        Ok(())
    }

    /// How the hub gets its tokens (`HubOptions::token_files`).
    fn token_env(&self) -> Result<Vec<(String, String)>> {
        if !self.options.token_files {
            return Ok(vec![("YIZHAN_ADMIN_TOKEN".into(), ADMIN_TOKEN.into())]);
        }
        let mut env = Vec::new();
        for (name, token, variable) in [
            ("admin_token", ADMIN_TOKEN, "YIZHAN_ADMIN_TOKEN_FILE"),
            ("metrics_token", METRICS_TOKEN, "YIZHAN_METRICS_TOKEN_FILE"),
        ] {
            let path = self.data.path().join(name);
            std::fs::write(&path, format!("{token}\n"))?;
            env.push((variable.into(), path.display().to_string()));
        }
        Ok(env)
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

    /// A handle on the API for tasks of their own (it stays valid across
    /// restarts: the address does not change).
    pub fn api_client(&self) -> HubApi {
        self.client.clone()
    }
}

/// The hub's API as the admin calls it.
#[derive(Clone)]
pub struct HubApi {
    http: reqwest::Client,
    base: String,
}

impl HubApi {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.base))
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
        json_of(self.get(path), &format!("GET {path}")).await
    }

    /// Every item of a paged list: the `items` array of each page of
    /// `path` (which may carry a query), following `next`.
    pub async fn list_all(&self, path: &str, items: &str) -> Result<Vec<Value>> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let (mut all, mut after) = (Vec::new(), String::new());
        loop {
            let page = self
                .get_json(&format!("{path}{separator}limit=10000{after}"))
                .await?;
            all.extend(page[items].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => return Ok(all),
            }
        }
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> Result<String> {
        text_of(self.get("/metrics")).await
    }

    /// Sum of a metric family's samples whose labels contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> Result<f64> {
        Ok(sum_metric(&self.metrics().await?, name, labels))
    }

    /// Waits until `metric(name, labels)` holds (NaN while the hub
    /// restarts); its value then.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &str,
        holds: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Result<f64> {
        eventually(timeout, &format!("{name}{{{labels}}}"), || async {
            let value = self.metric(name, labels).await.unwrap_or(f64::NAN);
            holds(value).then_some(value)
        })
        .await
    }

    /// Cancels booking `id` (200 expected).
    pub async fn cancel_booking(&self, id: &str) -> Result<()> {
        let response = self
            .delete(&format!("/api/v1/bookings/{id}"))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "cancel {id}: {}",
            response.status()
        );
        Ok(())
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
