//! Latency percentiles from an HdrHistogram (microsecond resolution, 3 significant digits).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    h: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (1 µs to 1 h, 3 significant digits).
    pub fn new() -> Self {
        let h = Histogram::new_with_bounds(1, MAX_US, 3)
            .or_else(|_| Histogram::new(3))
            .unwrap_or_else(|_| unreachable!("3 significant digits is a valid precision"));
        Self { h }
    }

    /// Record a latency given in nanoseconds (clamped to 1 µs ..= 1 h).
    pub fn record_ns(&mut self, ns: u64) {
        let us = (ns / 1_000).clamp(1, MAX_US);
        let _ = self.h.record(us);
    }

    /// Recorded values.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Add another histogram's values.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        let _ = self.h.add(&other.h);
    }

    /// The percentiles (`None` when empty).
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.h.is_empty() {
            return None;
        }
        let q = |x: f64| self.h.value_at_quantile(x);
        Some(Percentiles {
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.h.max(),
            mean_us: self.h.mean(),
            count: self.h.len(),
        })
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Values recorded.
    pub count: u64,
}

/// `1234` µs as `1.23ms`, `850` as `850µs`, `2_500_000` as `2.50s`.
pub fn human_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let mut h = LatencyHistogram::new();
        assert!(h.percentiles().is_none());
        for us in 1..=1000u64 {
            h.record_ns(us * 1_000);
        }
        let p = h.percentiles().expect("values");
        assert_eq!(
            (p.p50_us, p.p90_us, p.p99_us, p.count),
            (500, 900, 990, 1000)
        );
        assert_eq!(p.max_us, 1000);
        assert_eq!(human_us(1_500), "1.50ms");
        assert_eq!(human_us(15), "15µs");
    }
}
