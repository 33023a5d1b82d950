//! Latency recording: an HdrHistogram per connection (no locks on the hot
//! path), merged at the end into the percentiles the report shows.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds; longer ones are clamped.
const MAX_MICROS: u64 = 60_000_000;

/// Round-trip times of one kind (PUBACK, event ack), in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // invariant: 1 ≤ low < high / 2 and 3 significant figures are valid bounds.
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
        }
    }
}

impl Latency {
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(MAX_MICROS);
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn merge(&mut self, other: &Latency) {
        // invariant: both histograms have the same bounds, so adding cannot fail.
        self.histogram.add(&other.histogram).expect("same bounds");
    }

    /// The percentiles, `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |q: f64| self.histogram.value_at_quantile(q);
        Some(Percentiles {
            count: self.histogram.len(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: self.histogram.max(),
        })
    }
}

/// What the report shows of a [`Latency`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_merged_recordings() {
        assert_eq!(Latency::default().percentiles(), None);
        let (mut a, mut b) = (Latency::default(), Latency::default());
        for ms in 1..=99 {
            a.record(Duration::from_millis(ms));
        }
        b.record(Duration::from_secs(2));
        a.merge(&b);
        let p = a.percentiles().unwrap();
        assert_eq!(p.count, 100);
        assert!((49_900..=50_100).contains(&p.p50_us), "{p:?}");
        assert!((98_900..=99_100).contains(&p.p99_us), "{p:?}");
        assert!((1_999_000..=2_001_000).contains(&p.max_us), "{p:?}");
        a.record(Duration::from_secs(3600));
        // Clamped, within the histogram's precision (3 significant figures).
        let max = a.percentiles().unwrap().max_us;
        assert!(
            (MAX_MICROS..=MAX_MICROS + MAX_MICROS / 1000).contains(&max),
            "{max}"
        );
    }
}
