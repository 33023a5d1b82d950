//! The `retention` component: removes stored records older than their
//! retention (`[retention]`, `api.audit_retention_days`) at start and then
//! every `retention.every`, kind by kind (once per store, first indexing
//! the records stored before the time index existed), a bounded batch per blocking
//! call so neither the async runtime nor the store is held for long. The
//! store decides what must stay whatever its age (an open command, an
//! undelivered notification: `store::retention`); this task decides when,
//! and counts what went in `yizhan_records_pruned_total{kind}`. It also
//! forgets the ids of district commands past their expiry (`downlink`),
//! which a replay could no longer pass anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::unix_ms;
use crate::metrics::Metrics;
use crate::settings::Retention;
use crate::store::{Aged, BackgroundError, Pruned, Store};

/// Records looked at in one blocking call (one sled batch per tree).
const CHUNK: usize = 2_000;

/// Runs until `stop`; fails on a store error (the hub stops rather than
/// keep records past their retention unseen).
pub async fn keep(
    store: Arc<Store>,
    metrics: Metrics,
    retention: Retention,
    stop: CancellationToken,
) -> Result<(), BackgroundError> {
    for kind in Aged::ALL {
        index_unaged(&store, kind).await?;
    }
    let mut every = tokio::time::interval(retention.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        for kind in Aged::ALL {
            let removed = prune_kind(&store, kind, kept(&retention, kind), &stop).await?;
            metrics
                .records_pruned
                .with_label_values(&[kind.as_str()])
                .inc_by(removed as u64);
            if removed > 0 {
                tracing::info!(kind = kind.as_str(), removed, "old records removed");
            }
        }
        let forgotten = forget_downlink(&store, &stop).await?;
        metrics
            .records_pruned
            .with_label_values(&[DOWNLINK])
            .inc_by(forgotten as u64);
    }
}

/// The `kind` of forgotten district command ids.
const DOWNLINK: &str = "downlink";
/// How long after its expiry a district command's id is kept: past the
/// command service's last word on it (its ack grace).
const DOWNLINK_MARGIN_MS: u64 = 10 * 60_000;

/// Forgets the ids of district commands that expired more than
/// `DOWNLINK_MARGIN_MS` ago, `CHUNK` at a time; how many.
async fn forget_downlink(
    store: &Arc<Store>,
    stop: &CancellationToken,
) -> Result<usize, BackgroundError> {
    let before = unix_ms().saturating_sub(DOWNLINK_MARGIN_MS);
    let mut forgotten = 0;
    loop {
        let chunk = store
            .in_background(move |store| store.forget_downlink(before, CHUNK))
            .await?;
        forgotten += chunk;
        if chunk < CHUNK || stop.is_cancelled() {
            return Ok(forgotten);
        }
    }
}

/// Indexes `kind`'s records stored before the time index existed (once
/// per store), `CHUNK` at a time.
async fn index_unaged(store: &Arc<Store>, kind: Aged) -> Result<(), BackgroundError> {
    let mut resume = None;
    while store.in_background(move |store| store.unaged(kind)).await? {
        let from = resume.take();
        resume = store
            .in_background(move |store| store.index_unaged(kind, CHUNK, from))
            .await?;
        if resume.is_none() {
            tracing::info!(kind = kind.as_str(), "older records indexed for retention");
        }
    }
    Ok(())
}

fn kept(retention: &Retention, kind: Aged) -> Duration {
    match kind {
        Aged::Events => retention.events,
        Aged::Commands => retention.commands,
        Aged::Notifications => retention.notifications,
        Aged::Audit => retention.audit,
    }
}

/// Removes `kind`'s records older than `kept`, `CHUNK` at a time; how many.
async fn prune_kind(
    store: &Arc<Store>,
    kind: Aged,
    kept: Duration,
    stop: &CancellationToken,
) -> Result<usize, BackgroundError> {
    let kept_ms = u64::try_from(kept.as_millis()).unwrap_or(u64::MAX);
    let before = unix_ms().saturating_sub(kept_ms);
    let (mut removed, mut resume) = (0, None);
    loop {
        let from = resume.take();
        let pruned = store
            .in_background(move |store| store.prune(kind, before, CHUNK, from))
            .await?;
        removed += pruned.removed;
        match pruned {
            Pruned {
                resume: Some(next), ..
            } if !stop.is_cancelled() => resume = Some(next),
            _ => return Ok(removed),
        }
    }
}
