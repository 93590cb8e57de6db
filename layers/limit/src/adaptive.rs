//! Adaptive capacity: measure latency, drive the pool's capacity between a
//! minimum and a maximum.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::ConfigError;

use crate::pool::PoolInner;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Algorithm {
    Aimd {
        /// Latency above this is a congestion signal.
        latency_threshold: Duration,
        backoff: f64,
    },
    Gradient {
        /// The window over which the lowest latency (the no-queue baseline)
        /// is remembered.
        min_rtt_window: Duration,
        smoothing: f64,
    },
}

/// How [`ResourceLimitLayer::adaptive`](crate::ResourceLimitLayer::adaptive)
/// sizes its pool.
///
/// - [`gradient`](Self::gradient), in the family of Netflix's Gradient2 and
///   Envoy's adaptive concurrency: once per `limit` samples,
///   `limit * min_rtt / mean_rtt + headroom`, smoothed (0.2), where
///   `min_rtt` is the lowest latency seen over the last one or two
///   `min_rtt_window`s (the latency with no queueing) and the headroom is
///   `sqrt(limit) / 2`; it settles a little above the concurrency a
///   backend serves without queueing (about +14% at 16, +7% at 64). While latency is at its floor the limit grows by
///   the headroom; once requests queue, latency rises and the limit falls
///   back towards the concurrency the backend serves without queueing.
/// - [`aimd`](Self::aimd): additive increase (one unit per `limit`
///   samples), multiplicative decrease (`* backoff`) when a request is
///   slower than the threshold.
///
/// ```
/// use tower_hardening_limit::AdaptiveLimit;
///
/// let limit = AdaptiveLimit::gradient().min(4).max(512).initial(16);
/// assert_eq!(limit.bounds(), (4, 512));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    algorithm: Algorithm,
    min: u64,
    max: u64,
    initial: u64,
}

impl AdaptiveLimit {
    /// The gradient algorithm (min-RTT window 30 s, smoothing 0.2).
    pub fn gradient() -> Self {
        AdaptiveLimit {
            algorithm: Algorithm::Gradient {
                min_rtt_window: Duration::from_secs(30),
                smoothing: 0.2,
            },
            min: 1,
            max: 1_000,
            initial: 20,
        }
    }

    /// AIMD (latency threshold 1 s, backoff 0.9).
    pub fn aimd() -> Self {
        AdaptiveLimit {
            algorithm: Algorithm::Aimd {
                latency_threshold: Duration::from_secs(1),
                backoff: 0.9,
            },
            min: 1,
            max: 1_000,
            initial: 20,
        }
    }

    /// The lowest limit (at least 1).
    pub fn min(mut self, min: u64) -> Self {
        self.min = min;
        self
    }

    /// The highest limit.
    pub fn max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// The limit to start from (clamped to the bounds).
    pub fn initial(mut self, initial: u64) -> Self {
        self.initial = initial;
        self
    }

    /// AIMD only: a request slower than `threshold` multiplies the limit by the backoff (0.9).
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        if let Algorithm::Aimd {
            latency_threshold, ..
        } = &mut self.algorithm
        {
            *latency_threshold = threshold;
        }
        self
    }

    /// Gradient only: how long the lowest latency is remembered.
    pub fn min_rtt_window(mut self, window: Duration) -> Self {
        if let Algorithm::Gradient { min_rtt_window, .. } = &mut self.algorithm {
            *min_rtt_window = window;
        }
        self
    }

    /// `(min, max)`.
    pub fn bounds(&self) -> (u64, u64) {
        (self.min, self.max)
    }

    pub(crate) fn validate(&self) -> Result<u64, ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::new("adaptive limit", "min", 0, "at least 1"));
        }
        if self.max < self.min {
            return Err(ConfigError::new(
                "adaptive limit",
                "max",
                self.max,
                "at least min",
            ));
        }
        Ok(self.initial.clamp(self.min, self.max))
    }

    pub(crate) fn controller(&self) -> Controller {
        let limit = self.initial.clamp(self.min, self.max) as f64;
        Controller {
            settings: *self,
            state: Mutex::new(ControllerState {
                limit,
                min_rtt: None,
                previous_min_rtt: None,
                window_started: None,
                successes: 0.0,
                pending: 0,
                pending_sum: Duration::ZERO,
            }),
        }
    }
}

#[derive(Debug)]
struct ControllerState {
    limit: f64,
    /// The lowest latency of the current window...
    min_rtt: Option<Duration>,
    /// ...and of the one before, so the floor never vanishes at a window
    /// boundary.
    previous_min_rtt: Option<Duration>,
    window_started: Option<Instant>,
    successes: f64,
    /// Gradient: samples since the last update, and their latency sum.
    pending: u64,
    pending_sum: Duration,
}

/// Turns latency samples into capacity changes.
#[derive(Debug)]
pub(crate) struct Controller {
    settings: AdaptiveLimit,
    state: Mutex<ControllerState>,
}

impl Controller {
    /// The limit now.
    pub(crate) fn limit(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .limit
            .round() as u64
    }

    /// Feeds one finished request's latency and resizes `pool`.
    pub(crate) fn sample(&self, rtt: Duration, pool: &PoolInner) {
        let new = self.update(rtt, Instant::now());
        pool.set_capacity(new);
    }

    /// The new limit after a sample taken at `now` (public to the crate so
    /// it can be simulated without a pool).
    pub(crate) fn update(&self, rtt: Duration, now: Instant) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (min, max) = (self.settings.min as f64, self.settings.max as f64);
        match self.settings.algorithm {
            Algorithm::Aimd {
                latency_threshold,
                backoff,
            } => {
                if rtt > latency_threshold {
                    state.limit *= backoff;
                } else {
                    state.successes += 1.0;
                    if state.successes >= state.limit {
                        state.successes = 0.0;
                        state.limit += 1.0;
                    }
                }
            }
            Algorithm::Gradient {
                min_rtt_window,
                smoothing,
            } => {
                let started = *state.window_started.get_or_insert(now);
                if now.saturating_duration_since(started) >= min_rtt_window {
                    state.previous_min_rtt = state.min_rtt.take();
                    state.window_started = Some(now);
                }
                state.min_rtt = Some(state.min_rtt.map_or(rtt, |m| m.min(rtt)));
                // One update per `limit` samples (about one round trip of
                // the whole window), from their mean latency: updating on
                // every sample would scale the step with the throughput.
                state.pending += 1;
                state.pending_sum += rtt;
                if (state.pending as f64) < state.limit.round().max(1.0) {
                    return state.limit.round() as u64;
                }
                let mean = state.pending_sum.as_secs_f64() / state.pending as f64;
                state.pending = 0;
                state.pending_sum = Duration::ZERO;
                let floor = match (state.min_rtt, state.previous_min_rtt) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(rtt),
                };
                let gradient = (floor.as_secs_f64() / mean.max(1e-9)).clamp(0.5, 1.0);
                let headroom = state.limit.sqrt() / 2.0;
                let target = state.limit * gradient + headroom;
                state.limit = state.limit * (1.0 - smoothing) + target * smoothing;
            }
        }
        state.limit = state.limit.clamp(min, max);
        state.limit.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that serves `best` requests at once in 10 ms; beyond
    /// that, requests queue and latency grows in proportion.
    fn latency(in_flight: u64, best: u64) -> Duration {
        let base = Duration::from_millis(10);
        if in_flight <= best {
            base
        } else {
            base.mul_f64(in_flight as f64 / best as f64)
        }
    }

    /// Closed-loop load that always fills the limit; one sample per
    /// request, `limit` requests per latency period. Returns the limit
    /// after `seconds` of simulated time, and checks it stays within 25%
    /// of `best` over the last part of the run.
    fn run(
        controller: &Controller,
        start: Instant,
        from: f64,
        seconds: f64,
        best: u64,
    ) -> (u64, f64) {
        let mut now = from;
        let mut settled_at = None;
        let mut limit = controller.limit();
        while now < from + seconds {
            let rtt = latency(limit, best);
            // `limit` requests finish every `rtt`.
            let requests = limit;
            for _ in 0..requests {
                limit = controller.update(rtt, start + Duration::from_secs_f64(now));
            }
            now += rtt.as_secs_f64();
            let within = (limit as f64 - best as f64).abs() <= 0.25 * best as f64;
            match (within, settled_at) {
                (true, None) => settled_at = Some(now - from),
                (false, Some(_)) => settled_at = None,
                _ => {}
            }
        }
        (limit, settled_at.unwrap_or(f64::INFINITY))
    }

    #[test]
    fn gradient_follows_the_best_concurrency_within_ten_seconds() {
        let controller = AdaptiveLimit::gradient()
            .min(4)
            .max(512)
            .initial(16)
            .controller();
        let start = Instant::now();
        let mut t = 0.0;
        for best in [16, 64, 16, 64] {
            let (limit, settled) = run(&controller, start, t, 10.0, best);
            assert!(
                settled <= 10.0,
                "best {best}: limit {limit} not within 25% for good within 10 s"
            );
            t += 10.0;
        }
    }

    #[test]
    fn aimd_backs_off_when_slow_and_grows_when_fast() {
        let controller = AdaptiveLimit::aimd()
            .min(2)
            .max(100)
            .initial(50)
            .latency_threshold(Duration::from_millis(100))
            .controller();
        let now = Instant::now();
        let after_slow = controller.update(Duration::from_millis(200), now);
        assert_eq!(after_slow, 45);
        for _ in 0..45 {
            controller.update(Duration::from_millis(10), now);
        }
        assert_eq!(controller.limit(), 46);
        for _ in 0..200 {
            controller.update(Duration::from_secs(1), now);
        }
        assert_eq!(controller.limit(), 2, "never below min");
    }
}
