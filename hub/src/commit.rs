//! Group commit: makes ingest's batches durable off the ingest thread, then
//! publishes what had to wait for that (event acks, and the rejection
//! reports of the same batches, in order).
//!
//! Ingest writes a batch's events and twins to sled, hands the batch's
//! outgoing messages here and goes on with the next batch at once; this
//! thread fsyncs once for every batch handed over since its last fsync and
//! only then publishes them, through its own broker link. So the disk never
//! delays a reaction (an interlock `stop`, a gate's answer) to a message
//! that arrives while an fsync runs, and an event is still acknowledged only
//! after the fsync that made it durable.
//!
//! A failed fsync ends the thread (and so the hub, see `supervise`): its
//! batches stay unacknowledged, and devices resend them to the next process.
//!
//! Ingest owns the sending half. On an orderly stop it calls `finish`,
//! which waits for the last fsync; if ingest ends abnormally (a panic, an
//! error), the half is dropped without waiting and this thread, finding no
//! sender, waits for the stop token before it ends: the supervisor hears
//! first why ingest went down, and `/readyz` never names `commit` for it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttd::local::{LinkRx, LinkTx};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};
use crate::supervise::{self, component, InjectedFault, Supervisor};

/// Batches waiting for an fsync before ingest blocks (back-pressure when the
/// disk is slower than the devices).
const QUEUE: usize = 256;

/// How long the thread waits, its sender gone, for the supervisor to hear
/// why (the stop token), before it ends anyway.
const SENDER_GRACE: Duration = Duration::from_secs(2);

/// Messages to publish once their batch is durable.
pub type Deferred = Vec<(String, Vec<u8>)>;

/// Why the commit thread ended.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("fsync failed: {0}")]
    Flush(#[from] StoreError),
    #[error(transparent)]
    Fault(#[from] InjectedFault),
}

/// The committer thread and the way to hand it batches.
pub struct GroupCommit {
    tx: Option<SyncSender<Deferred>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the supervised thread; it publishes through `link` (kept
    /// with its receiving half so the router keeps the link).
    pub fn start(
        store: Arc<Store>,
        link: (LinkTx, LinkRx),
        supervisor: &Supervisor,
    ) -> std::io::Result<GroupCommit> {
        let (tx, rx) = sync_channel(QUEUE);
        let stop = supervisor.stop_token();
        let thread = supervisor.spawn_thread(component::COMMIT, move || {
            run(store, link, rx).inspect(|()| outlive_the_sender(&stop))
        })?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands over a batch already written to sled. Blocks only when
    /// `QUEUE` batches are waiting for the disk.
    pub fn commit(&self, messages: Deferred) {
        let Some(tx) = &self.tx else { return };
        let messages = match tx.try_send(messages) {
            Ok(()) => return,
            Err(TrySendError::Full(messages)) => messages,
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the commit thread is gone; acks withheld (devices resend)");
                return;
            }
        };
        tracing::debug!("commit queue full: ingest waits for the disk");
        if tx.send(messages).is_err() {
            tracing::error!("the commit thread is gone; acks withheld (devices resend)");
        }
    }

    /// Waits until every batch handed over is durable and published.
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            // The supervisor caught and reported a panic.
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommit {
    /// Dropped without `finish`: its owner is ending abnormally. Hands
    /// nothing more and does not wait (the thread flushes what it holds).
    fn drop(&mut self) {
        self.tx.take();
    }
}

/// The sender is gone. On an orderly stop the stop token is cancelled
/// already; otherwise the sender's thread is going down and the
/// supervisor is about to record why: wait for that (bounded), so this
/// thread ends as stopped rather than as the cause.
fn outlive_the_sender(stop: &CancellationToken) {
    let deadline = Instant::now() + SENDER_GRACE;
    while !stop.is_cancelled() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(
    store: Arc<Store>,
    link: (LinkTx, LinkRx),
    rx: Receiver<Deferred>,
) -> Result<(), CommitError> {
    let (mut link_tx, _link_rx) = link;
    while let Ok(first) = rx.recv() {
        supervise::checkpoint()?;
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        // A failed fsync ends the thread before any of these acks goes
        // out: devices resend what was not acknowledged.
        store.flush()?;
        for (topic, payload) in batches.into_iter().flatten() {
            if let Err(error) = link_tx.publish(topic, payload) {
                tracing::error!(?error, "publishing an ack failed");
            }
        }
    }
    Ok(())
}
