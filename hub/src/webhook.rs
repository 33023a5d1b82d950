//! Delivers booking notifications to the front end's webhook: JSON POSTs
//! from the durable outbox (written by the desk in the same fsync as the
//! change it reports), oldest first, each retried with doubling waits until
//! the receiver answers 2xx. Delivery is at least once: a notification is
//! removed from the outbox after its 2xx, so a crash in between sends it
//! again; receivers deduplicate by `id`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bookings::Notification;
use crate::config::ScheduleConfig;
use crate::metrics::Metrics;
use crate::store::Store;

/// Notifications taken from the outbox at once.
const BATCH: usize = 64;
/// The outbox is looked at this often even without a wake-up.
const IDLE: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop`; does nothing when no webhook is configured.
pub async fn deliver(
    store: Arc<Store>,
    metrics: Metrics,
    config: ScheduleConfig,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    if config.webhook_url.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "no HTTP client: the webhook is not served");
            return;
        }
    };
    let initial = Duration::from_millis(config.webhook_retry_ms);
    let mut backoff = initial;
    loop {
        let delivered_all = match store.outbox(BATCH) {
            Ok(batch) => send_batch(&client, &config.webhook_url, &store, &metrics, batch).await,
            Err(error) => {
                tracing::error!(%error, "reading the outbox failed");
                false
            }
        };
        let wait = if delivered_all {
            backoff = initial;
            IDLE
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(Duration::from_millis(config.webhook_retry_max_ms));
            wait
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified(), if delivered_all => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends in order; stops at the first failure (order is kept). Returns
/// whether every one was delivered.
async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    store: &Store,
    metrics: &Metrics,
    batch: Vec<Notification>,
) -> bool {
    for notification in batch {
        let outcome = client.post(url).json(&notification).send().await;
        match outcome {
            Ok(response) if response.status().is_success() => {
                metrics.webhook_deliveries.with_label_values(&["ok"]).inc();
                if let Err(error) = store.delivered(&notification.id) {
                    tracing::error!(%error, "could not clear a delivered notification");
                    return false;
                }
            }
            Ok(response) => {
                metrics
                    .webhook_deliveries
                    .with_label_values(&["retry"])
                    .inc();
                tracing::warn!(status = %response.status(), "webhook refused a notification; retrying");
                return false;
            }
            Err(error) => {
                metrics
                    .webhook_deliveries
                    .with_label_values(&["retry"])
                    .inc();
                tracing::warn!(%error, "webhook unreachable; retrying");
                return false;
            }
        }
    }
    true
}
