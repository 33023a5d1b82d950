//! A real `district` process on a free loopback port with a temporary
//! data dir (kept across `restart`), killed (SIGKILL) on drop, with an API
//! client.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::http::{json_of, text_of};
use crate::wait::{endpoints_of, ready};
use crate::{sum_metric, workspace_binary};

/// The district's API token in the tests (`DISTRICT_TOKEN`).
pub const DISTRICT_TOKEN: &str = "e2e-district-token-0123456789";

pub struct DistrictProcess {
    child: Option<Child>,
    data: tempfile::TempDir,
    /// The `[source]` table and anything else, appended to the config.
    config: String,
    env: Vec<(String, String)>,
    pub api: String,
    http: reqwest::Client,
}

impl DistrictProcess {
    /// Starts the district on `config` (TOML) with `env` and waits until
    /// it answers `/readyz` (it consumes its source).
    pub async fn start(config: &str, env: Vec<(String, String)>) -> Result<DistrictProcess> {
        let mut district = DistrictProcess {
            child: None,
            data: tempfile::tempdir()?,
            config: config.to_string(),
            env,
            api: String::new(),
            http: reqwest::Client::new(),
        };
        district.spawn(0).await?;
        Ok(district)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn spawn(&mut self, api_port: u16) -> Result<()> {
        let dir = self.data.path();
        let config = dir.join("district.toml");
        let text = format!(
            "data_dir = {:?}\n{}\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n",
            dir.display().to_string(),
            self.config
        );
        std::fs::write(&config, text)?;
        let endpoints = dir.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("district.log"))?;
        let child = Command::new(workspace_binary("district"))
            .arg("--config")
            .arg(&config)
            .env("DISTRICT_TOKEN", DISTRICT_TOKEN)
            .env("RUST_LOG", "info,async_nats=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning the district service")?;
        let child = self.child.insert(child);
        let value = match endpoints_of(child, &endpoints, Duration::from_secs(20)).await {
            Ok(value) => value,
            Err(error) => bail!("the district: {error}:\n{}", self.log()),
        };
        self.api = format!("http://{}", value["api"].as_str().context("api address")?);
        let url = format!("{}/readyz", self.api);
        ready(&self.http, &url, Duration::from_secs(30))
            .await
            .map_err(|e| e.context(self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("district.log")).unwrap_or_default()
    }

    /// SIGKILL, then the same data dir and port again.
    pub async fn kill9_and_restart(&mut self) -> Result<()> {
        self.kill9();
        let port = self.api.rsplit(':').next().context("api port")?.parse()?;
        self.spawn(port).await
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.api))
            .bearer_auth(DISTRICT_TOKEN)
    }

    /// POSTs `body` to `path` with the token; the status and JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.api))
            .bearer_auth(DISTRICT_TOKEN)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GET `path` with the token; the JSON body of a 2xx.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        json_of(self.get(path), &format!("GET {path}")).await
    }

    pub async fn metrics(&self) -> Result<String> {
        text_of(self.get("/metrics")).await
    }

    /// Sum of a metric family's samples whose labels contain `labels` (0
    /// while the district restarts).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        match self.metrics().await {
            Ok(text) => sum_metric(&text, name, labels),
            Err(_) => 0.0,
        }
    }
}

impl Drop for DistrictProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
