//! A lock-free latency histogram for the request hot path, encoded in Prometheus' histogram format.
//!
//! prometheus-client's `Histogram` takes a mutex and scans its bounds as `f64` on every observation;
//! two of those per request were most of what metrics cost a request (callgrind, BENCHMARKS.md). Here
//! an observation is one binary search over integer nanosecond bounds and two relaxed atomic adds (the
//! bucket and the sum); the count and the cumulative buckets are computed when Prometheus scrapes. A
//! scrape that races observations may see a sum a little ahead of or behind the buckets, as with any
//! lock-free exporter; each bucket and the total never go backwards.
//!
//! [`HistSum`] encodes several histograms with the same bounds as one (ZooKeeper's `readlatency` and
//! `updatelatency` are the sums of the per-opcode histograms), so a request is observed once.
//!
//! Left out: exemplars, native (sparse) histograms.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bucket upper bounds shared by every request histogram, in nanoseconds: 0.1 ms to 10 s.
pub const REQUEST_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The unit a histogram is exposed in (observations are always nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Seconds (Roster's own `roster_*` metrics).
    Seconds,
    /// Milliseconds (ZooKeeper's latency metrics).
    Millis,
}

impl Scale {
    fn of_ns(self, ns: u64) -> f64 {
        match self {
            Scale::Seconds => ns as f64 / 1e9,
            Scale::Millis => ns as f64 / 1e6,
        }
    }
}

#[derive(Debug)]
struct Inner {
    bounds: &'static [u64],
    /// Per bucket, not cumulative; the last is above every bound (+Inf).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram of durations; clones share the same counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
    scale: Scale,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending, nanoseconds), exposed in `scale`.
    pub fn new(bounds: &'static [u64], scale: Scale) -> AtomicHistogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        AtomicHistogram {
            inner: Arc::new(Inner {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
            }),
            scale,
        }
    }

    /// The request histogram: [`REQUEST_BOUNDS_NS`], in seconds.
    pub fn requests() -> AtomicHistogram {
        AtomicHistogram::new(&REQUEST_BOUNDS_NS, Scale::Seconds)
    }

    /// Records one duration.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets count observations <= their bound: the first bound >= ns.
        let i = self.inner.bounds.partition_point(|b| *b < ns);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn add_into(&self, counts: &mut [u64], sum_ns: &mut u64) {
        for (acc, c) in counts.iter_mut().zip(self.inner.counts.iter()) {
            *acc += c.load(Ordering::Relaxed);
        }
        *sum_ns = sum_ns.wrapping_add(self.inner.sum_ns.load(Ordering::Relaxed));
    }
}

fn encode(
    encoder: &mut MetricEncoder,
    bounds: &[u64],
    scale: Scale,
    counts: &[u64],
    sum_ns: u64,
) -> Result<(), std::fmt::Error> {
    // The encoder makes the buckets cumulative itself; the last bound is +Inf.
    let buckets: Vec<(f64, u64)> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let le = bounds.get(i).map_or(f64::INFINITY, |b| scale.of_ns(*b));
            (le, *c)
        })
        .collect();
    let total = counts.iter().sum();
    encoder.encode_histogram::<NoLabelSet>(scale.of_ns(sum_ns), total, &buckets, None)
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = vec![0u64; self.inner.counts.len()];
        let mut sum_ns = 0;
        self.add_into(&mut counts, &mut sum_ns);
        encode(&mut encoder, self.inner.bounds, self.scale, &counts, sum_ns)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Several histograms with the same bounds, exposed as their sum.
#[derive(Debug, Clone)]
pub struct HistSum {
    parts: Vec<AtomicHistogram>,
    bounds: &'static [u64],
    scale: Scale,
}

impl HistSum {
    /// The sum of `parts` (all over `bounds`), exposed in `scale`.
    pub fn new(parts: Vec<AtomicHistogram>, bounds: &'static [u64], scale: Scale) -> HistSum {
        debug_assert!(parts.iter().all(|p| p.inner.bounds == bounds));
        HistSum {
            parts,
            bounds,
            scale,
        }
    }
}

impl TypedMetric for HistSum {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistSum {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = vec![0u64; self.bounds.len() + 1];
        let mut sum_ns = 0;
        for p in &self.parts {
            p.add_into(&mut counts, &mut sum_ns);
        }
        encode(&mut encoder, self.bounds, self.scale, &counts, sum_ns)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = AtomicHistogram::requests();
        h.observe(Duration::from_micros(100)); // exactly on the first bound
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60)); // above every bound
        let mut r = Registry::default();
        r.register("lat", "test", h.clone());
        let t = text(&r);
        assert!(t.contains("lat_bucket{le=\"0.0001\"} 1\n"), "{t}");
        assert!(t.contains("lat_bucket{le=\"0.00025\"} 2\n"), "{t}");
        assert!(t.contains("lat_bucket{le=\"10.0\"} 2\n"), "{t}");
        assert!(t.contains("lat_bucket{le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("lat_count 3\n"), "{t}");
        assert!(t.contains("lat_sum 60.000201\n"), "{t}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn a_sum_adds_its_parts_in_its_own_unit() {
        let a = AtomicHistogram::requests();
        let b = AtomicHistogram::requests();
        a.observe(Duration::from_millis(2));
        b.observe(Duration::from_millis(3));
        b.observe(Duration::from_millis(30));
        let mut r = Registry::default();
        r.register(
            "readlatency",
            "test",
            HistSum::new(vec![a, b], &REQUEST_BOUNDS_NS, Scale::Millis),
        );
        let t = text(&r);
        assert!(t.contains("readlatency_bucket{le=\"2.5\"} 1\n"), "{t}");
        assert!(t.contains("readlatency_bucket{le=\"5.0\"} 2\n"), "{t}");
        assert!(t.contains("readlatency_bucket{le=\"50.0\"} 3\n"), "{t}");
        assert!(t.contains("readlatency_count 3\n"), "{t}");
        assert!(t.contains("readlatency_sum 35.0\n"), "{t}");
    }
}
