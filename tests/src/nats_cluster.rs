//! A cluster of Debian `nats-server` processes with JetStream and MQTT,
//! each started on `deploy/nats/yizhan-nats.conf` (the production file)
//! with its own free loopback ports and a temporary store, polled ready
//! through `/healthz`, stopped by PID (and SIGKILLed on drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{eventually, free_port};

/// The hubs' user and password on the cluster.
pub const NATS_HUB_USER: &str = "hub";
pub const NATS_HUB_PASSWORD: &str = "nats-hub-password-0123";
/// The district's.
pub const NATS_DISTRICT_USER: &str = "district";
pub const NATS_DISTRICT_PASSWORD: &str = "nats-district-password-0123";

/// How long a node may take to become healthy (JetStream current).
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub mqtt_port: u16,
    pub cluster_port: u16,
    pub monitor_port: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// `deploy/nats/yizhan-nats.conf` of this workspace.
fn config_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/yizhan-nats.conf")
}

impl NatsCluster {
    /// `size` nodes, routed to each other; returns once every node is
    /// healthy.
    pub async fn start(size: usize) -> Result<NatsCluster> {
        let mut nodes = Vec::with_capacity(size);
        for n in 1..=size {
            nodes.push(NatsNode {
                name: format!("nats-{n}"),
                client_port: free_port()?,
                mqtt_port: free_port()?,
                cluster_port: free_port()?,
                monitor_port: free_port()?,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            nodes,
            dir: tempfile::tempdir()?,
            http: reqwest::Client::new(),
        };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        for index in 0..size {
            cluster.wait_healthy(index).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        let node = &self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))?;
        let loopback = |port: u16| format!("127.0.0.1:{port}");
        let mut command = Command::new("nats-server");
        command
            .arg("-c")
            .arg(config_file())
            .env("NATS_NAME", &node.name)
            .env("NATS_LISTEN", loopback(node.client_port))
            .env("NATS_MQTT_LISTEN", loopback(node.mqtt_port))
            .env("NATS_CLUSTER_LISTEN", loopback(node.cluster_port))
            .env("NATS_MONITOR_LISTEN", loopback(node.monitor_port))
            .env("NATS_STORE_DIR", self.dir.path().join(&node.name))
            .env("NATS_HUB_PASSWORD", NATS_HUB_PASSWORD)
            .env("NATS_DISTRICT_PASSWORD", NATS_DISTRICT_PASSWORD);
        for (n, route) in routes.iter().enumerate().take(3) {
            command.env(format!("NATS_ROUTE_{}", n + 1), route);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning nats-server (apt-get install nats-server)")?;
        self.nodes[index].child = Some(child);
        Ok(())
    }

    /// Polls the node's `/healthz` (JetStream current) until it answers ok.
    pub async fn wait_healthy(&mut self, index: usize) -> Result<()> {
        let url = format!(
            "http://127.0.0.1:{}/healthz",
            self.nodes[index].monitor_port
        );
        let start = Instant::now();
        loop {
            if let Some(child) = self.nodes[index].child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{} exited ({status}):\n{}",
                        self.nodes[index].name,
                        self.log(index)
                    );
                }
            }
            let ok = self.http.get(&url).send().await.ok();
            if ok.is_some_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if start.elapsed() > HEALTHY_WITHIN {
                bail!(
                    "{} not healthy:\n{}",
                    self.nodes[index].name,
                    self.log(index)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self, index: usize) -> String {
        let path = self
            .dir
            .path()
            .join(format!("{}.log", self.nodes[index].name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// SIGTERM (a clean stop) and waits for the exit.
    pub async fn stop(&mut self, index: usize) -> Result<()> {
        let mut child = self.nodes[index].child.take().context("node not running")?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let start = Instant::now();
        while child.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts a stopped node again (same ports, same store) and waits
    /// until it is healthy.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        self.spawn(index)?;
        self.wait_healthy(index).await
    }

    /// `mqtt://127.0.0.1:{port}` of each node.
    pub fn mqtt_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("mqtt://127.0.0.1:{}", n.mqtt_port))
            .collect()
    }

    /// `nats://127.0.0.1:{port}` of each node.
    pub fn nats_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// The running node an MQTT client id is connected to (`/connz`).
    pub async fn node_of(&self, client_id: &str) -> Option<usize> {
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}/connz?limit=1024", node.monitor_port);
            let Ok(response) = self.http.get(url).send().await else {
                continue;
            };
            let connz: Value = response.json().await.unwrap_or_default();
            let connected = connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["mqtt_client"] == client_id);
            if connected {
                return Some(index);
            }
        }
        None
    }

    /// Waits until `client_id` is connected to a running node; which.
    pub async fn wait_connected(&self, client_id: &str, timeout: Duration) -> Result<usize> {
        eventually(timeout, &format!("{client_id} connected to a node"), || {
            self.node_of(client_id)
        })
        .await
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
