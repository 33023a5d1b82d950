//! The audit log: every change a token asked of the API (who, role, what,
//! when, the answer's status; never a body), kept in the store and read at
//! `GET /api/v1/audit?after=&limit=` (admin, paged by `next`).
//!
//! The guard hands each entry to `AuditLog::record`, which never waits: a
//! bounded channel to the `audit` task, which writes what arrived in one
//! batch on a blocking thread and fsyncs it there — so no request waits on
//! the disk for its entry, and many entries share one fsync. An entry is
//! written moments after its answer was sent; a crash in between loses it
//! (docs/security.md). Entries older than `api.audit_retention_days` are
//! removed by the `retention` component, with every other kind of record.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::routing::{may, Routes};
use super::{blocking, internal, query_of, ranges, ApiState, HttpError};
use crate::records::AuditEntry;
use crate::store::{BackgroundError, Store};

pub(super) fn routes() -> Routes {
    Routes::group("audit").route(may::ADMIN, routes!(list_audit))
}

/// Entries waiting for the writer; beyond this the newest are dropped and
/// logged (the writer takes thousands a second, the API answers fewer).
const QUEUE: usize = 8_192;
/// Entries written in one batch (one fsync) at most.
const BATCH: usize = 1_024;
/// After the hub is told to stop, how long the writer waits for the API's
/// last answers before it writes what it has and ends.
const LAST_ENTRIES: Duration = Duration::from_millis(1_000);

/// Where the guard sends entries; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditEntry>,
}

/// The writer's end of the log.
pub struct AuditQueue(mpsc::Receiver<AuditEntry>);

impl AuditQueue {
    #[cfg(test)]
    pub(super) fn into_receiver(self) -> mpsc::Receiver<AuditEntry> {
        self.0
    }
}

impl AuditLog {
    pub fn channel() -> (AuditLog, AuditQueue) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        (AuditLog { queue }, AuditQueue(receiver))
    }

    /// Queues `entry` for the writer, without waiting.
    pub(super) fn record(&self, entry: AuditEntry) {
        if let Err(error) = self.queue.try_send(entry) {
            let entry = match &error {
                mpsc::error::TrySendError::Full(entry)
                | mpsc::error::TrySendError::Closed(entry) => entry,
            };
            tracing::error!(route = %entry.route, method = %entry.method, token = %entry.token, "audit entry dropped: the writer is behind or stopped");
        }
    }
}

/// The `audit` task: writes queued entries in batches, until the API is gone (every `AuditLog` dropped) or, once `stop` is
/// cancelled, `LAST_ENTRIES` later. Fails on a store error (the hub stops:
/// an audit it cannot write is not kept silently).
pub async fn keep(
    store: Arc<Store>,
    queue: AuditQueue,
    stop: CancellationToken,
) -> Result<(), BackgroundError> {
    let AuditQueue(mut receiver) = queue;
    let mut batch = Vec::with_capacity(BATCH);
    let last_call = async {
        stop.cancelled().await;
        tokio::time::sleep(LAST_ENTRIES).await;
    };
    tokio::pin!(last_call);
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return Ok(());
                }
                write(&store, std::mem::take(&mut batch)).await?;
            }
            () = &mut last_call => {
                receiver.close();
                while receiver.recv_many(&mut batch, BATCH).await > 0 {
                    write(&store, std::mem::take(&mut batch)).await?;
                }
                return Ok(());
            }
        }
    }
}

/// Appends a batch (fsynced) on a blocking thread.
async fn write(store: &Arc<Store>, mut entries: Vec<AuditEntry>) -> Result<(), BackgroundError> {
    store
        .in_background(move |store| store.append_audit(&mut entries))
        .await
}

/// A page of the log: after an entry, how many.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// The `next` of the page before.
    after: Option<u64>,
    /// 1-10000; 100 when not given.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A page of audit entries.
#[derive(Serialize, ToSchema)]
struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The audit log, oldest first, `limit` (default 100) at a time.
#[utoipa::path(get, path = "/api/v1/audit",
    params(AuditQuery),
    responses((status = 200, description = "a page of entries", body = AuditPage)))]
async fn list_audit(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, HttpError> {
    let query = query_of(query)?;
    let limit = ranges::page("limit", query.limit, 100)?;
    let (entries, more) = blocking(&state, move |state| {
        state.store.audit_page(query.after, limit).map_err(internal)
    })
    .await?;
    let next = more
        .then(|| entries.last().map(|entry| entry.id.to_string()))
        .flatten();
    Ok(Json(AuditPage { entries, next }))
}
