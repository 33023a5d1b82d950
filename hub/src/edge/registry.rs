//! Live sessions by client id, and the subscriptions of persistent
//! sessions between connections.
//!
//! A CONNECT with the id of a live session takes it over: the old session
//! is told to end and its teardown (will, router disconnect) finishes
//! before the new session's link is built, so the router sees the old
//! connection leave before the new one arrives. A revoke tells a device's
//! session to end the same way.
//!
//! A client's rate-limit bucket outlives its connection (until it would be
//! full again), so reconnecting does not buy a flooding client a new burst.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::flow::TokenBucket;
use tokio_util::sync::CancellationToken;

/// Why a session was told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    /// Another connection with the same client id arrived.
    TakenOver = 1,
    /// The device was revoked.
    Revoked = 2,
    /// The hub is stopping.
    Shutdown = 3,
    /// The grace of a renewal ended and the session is on the certificate
    /// it replaced.
    Superseded = 4,
}

impl Kick {
    fn from_u8(value: u8) -> Kick {
        match value {
            1 => Kick::TakenOver,
            2 => Kick::Revoked,
            4 => Kick::Superseded,
            _ => Kick::Shutdown,
        }
    }
}

struct Entry {
    serial: u64,
    /// The certificate (SHA-256) a device's session connected with.
    certificate: Option<String>,
    kick: CancellationToken,
    reason: Arc<AtomicU8>,
    ended: watch::Receiver<()>,
}

#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Entry>>,
    /// Filters of persistent sessions, kept while they are offline.
    persisted: Mutex<HashMap<String, HashSet<String>>>,
    /// Rate-limit buckets of clients gone before theirs refilled.
    buckets: Mutex<HashMap<String, TokenBucket>>,
    serials: AtomicU64,
}

/// A session's place in the registry; released when dropped, which also
/// tells a session waiting to take over that this one has ended.
pub struct Claim {
    registry: Arc<Registry>,
    key: String,
    serial: u64,
    kick: CancellationToken,
    reason: Arc<AtomicU8>,
    _ended: watch::Sender<()>,
}

impl Claim {
    /// Cancelled when the session must end.
    pub fn kicked(&self) -> &CancellationToken {
        &self.kick
    }

    /// Why the session was told to end (once `kicked` is cancelled).
    pub fn reason(&self) -> Kick {
        Kick::from_u8(self.reason.load(Ordering::Acquire))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut live = self.registry.live();
        if live.get(&self.key).is_some_and(|e| e.serial == self.serial) {
            live.remove(&self.key);
        }
    }
}

impl Registry {
    /// Takes the place of `key` for a session on `certificate` (a
    /// device's): a live session with that key is told to end and awaited
    /// (at most `wait`). `shutdown` ends the new session with the hub.
    pub async fn claim(
        self: &Arc<Self>,
        key: &str,
        certificate: Option<&str>,
        shutdown: &CancellationToken,
        wait: Duration,
    ) -> Claim {
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let (ended_tx, ended_rx) = watch::channel(());
        let kick = shutdown.child_token();
        let reason = Arc::new(AtomicU8::new(Kick::Shutdown as u8));
        let entry = Entry {
            serial,
            certificate: certificate.map(str::to_owned),
            kick: kick.clone(),
            reason: reason.clone(),
            ended: ended_rx,
        };
        let previous = self.live().insert(key.to_owned(), entry);
        if let Some(mut previous) = previous {
            previous
                .reason
                .store(Kick::TakenOver as u8, Ordering::Release);
            previous.kick.cancel();
            // `changed` fails once the old session's Claim is dropped.
            let _ = tokio::time::timeout(wait, async {
                while previous.ended.changed().await.is_ok() {}
            })
            .await;
        }
        Claim {
            registry: self.clone(),
            key: key.to_owned(),
            serial,
            kick,
            reason,
            _ended: ended_tx,
        }
    }

    /// Tells the session with `key` to end; false if there is none.
    pub fn kick(&self, key: &str, why: Kick) -> bool {
        let live = self.live();
        let Some(entry) = live.get(key) else {
            return false;
        };
        entry.reason.store(why as u8, Ordering::Release);
        entry.kick.cancel();
        true
    }

    /// Tells the session with `key` to end if `ends` says so of the
    /// certificate it connected with; whether it was told.
    pub fn kick_if(&self, key: &str, why: Kick, ends: impl Fn(Option<&str>) -> bool) -> bool {
        let live = self.live();
        let Some(entry) = live.get(key) else {
            return false;
        };
        if !ends(entry.certificate.as_deref()) {
            return false;
        }
        entry.reason.store(why as u8, Ordering::Release);
        entry.kick.cancel();
        true
    }

    /// Sessions connected now.
    pub fn len(&self) -> usize {
        self.live().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filters a persistent session held when it last ended; a clean
    /// session forgets them.
    pub fn resume_filters(&self, key: &str, clean: bool) -> HashSet<String> {
        let mut persisted = self.persisted();
        match clean {
            true => {
                persisted.remove(key);
                HashSet::new()
            }
            false => persisted.remove(key).unwrap_or_default(),
        }
    }

    /// Keeps a persistent session's filters until it comes back.
    pub fn persist_filters(&self, key: &str, filters: HashSet<String>) {
        self.persisted().insert(key.to_owned(), filters);
    }

    /// The bucket `key` left behind, or `fresh`.
    pub fn take_bucket(&self, key: &str, fresh: TokenBucket) -> TokenBucket {
        lock(&self.buckets).remove(key).unwrap_or(fresh)
    }

    /// Keeps a closing client's bucket unless it would be full already;
    /// forgets those that refilled since.
    pub fn keep_bucket(&self, key: &str, bucket: TokenBucket) {
        let now = std::time::Instant::now();
        let mut buckets = lock(&self.buckets);
        buckets.retain(|_, kept| !kept.is_full(now));
        if !bucket.is_full(now) {
            buckets.insert(key.to_owned(), bucket);
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.live)
    }

    fn persisted(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        lock(&self.persisted)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // invariant: no holder of a registry lock panics while holding it.
    mutex.lock().expect("registry lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claim_ends_the_first_and_waits_for_it() {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let first = registry
            .claim("a", Some("old"), &shutdown, Duration::from_secs(5))
            .await;
        let kicked = first.kicked().clone();
        let ender = tokio::spawn(async move {
            kicked.cancelled().await;
            assert_eq!(first.reason(), Kick::TakenOver);
            drop(first);
        });
        let second = registry
            .claim("a", Some("new"), &shutdown, Duration::from_secs(5))
            .await;
        ender.await.expect("first ended");
        assert_eq!(registry.len(), 1);
        assert!(!registry.kick_if("a", Kick::Superseded, |c| c == Some("old")));
        assert!(!second.kicked().is_cancelled());
        assert!(registry.kick("a", Kick::Revoked));
        assert_eq!(second.reason(), Kick::Revoked);
        drop(second);
        assert!(registry.is_empty());
        assert!(!registry.kick("a", Kick::Revoked));
    }

    #[test]
    fn an_empty_bucket_outlives_its_connection_until_it_refilled() {
        let registry = Registry::default();
        let now = std::time::Instant::now();
        let fresh = || TokenBucket::new(1, 1, now);
        let mut bucket = registry.take_bucket("a", fresh());
        assert_eq!(bucket.take(now), None);
        registry.keep_bucket("a", bucket);
        let mut again = registry.take_bucket("a", fresh());
        assert!(again.take(now).is_some(), "no new burst");
        registry.keep_bucket("b", fresh());
        assert!(
            lock(&registry.buckets).get("b").is_none(),
            "full: forgotten"
        );
    }

    #[test]
    fn persistent_filters_come_back_once_and_a_clean_session_forgets_them() {
        let registry = Registry::default();
        registry.persist_filters("a", HashSet::from(["x".to_string()]));
        assert_eq!(registry.resume_filters("a", false).len(), 1);
        assert!(registry.resume_filters("a", false).is_empty());
        registry.persist_filters("a", HashSet::from(["x".to_string()]));
        assert!(registry.resume_filters("a", true).is_empty());
        assert!(registry.resume_filters("a", false).is_empty());
    }
}
