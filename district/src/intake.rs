//! A batch of messages from the source: decoded, applied to one store
//! batch, committed and fsynced; only then does the source acknowledge
//! them. Refused messages are kept (`r/`) and counted, so nothing a hub
//! sent disappears without a trace. Runs on a blocking thread: the commit
//! waits for the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use protocol::calendar::Calendar;

use crate::message::{decode, Body, Decoded, Incoming, Message};
use crate::metrics::{Metrics, IGNORED, REJECTED, SKIPPED, UNKNOWN};
use crate::records::RejectedRecord;
use crate::store::{Store, StoreError};
use crate::tally::{apply, Context, NewNames, Outcome};

/// The most of a refused payload kept.
pub const MAX_KEPT_PAYLOAD: usize = 4096;

/// Applies batches; shared by the sources (one batch at a time).
#[derive(Clone)]
pub struct Intake {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub calendar: Calendar,
    pub upkeep: Upkeep,
    /// When the upkeep last ran (unix ms).
    pub upkept_at: Arc<AtomicU64>,
}

/// The store's bounds, kept between batches.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// Ids older than this are forgotten.
    pub dedupe_ms: u64,
    pub max_alarms: usize,
    pub max_rejected: usize,
}

/// How often the upkeep runs.
const UPKEEP_EVERY_MS: u64 = 30_000;
/// Ids forgotten per upkeep, at most (the rest next time).
const FORGET_AT_ONCE: usize = 100_000;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub applied: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub skipped: u64,
}

impl Intake {
    /// Applies `messages` in order and makes them durable; the caller
    /// acknowledges them after this returns `Ok`. On `Err` nothing of the
    /// batch was written, and the caller must not acknowledge.
    pub fn apply(&self, messages: &[Incoming], now: u64) -> Result<Summary, StoreError> {
        let started = std::time::Instant::now();
        let context = Context {
            calendar: self.calendar,
            now,
        };
        let mut batch = self.store.batch();
        let mut summary = Summary::default();
        let mut new = NewNames::default();
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut commands = Vec::new();
        let mut newest = 0;
        for incoming in messages {
            let class = protocol::upstream::UpstreamTopic::parse(&incoming.topic)
                .map_or(UNKNOWN, |t| t.class.as_str());
            self.metrics
                .received_bytes
                .with_label_values(&[class])
                .inc_by(incoming.payload.len() as u64);
            match decode(incoming) {
                Decoded::Message(message) => {
                    let outcome = apply(&message, &context, &mut batch, &mut new)?;
                    if outcome == Outcome::Applied {
                        newest = newest.max(message.at());
                        commands.extend(CommandNews::of(&message));
                    }
                    outcomes.push((message.class.as_str(), outcome.as_str()));
                    match outcome {
                        Outcome::Applied => summary.applied += 1,
                        Outcome::Duplicate => summary.duplicates += 1,
                        Outcome::Stale => summary.stale += 1,
                    }
                }
                Decoded::Skipped => {
                    summary.skipped += 1;
                    outcomes.push((class, SKIPPED));
                }
                Decoded::Ignored => {
                    summary.ignored += 1;
                    outcomes.push((UNKNOWN, IGNORED));
                    keep(&mut batch, incoming, IGNORED, now)?;
                }
                Decoded::Rejected(reason) => {
                    summary.rejected += 1;
                    self.metrics
                        .rejected
                        .with_label_values(&[reason.as_str()])
                        .inc();
                    outcomes.push((class, REJECTED));
                    keep(&mut batch, incoming, reason.as_str(), now)?;
                    tracing::warn!(topic = %incoming.topic, reason = reason.as_str(), "message refused");
                }
            }
        }
        self.store.commit(batch)?;
        for (class, outcome) in outcomes {
            self.metrics
                .messages
                .with_label_values(&[class, outcome])
                .inc();
        }
        for news in commands {
            news.count(&self.metrics);
        }
        self.metrics.hubs.add(new.hubs as i64);
        self.metrics.centers.add(new.centers as i64);
        let newest = (newest / 1000) as i64;
        if newest > self.metrics.last_message.get() {
            self.metrics.last_message.set(newest);
        }
        self.metrics.batch_messages.observe(messages.len() as f64);
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.upkeep(now)?;
        Ok(summary)
    }

    /// Every `UPKEEP_EVERY_MS`, between batches (so nothing else writes
    /// meanwhile): forgets old ids, prunes alarms and refused messages to
    /// their bounds, reads the store's size.
    pub fn upkeep(&self, now: u64) -> Result<(), StoreError> {
        if now.saturating_sub(self.upkept_at.load(Ordering::Relaxed)) < UPKEEP_EVERY_MS {
            return Ok(());
        }
        self.upkept_at.store(now, Ordering::Relaxed);
        let before = now.saturating_sub(self.upkeep.dedupe_ms);
        let forgotten = self.store.forget_seen(before, FORGET_AT_ONCE)?;
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot message ids past the dedupe window");
        }
        self.store
            .prune(self.upkeep.max_alarms, self.upkeep.max_rejected)?;
        let size = i64::try_from(self.store.size_on_disk()).unwrap_or(i64::MAX);
        self.metrics.store_bytes.set(size);
        Ok(())
    }
}

/// What an applied message said of the district's commands, counted
/// once the batch is durable (labels checked at the boundary).
enum CommandNews {
    Outcome(String),
    Refused(String),
}

impl CommandNews {
    fn of(message: &Message) -> Option<CommandNews> {
        match &message.body {
            Body::Outcome(outcome) => Some(CommandNews::Outcome(outcome.status.clone())),
            Body::Refused(refused) => Some(CommandNews::Refused(refused.reason.clone())),
            _ => None,
        }
    }

    fn count(&self, metrics: &Metrics) {
        match self {
            CommandNews::Outcome(status) => metrics.command_outcomes.with_label_values(&[status]),
            CommandNews::Refused(reason) => metrics.commands_refused.with_label_values(&[reason]),
        }
        .inc();
    }
}

/// A message the district does not apply, kept for inspection.
fn keep(
    batch: &mut crate::store::Batch<'_>,
    incoming: &Incoming,
    reason: &str,
    now: u64,
) -> Result<(), StoreError> {
    let cut = &incoming.payload[..incoming.payload.len().min(MAX_KEPT_PAYLOAD)];
    batch.add_rejected(&RejectedRecord {
        topic: incoming.topic.chars().take(512).collect(),
        reason: reason.to_string(),
        received_at: now,
        payload: String::from_utf8_lossy(cut).into_owned(),
    })
}
