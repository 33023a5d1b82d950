//! Flow control of each connection: a token bucket (`TokenBucket`): a
//! device publishing above its rate waits for tokens, through TCP; and the
//! watch that tells a flooder from a client that bursts now and then
//! (`FloodWatch`). The window between all connections and the ingest
//! thread is `broker::window::IngestWindow` (ingest reads it too).

use std::time::{Duration, Instant};

/// A per-connection rate limit: `rate` tokens a second up to `burst`.
/// A rate of 0 means no limit.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// A bucket that never empties.
    pub fn unlimited() -> TokenBucket {
        TokenBucket::new(0, 1, Instant::now())
    }

    /// A rate of 0: never waits.
    pub fn is_unlimited(&self) -> bool {
        self.rate == 0.0
    }

    /// Would the bucket be full at `now` (as good as a new one)?
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.rate == 0.0 || self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes one token; `None` if one was there, else how long until one
    /// will be (the caller waits that long, then takes it).
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        if self.rate == 0.0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// Tells a connection that has been throttled without pause for too long
/// apart from one that bursts now and then.
#[derive(Debug, Default)]
pub struct FloodWatch {
    /// Since when every message had to wait for its token.
    throttled_since: Option<Instant>,
}

impl FloodWatch {
    /// Records whether the message just taken had to wait; true when the
    /// connection has been throttled for `limit` or longer.
    pub fn observe(&mut self, waited: bool, now: Instant, limit: Duration) -> bool {
        if !waited {
            self.throttled_since = None;
            return false;
        }
        let since = *self.throttled_since.get_or_insert(now);
        !limit.is_zero() && now.saturating_duration_since(since) >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_one_token_per_interval() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), None);
        }
        let wait = bucket.take(start).expect("empty");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // After the wait the token taken above is paid for.
        assert_eq!(bucket.take(start + Duration::from_millis(200)), None);
    }

    #[test]
    fn a_bucket_refills_to_full() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, start);
        assert!(bucket.is_full(start));
        bucket.take(start);
        assert!(!bucket.is_full(start));
        assert!(bucket.is_full(start + Duration::from_millis(100)));
    }

    #[test]
    fn a_zero_rate_never_waits() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0, 1, start);
        for _ in 0..1000 {
            assert_eq!(bucket.take(start), None);
        }
    }

    #[test]
    fn flooding_is_throttling_without_pause() {
        let start = Instant::now();
        let limit = Duration::from_secs(10);
        let mut watch = FloodWatch::default();
        assert!(!watch.observe(true, start, limit));
        assert!(!watch.observe(true, start + Duration::from_secs(9), limit));
        assert!(!watch.observe(false, start + Duration::from_secs(9), limit));
        assert!(!watch.observe(true, start + Duration::from_secs(12), limit));
        assert!(watch.observe(true, start + Duration::from_secs(22), limit));
    }
}
