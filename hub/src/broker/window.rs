//! The ingest window: flow control between device sockets and the ingest
//! thread, shared by the edge (admitting) and ingest (reading).
//!
//! rumqttd keeps a log per subscription filter and drops by size, not by
//! consumption: anything admitted faster than ingest reads it is skipped
//! without a trace. So the edge admits a message bound for ingest only
//! while the bytes admitted and not yet read by ingest stay under a window
//! smaller than that log (`IngestWindow`); a connection waiting for room
//! stops reading its socket and TCP slows the device down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Bytes admitted towards ingest and bytes ingest has read, shared by every
/// connection (admitting) and the ingest thread (reading).
#[derive(Debug)]
pub struct IngestWindow {
    limit: u64,
    admitted: AtomicU64,
    consumed: AtomicU64,
    /// Unix-ish millis (since `origin`) of the last admission.
    last_admitted_ms: AtomicU64,
    origin: Instant,
    room: Notify,
}

impl IngestWindow {
    pub fn new(limit_bytes: u64) -> Arc<IngestWindow> {
        Arc::new(IngestWindow {
            limit: limit_bytes.max(1),
            admitted: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            last_admitted_ms: AtomicU64::new(0),
            origin: Instant::now(),
            room: Notify::new(),
        })
    }

    /// Bytes admitted and not yet read by ingest.
    pub fn in_flight(&self) -> u64 {
        let consumed = self.consumed.load(Ordering::Acquire);
        self.admitted
            .load(Ordering::Acquire)
            .saturating_sub(consumed)
    }

    /// Admits `bytes` if they fit in the window now. A message larger than
    /// the whole window fits once the window is empty.
    pub fn try_admit(&self, bytes: u64) -> bool {
        let mut admitted = self.admitted.load(Ordering::Acquire);
        loop {
            let in_flight = admitted.saturating_sub(self.consumed.load(Ordering::Acquire));
            if in_flight != 0 && in_flight + bytes > self.limit {
                return false;
            }
            match self.admitted.compare_exchange_weak(
                admitted,
                admitted + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.touch();
                    return true;
                }
                Err(actual) => admitted = actual,
            }
        }
    }

    /// Waits until `bytes` fit in the window, then admits them.
    pub async fn admit(&self, bytes: u64) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Register before checking, so a read in between wakes us.
            room.as_mut().enable();
            if self.try_admit(bytes) {
                return;
            }
            room.await;
        }
    }

    /// Admits `bytes` whether they fit or not (a closing session's will).
    pub fn force_admit(&self, bytes: u64) {
        self.admitted.fetch_add(bytes, Ordering::AcqRel);
        self.touch();
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_admitted_ms.store(now, Ordering::Release);
    }

    /// Called by ingest for every message it took off its link.
    pub fn consumed(&self, bytes: u64) {
        self.consumed.fetch_add(bytes, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    /// Called by ingest when its link has been quiet for `quiet`: anything
    /// admitted before that and still unread was dropped on its way (the
    /// router refused it, its connection died mid-batch) and will never
    /// arrive, so it must not hold the window shut.
    pub fn settle(&self, quiet: Duration) {
        let now = self.origin.elapsed().as_millis() as u64;
        let last = self.last_admitted_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) < quiet.as_millis() as u64 {
            return;
        }
        let admitted = self.admitted.load(Ordering::Acquire);
        let consumed = self.consumed.load(Ordering::Acquire);
        if admitted > consumed {
            self.consumed.store(admitted, Ordering::Release);
            self.room.notify_waiters();
        }
    }
}

/// The size a message counts for in the window: what rumqttd counts in its
/// log (topic and payload).
pub fn message_bytes(topic: &[u8], payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_waits_for_ingest_to_read() {
        let window = IngestWindow::new(100);
        window.admit(60).await;
        window.admit(40).await;
        let waiting = {
            let window = window.clone();
            tokio::spawn(async move { window.admit(10).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        window.consumed(60);
        waiting.await.expect("admitted");
        assert_eq!(window.in_flight(), 50);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_window_passes_alone() {
        let window = IngestWindow::new(10);
        window.admit(50).await;
        assert_eq!(window.in_flight(), 50);
    }

    #[tokio::test]
    async fn settling_forgets_what_never_arrived() {
        let window = IngestWindow::new(100);
        window.admit(100).await;
        window.settle(Duration::from_secs(3600));
        assert_eq!(window.in_flight(), 100, "too recent to be lost");
        window.settle(Duration::ZERO);
        assert_eq!(window.in_flight(), 0);
    }
}
