//! The event-loop probe: a task that sleeps in short steps and records how
//! late each timer fired. A worker blocked by synchronous work (or a
//! runtime with more ready tasks than it can run) makes it late.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::sync::lock;

use crate::performance::EventLoopLatency;

/// How often the probe wakes: short enough to see a 100 ms stall, long
/// enough to cost nothing (20 wake-ups a second).
pub(crate) const PROBE_PERIOD: Duration = Duration::from_millis(50);

/// At most this many samples are kept between two readings (more than a
/// minute of probes); beyond, the oldest half is dropped.
const MAX_SAMPLES: usize = 2_048;

/// Lateness samples since the last reading.
#[derive(Debug, Default)]
pub(crate) struct LatencySamples {
    samples: Mutex<Vec<Duration>>,
}

impl LatencySamples {
    fn record(&self, late: Duration) {
        let mut samples = lock(&self.samples);
        if samples.len() >= MAX_SAMPLES {
            samples.drain(..MAX_SAMPLES / 2);
        }
        samples.push(late);
    }

    /// Mean, p99 and max of the samples since the last call, which are
    /// then forgotten.
    pub(crate) fn take(&self) -> EventLoopLatency {
        let mut samples = std::mem::take(&mut *lock(&self.samples));
        if samples.is_empty() {
            return EventLoopLatency::default();
        }
        samples.sort_unstable();
        let count = samples.len();
        let total: Duration = samples.iter().sum();
        let p99_index = ((count as f64 * 0.99).ceil() as usize).clamp(1, count) - 1;
        EventLoopLatency {
            mean: total / u32::try_from(count).unwrap_or(u32::MAX),
            p99: samples[p99_index],
            max: samples[count - 1],
            samples: count as u64,
        }
    }
}

/// Runs the probe until dropped (aborted).
pub(crate) async fn run(samples: Arc<LatencySamples>) {
    loop {
        let deadline = Instant::now() + PROBE_PERIOD;
        tokio::time::sleep_until(deadline).await;
        samples.record(Instant::now().saturating_duration_since(deadline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_samples() {
        let samples = LatencySamples::default();
        for ms in 1..=100 {
            samples.record(Duration::from_millis(ms));
        }
        let reading = samples.take();
        assert_eq!(reading.max, Duration::from_millis(100));
        assert_eq!(reading.p99, Duration::from_millis(99));
        assert_eq!(reading.samples, 100);
        assert_eq!(samples.take(), EventLoopLatency::default());
    }
}
