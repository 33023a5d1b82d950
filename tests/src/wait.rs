//! Waiting in tests: the real clock as devices stamp it, and polling
//! until something holds.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

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

/// The JSON a starting process writes to `path` (its `endpoints.json`),
/// polled every 20 ms; fails with the exit status if the process exits
/// first, or after `timeout`.
pub async fn endpoints_of(
    child: &mut std::process::Child,
    path: &std::path::Path,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(serde_json::from_str(&text)?);
        }
        let exited = child.try_wait()?;
        if exited.is_some() || start.elapsed() > timeout {
            bail!("it did not start ({exited:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `url` until it answers 2xx (a service's `/readyz`).
pub async fn ready(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<()> {
    eventually(timeout, url, || async {
        let response = http.get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
}
