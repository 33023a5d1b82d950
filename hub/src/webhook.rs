//! Delivers booking notifications to the front end's webhook: JSON POSTs
//! from the durable outbox (written by the desk in the same fsync as the
//! change it reports), oldest first, each retried with doubling waits until
//! the receiver answers 2xx. Delivery is at least once: a notification is
//! removed from the outbox after its 2xx, so a crash in between sends it
//! again; receivers deduplicate by `id`.
//!
//! The outbox is read and cleared on blocking threads (sled may wait for
//! the disk; the runtime also serves devices). A store error ends the task,
//! and so the hub (`supervise`); what was not delivered stays in the outbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::records::Notification;
use crate::settings::ScheduleConfig;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    #[error("outbox thread: {0}")]
    Blocking(#[from] tokio::task::JoinError),
}

/// Notifications taken from the outbox at once.
const BATCH: usize = 64;
/// The outbox is looked at this often even without a wake-up.
const IDLE: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop`. Start it only when `config.webhook_url` is set.
pub async fn deliver(
    store: Arc<Store>,
    metrics: Metrics,
    config: ScheduleConfig,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> Result<(), WebhookError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let initial = Duration::from_millis(config.webhook_retry_ms);
    let mut backoff = initial;
    loop {
        let batch = blocking(&store, |store| store.outbox(BATCH)).await?;
        let delivered_all =
            send_batch(&client, &config.webhook_url, &store, &metrics, batch).await?;
        let wait = if delivered_all {
            backoff = initial;
            IDLE
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(Duration::from_millis(config.webhook_retry_max_ms));
            wait
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = wake.notified(), if delivered_all => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Store work on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, WebhookError> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || work(&store)).await??)
}

/// Sends in order; stops at the first failure (order is kept). Returns
/// whether every one was delivered.
async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    store: &Arc<Store>,
    metrics: &Metrics,
    batch: Vec<Notification>,
) -> Result<bool, WebhookError> {
    for notification in batch {
        let outcome = client.post(url).json(&notification).send().await;
        match outcome {
            Ok(response) if response.status().is_success() => {
                metrics.webhook_deliveries.with_label_values(&["ok"]).inc();
                let id = notification.id;
                blocking(store, move |store| store.delivered(&id)).await?;
                metrics.webhook_outbox.dec();
            }
            Ok(response) => {
                metrics
                    .webhook_deliveries
                    .with_label_values(&["retry"])
                    .inc();
                tracing::warn!(status = %response.status(), "webhook refused a notification; retrying");
                return Ok(false);
            }
            Err(error) => {
                metrics
                    .webhook_deliveries
                    .with_label_values(&["retry"])
                    .inc();
                tracing::warn!(%error, "webhook unreachable; retrying");
                return Ok(false);
            }
        }
    }
    Ok(true)
}
