//! The upstream's observed latency: the last successful attempts'
//! durations and their 95th percentile, the hedging delay when it is
//! `p95`. No tower types.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower_hardening_core::sync::lock;

/// Samples kept.
const SAMPLES: usize = 256;
/// The percentile is computed again every this many samples.
const RECOMPUTE_EVERY: u64 = 16;
/// Samples needed before a percentile is given.
pub(crate) const MIN_SAMPLES: u64 = 20;

/// A ring of recent latencies and their cached 95th percentile.
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    samples: Mutex<Ring>,
    /// The cached p95 in nanoseconds (0: not enough samples yet).
    p95_nanos: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    values: Vec<u64>,
    next: usize,
    recorded: u64,
}

impl LatencyWindow {
    pub(crate) fn new() -> Self {
        LatencyWindow {
            samples: Mutex::new(Ring {
                values: Vec::with_capacity(SAMPLES),
                next: 0,
                recorded: 0,
            }),
            p95_nanos: AtomicU64::new(0),
        }
    }

    /// Records one successful attempt's duration.
    pub(crate) fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let mut ring = lock(&self.samples);
        if ring.values.len() < SAMPLES {
            ring.values.push(nanos);
        } else {
            let next = ring.next;
            ring.values[next] = nanos;
        }
        ring.next = (ring.next + 1) % SAMPLES;
        ring.recorded += 1;
        if ring.recorded >= MIN_SAMPLES
            && (ring.recorded.is_multiple_of(RECOMPUTE_EVERY) || ring.recorded == MIN_SAMPLES)
        {
            let mut sorted = ring.values.clone();
            drop(ring);
            sorted.sort_unstable();
            let index = (sorted.len() * 95).div_ceil(100).saturating_sub(1);
            self.p95_nanos.store(
                sorted[index.min(sorted.len() - 1)].max(1),
                Ordering::Relaxed,
            );
        }
    }

    /// The 95th percentile of the recent samples, once there are enough.
    pub(crate) fn p95(&self) -> Option<Duration> {
        match self.p95_nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_after_enough_samples() {
        let window = LatencyWindow::new();
        for ms in 1..MIN_SAMPLES {
            window.record(Duration::from_millis(ms));
        }
        assert_eq!(window.p95(), None);
        window.record(Duration::from_millis(20));
        // 1..=20 ms: the 19th of 20.
        assert_eq!(window.p95(), Some(Duration::from_millis(19)));
        // 95 fast calls and 5 slow ones in the window: p95 is fast.
        let window = LatencyWindow::new();
        for i in 0..256u64 {
            let slow = i % 20 == 0;
            window.record(Duration::from_millis(if slow { 500 } else { 5 }));
        }
        let p95 = window.p95().unwrap();
        assert!(p95 <= Duration::from_millis(500), "{p95:?}");
    }
}
