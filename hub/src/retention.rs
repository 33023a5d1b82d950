//! The `retention` component: removes stored records older than their
//! retention (`[retention]`, `api.audit_retention_days`) at start and then
//! every `retention.every`, kind by kind (once per store, first indexing
//! the records stored before the time index existed), a bounded batch per blocking
//! call so neither the async runtime nor the store is held for long. The
//! store decides what must stay whatever its age (an open command, an
//! undelivered notification: `store::retention`); this task decides when,
//! and counts what went in `yizhan_records_pruned_total{kind}`.

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
