//! A `device-sim run` against a hub, to its end, with its ground truth.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{workspace_binary, HubProcess, ADMIN_TOKEN};

/// What a `device-sim run` against a hub printed and its ground truth.
pub struct SimRun {
    pub stdout: String,
    pub truth: Value,
}

/// Runs `device-sim run` with `args` (split at spaces) against `hub` until
/// it stops by itself (within `timeout`, else it is killed), credentials in
/// a temp dir; fails unless it exits 0.
pub async fn run_device_sim(hub: &HubProcess, args: &str, timeout: Duration) -> Result<SimRun> {
    run_device_sim_at(&hub.api, hub.mqtt_port, args, timeout).await
}

/// `run_device_sim` against the hub whose API is `api` (`http://…`) and
/// device port `mqtt_port`, which may be restarted meanwhile.
pub async fn run_device_sim_at(
    api: &str,
    mqtt_port: u16,
    args: &str,
    timeout: Duration,
) -> Result<SimRun> {
    let dir = tempfile::tempdir()?;
    let truth_path = dir.path().join("truth.json");
    let run = tokio::process::Command::new(workspace_binary("device-sim"))
        .arg("run")
        .args(args.split_whitespace())
        .args(["--api", api, "--mqtt-host", "localhost"])
        .args(["--mqtt-port", &mqtt_port.to_string()])
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
