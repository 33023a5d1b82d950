//! A real Prometheus server (Debian's `prometheus` package) on a free
//! loopback port with its config and storage in a temporary dir, killed
//! (SIGKILL) on drop however the test ends; and its query API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::free_port;

/// A Prometheus process. Killed on drop; its dir is removed.
pub struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Writes `files` (name, contents) into a fresh dir, starts
    /// `prometheus --config.file=<dir>/prometheus.yml` (which `files` must
    /// hold) and waits for `/-/ready`.
    pub async fn start(files: &[(&str, String)]) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        for (name, contents) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)?;
        }
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!(
                    "prometheus is not installed: ./scripts/test.sh installs it (Debian package prometheus)"
                ),
                _ => anyhow::Error::new(e).context("starting prometheus"),
            })?;
        let mut prometheus = Prometheus {
            child: Some(child),
            dir,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        prometheus.wait_ready(Duration::from_secs(30)).await?;
        Ok(prometheus)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Ok(response) = self.http.get(&ready).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > timeout {
                bail!(
                    "prometheus did not become ready ({exited:?}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` with `params`; the `data` of a successful API answer.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("Prometheus answered non-JSON")?;
        if !status.is_success() || body["status"] != "success" {
            bail!("{path} {params:?}: {status} {body}");
        }
        Ok(body["data"].clone())
    }

    /// An instant query now: its result (series or a scalar's one value).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(result_of(data))
    }

    /// A range query over the last `span` at `step`: its series.
    pub async fn query_range(
        &self,
        expr: &str,
        span: Duration,
        step: Duration,
    ) -> Result<Vec<Value>> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let (start, end) = ((now - span).as_secs_f64(), now.as_secs_f64());
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", expr),
                    ("start", &start.to_string()),
                    ("end", &end.to_string()),
                    ("step", &format!("{}s", step.as_secs_f64())),
                ],
            )
            .await?;
        Ok(result_of(data))
    }

    /// The value of a query that yields one number (0 when empty).
    pub async fn number(&self, expr: &str) -> Result<f64> {
        let result = self.query(expr).await?;
        let value = result
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok());
        Ok(value.unwrap_or(0.0))
    }
}

fn result_of(data: Value) -> Vec<Value> {
    match &data["result"] {
        Value::Array(series) => series.clone(),
        Value::Null => Vec::new(),
        scalar => vec![scalar.clone()],
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
