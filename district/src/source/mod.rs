//! Where the hubs' messages come from: NATS (`nats`: a JetStream durable
//! consumer) or any MQTT broker (`mqtt`: a persistent session). Either
//! way a batch is acknowledged only after `Intake::apply` made it durable,
//! so a crash at any point leaves the messages with the broker, and the
//! next delivery of one already applied is dropped by its id.
//!
//! The source runs until the stop token is cancelled. Connection trouble
//! is retried (next address, doubling waits up to `MAX_BACKOFF`); a store
//! error ends it (and the process: a failed fsync is never retried).

pub mod mqtt;
pub mod nats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::intake::{Intake, Summary};
use crate::message::Incoming;
use crate::settings::{Source, SourceKind};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the store's thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What ends one session with the broker.
enum SessionEnd {
    /// The stop token.
    Stopped,
    /// Connection trouble: try again.
    Retry(String),
    Fatal(SourceError),
}

impl From<SourceError> for SessionEnd {
    fn from(error: SourceError) -> SessionEnd {
        SessionEnd::Fatal(error)
    }
}

/// What a source needs.
pub struct Parts {
    pub settings: Source,
    pub intake: Intake,
    /// Set once consuming, cleared when the session ends (`/readyz`).
    pub ready: Arc<AtomicBool>,
    pub stop: CancellationToken,
}

/// The first wait after a failed session, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the configured source until stopped.
pub async fn run(parts: Parts) -> Result<(), SourceError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0usize;
    loop {
        let end = match parts.settings.kind {
            SourceKind::Nats => nats::session(&parts).await,
            SourceKind::Mqtt => mqtt::session(&parts, attempt).await,
        };
        parts.ready.store(false, Ordering::Relaxed);
        parts.intake.metrics.source_connected.set(0);
        match end {
            SessionEnd::Stopped => return Ok(()),
            SessionEnd::Fatal(error) => return Err(error),
            SessionEnd::Retry(reason) => {
                tracing::warn!(%reason, retry_in = ?backoff, "source session ended");
            }
        }
        attempt += 1;
        tokio::select! {
            _ = parts.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies `messages` on a blocking thread; durable on `Ok`.
async fn apply(intake: &Intake, messages: Vec<Incoming>) -> Result<Summary, SourceError> {
    let intake = intake.clone();
    let now = crate::unix_ms();
    let summary = tokio::task::spawn_blocking(move || intake.apply(&messages, now)).await??;
    if summary.duplicates > 0 {
        tracing::debug!(duplicates = summary.duplicates, "dropped resent messages");
    }
    Ok(summary)
}
