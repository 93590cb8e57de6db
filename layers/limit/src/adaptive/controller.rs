//! Turning finished requests into a limit: AIMD and gradient.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_limit::{AdaptiveLimit, ResourceLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = ResourceLimitLayer::adaptive(AdaptiveLimit::aimd().initial(4))
//!     .unwrap()
//!     .priority(|_: &u32| Default::default());
//! let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! for n in 0..4 {
//!     svc.ready().await.unwrap().call(n).await.unwrap(); // fast successes
//! }
//! assert_eq!(layer.adaptive_limit(), Some(5)); // + 1 per `limit` of them
//! # }
//! ```

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::{Outcome, sync};

use super::limit::{AdaptiveLimit, Algorithm};
use crate::pool::PoolInner;

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
    /// AIMD: when the limit last went down; slow requests that started
    /// before it do not take it down again.
    last_decrease: Option<Instant>,
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
    pub(super) fn new(settings: AdaptiveLimit) -> Self {
        let limit = settings.initial.clamp(settings.min, settings.max) as f64;
        Controller {
            settings,
            state: Mutex::new(ControllerState {
                limit,
                min_rtt: None,
                previous_min_rtt: None,
                window_started: None,
                successes: 0.0,
                last_decrease: None,
                pending: 0,
                pending_sum: Duration::ZERO,
            }),
        }
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> u64 {
        sync::lock(&self.state).limit.round() as u64
    }

    /// Feeds one finished request (admitted at `started`) and resizes
    /// `pool`.
    pub(crate) fn sample(&self, started: Instant, outcome: Outcome, pool: &PoolInner) {
        let now = Instant::now();
        let rtt = now.saturating_duration_since(started);
        let new = self.update(rtt, started, outcome, now);
        pool.set_capacity(new);
    }

    /// The new limit after a request admitted at `started` finished at
    /// `now`, `rtt` later (separate from the pool so it can be simulated).
    pub(crate) fn update(
        &self,
        rtt: Duration,
        started: Instant,
        outcome: Outcome,
        now: Instant,
    ) -> u64 {
        let mut state = sync::lock(&self.state);
        if outcome == Outcome::Ignored {
            return state.limit.round() as u64;
        }
        let (min, max) = (self.settings.min as f64, self.settings.max as f64);
        match self.settings.algorithm {
            Algorithm::Aimd {
                latency_threshold,
                backoff,
            } => {
                if rtt > latency_threshold {
                    // Once per round trip: requests already in flight at
                    // the last decrease saw the same congestion.
                    if state.last_decrease.is_none_or(|at| started > at) {
                        state.limit *= backoff;
                        state.successes = 0.0;
                        state.last_decrease = Some(now);
                    }
                } else if outcome == Outcome::Success {
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
                let window_start = *state.window_started.get_or_insert(now);
                if now.saturating_duration_since(window_start) >= min_rtt_window {
                    state.previous_min_rtt = state.min_rtt.take();
                    state.window_started = Some(now);
                }
                state.min_rtt = Some(state.min_rtt.map_or(rtt, |m| m.min(rtt)));
                // One update per `limit` samples (about one round trip of
                // the whole window), from their mean latency: updating on
                // every sample would scale the step with the throughput.
                state.pending += 1;
                state.pending_sum = state.pending_sum.saturating_add(rtt);
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

    /// A request that took `rtt` and finished at `now`.
    fn finish(controller: &Controller, rtt: Duration, now: Instant, outcome: Outcome) -> u64 {
        controller.update(rtt, now - rtt, outcome, now)
    }

    /// A clock far enough from its origin that `now - rtt` never underflows.
    fn origin() -> Instant {
        Instant::now() + Duration::from_secs(3_600)
    }

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
    /// after `seconds` of simulated time, and when it was last within 25%
    /// of `best` for good.
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
                let at = start + Duration::from_secs_f64(now);
                limit = finish(controller, rtt, at, Outcome::Success);
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
        let start = origin();
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

    fn aimd(initial: u64) -> Controller {
        AdaptiveLimit::aimd()
            .min(2)
            .max(100)
            .initial(initial)
            .latency_threshold(Duration::from_millis(100))
            .controller()
    }

    #[test]
    fn aimd_backs_off_when_slow_and_grows_when_fast() {
        let controller = aimd(50);
        let mut now = origin();
        let slow = Duration::from_millis(200);
        assert_eq!(finish(&controller, slow, now, Outcome::Success), 45);
        for _ in 0..45 {
            finish(
                &controller,
                Duration::from_millis(10),
                now,
                Outcome::Success,
            );
        }
        assert_eq!(controller.limit(), 46);
        // One slow request at a time (each started after the last
        // decrease): every one is a new round trip, and counts.
        for _ in 0..200 {
            now += Duration::from_secs(1);
            finish(&controller, slow, now, Outcome::Success);
        }
        assert_eq!(controller.limit(), 2, "never below min");
    }

    // Issue 9, item 12: N concurrent slow responses took the limit down
    // by 0.9^N (50 -> 17 for ten); one congestion event is one decrease.
    #[test]
    fn aimd_decreases_once_for_concurrent_slow_responses() {
        let controller = aimd(50);
        let now = origin();
        let slow = Duration::from_millis(200);
        // Ten requests in flight together, all slow, finishing within 5 ms
        // of one another.
        for n in 0..10 {
            let at = now + Duration::from_millis(n / 2);
            finish(&controller, slow, at, Outcome::Success);
        }
        assert_eq!(controller.limit(), 45, "one decrease, not 0.9^10");
        // A slow request that started after that decrease is new evidence.
        let later = now + Duration::from_millis(300);
        assert_eq!(finish(&controller, slow, later, Outcome::Success), 41);
    }

    // Issue 9, item 12: fast failures (an outage answering at once) grew
    // the limit like successes.
    #[test]
    fn aimd_grows_on_successes_only() {
        let controller = aimd(10);
        let now = origin();
        let fast = Duration::from_millis(1);
        for _ in 0..100 {
            finish(&controller, fast, now, Outcome::Failure);
            finish(&controller, fast, now, Outcome::Ignored);
        }
        assert_eq!(controller.limit(), 10, "failures and ignored never grow it");
        for _ in 0..10 {
            finish(&controller, fast, now, Outcome::Success);
        }
        assert_eq!(controller.limit(), 11);
        // A slow failure (a timeout) is a congestion signal all the same.
        let slow = Duration::from_millis(500);
        assert_eq!(finish(&controller, slow, now + slow, Outcome::Failure), 10);
    }

    #[test]
    fn durations_at_the_limit_never_panic() {
        let controller = AdaptiveLimit::aimd()
            .latency_threshold(Duration::MAX)
            .controller();
        let now = origin();
        finish(&controller, Duration::from_secs(1), now, Outcome::Success);
        let controller = AdaptiveLimit::gradient()
            .min_rtt_window(Duration::MAX)
            .initial(1)
            .controller();
        for _ in 0..3 {
            controller.update(Duration::MAX, now, Outcome::Success, now);
        }
        assert!(
            AdaptiveLimit::aimd()
                .latency_threshold(Duration::ZERO)
                .validate()
                .is_err()
        );
    }
}
