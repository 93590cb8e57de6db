//! Outlier detection: when one endpoint's own record (consecutive
//! failures, failure rate) takes it out of rotation, for how long, and
//! how many endpoints may be out at once. No tower types: tested without
//! a runtime.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::Outcome;

/// When an endpoint is ejected, and for how long. Envoy's names where they
/// fit.
///
/// ```
/// use std::time::Duration;
/// use tower_hardening_upstream::OutlierPolicy;
///
/// let policy = OutlierPolicy {
///     consecutive_failures: 5,
///     base_ejection_time: Duration::from_secs(30),
///     max_ejection_percent: 50,
///     ..OutlierPolicy::default()
/// };
/// assert_eq!(policy.ejection_time(1), Duration::from_secs(30));
/// assert_eq!(policy.ejection_time(3), Duration::from_secs(90));
/// assert_eq!(policy.max_ejected(3), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    /// Whether endpoints are ejected at all (default on).
    pub enabled: bool,
    /// Failures in a row that eject an endpoint (default 5; 0: never on
    /// this rule).
    pub consecutive_failures: u32,
    /// The failure rate over the last `failure_rate_window` calls that
    /// ejects an endpoint, in (0, 1]; `None` (the default): never on this
    /// rule.
    pub failure_rate: Option<f64>,
    /// How many of an endpoint's last calls the failure rate is taken over
    /// (default 100).
    pub failure_rate_window: u32,
    /// Calls in the window before the failure rate is trusted (default 20).
    pub failure_rate_minimum_calls: u32,
    /// The first ejection's length; the n-th lasts n times as long (default
    /// 30 s). The count goes down by one for each such time the endpoint
    /// stays in rotation.
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts, however many came before (default
    /// 300 s, Envoy's).
    pub max_ejection_time: Duration,
    /// The most endpoints ejected at once, in percent of the upstream's
    /// endpoints (default 50). One endpoint may always be ejected, as in
    /// Envoy; with every endpoint out anyway, all are called (panic
    /// routing).
    pub max_ejection_percent: u8,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: None,
            failure_rate_window: 100,
            failure_rate_minimum_calls: 20,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierPolicy {
    /// How long the `ejections`-th ejection lasts: the base time times
    /// `ejections`, at most `max_ejection_time`.
    pub fn ejection_time(&self, ejections: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(ejections.max(1))
            .min(self.max_ejection_time)
    }

    /// How many of `endpoints` may be ejected at once: `max_ejection_percent`
    /// of them, rounded down, but at least one (Envoy's rule).
    pub fn max_ejected(&self, endpoints: usize) -> usize {
        let percent = usize::from(self.max_ejection_percent.min(100));
        (endpoints * percent / 100).max(1)
    }
}

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// The failure rate over the window reached `failure_rate`.
    FailureRate,
}

impl EjectionReason {
    /// The reason in snake case, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectionReason::ConsecutiveFailures => "consecutive_failures",
            EjectionReason::FailureRate => "failure_rate",
        }
    }
}

/// One endpoint's record: what the outlier rules read.
#[derive(Debug)]
pub(crate) struct Record {
    consecutive_failures: u32,
    /// The last calls' outcomes, `true` for a failure.
    window: VecDeque<bool>,
    window_failures: u32,
    /// Times ejected so far.
    pub(crate) ejections: u32,
    /// Mean latency (EWMA over successes and failures), for reports.
    pub(crate) latency: Option<Duration>,
    /// When it last came back from an ejection.
    returned_at: Option<Instant>,
}

impl Record {
    pub(crate) fn new() -> Self {
        Record {
            consecutive_failures: 0,
            window: VecDeque::new(),
            window_failures: 0,
            ejections: 0,
            latency: None,
            returned_at: None,
        }
    }

    /// The failure rate over the window (0 with no calls).
    pub(crate) fn failure_rate(&self) -> f64 {
        if self.window.is_empty() {
            0.0
        } else {
            f64::from(self.window_failures) / self.window.len() as f64
        }
    }

    /// Calls in the window.
    pub(crate) fn calls(&self) -> usize {
        self.window.len()
    }

    /// Records one call; returns why the endpoint should be ejected now, if
    /// it should. `Ignored` calls count for nothing.
    pub(crate) fn record(
        &mut self,
        policy: &OutlierPolicy,
        outcome: Outcome,
        latency: Duration,
    ) -> Option<EjectionReason> {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return None,
        };
        self.latency = Some(match self.latency {
            None => latency,
            Some(mean) => mean.mul_f64(0.8) + latency.mul_f64(0.2),
        });
        let size = policy.failure_rate_window.max(1) as usize;
        while self.window.len() >= size {
            if self.window.pop_front() == Some(true) {
                self.window_failures -= 1;
            }
        }
        self.window.push_back(failed);
        if failed {
            self.window_failures += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        } else {
            self.consecutive_failures = 0;
        }
        if !policy.enabled {
            return None;
        }
        if policy.consecutive_failures > 0
            && self.consecutive_failures >= policy.consecutive_failures
        {
            return Some(EjectionReason::ConsecutiveFailures);
        }
        if let Some(threshold) = policy.failure_rate
            && self.window.len() >= policy.failure_rate_minimum_calls.max(1) as usize
            && self.failure_rate() >= threshold
        {
            return Some(EjectionReason::FailureRate);
        }
        None
    }

    /// The endpoint came back into rotation at `at`.
    pub(crate) fn returned(&mut self, at: Instant) {
        self.returned_at = Some(at);
    }

    /// The endpoint was ejected at `now`: its record starts afresh (it is
    /// judged on what it does after it returns), and it counts one
    /// ejection more, after one less for each `base_ejection_time` it
    /// stayed in rotation since it last returned (Envoy's decay of the
    /// multiplier: an endpoint that flapped once long ago starts short).
    pub(crate) fn ejected(&mut self, policy: &OutlierPolicy, now: Instant) -> u32 {
        self.consecutive_failures = 0;
        self.window.clear();
        self.window_failures = 0;
        if let Some(returned) = self.returned_at.take() {
            let base = policy.base_ejection_time.as_nanos().max(1);
            let periods = now.saturating_duration_since(returned).as_nanos() / base;
            self.ejections = self
                .ejections
                .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
        }
        self.ejections = self.ejections.saturating_add(1);
        self.ejections
    }
}

/// `at + by`, or thirty years from `at` when that does not fit (a
/// duration near `Duration::MAX` from a custom policy or pushback reader
/// must not panic on the request path).
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// Times as nanoseconds since an epoch, in an atomic (0: none), so that
/// choosing an endpoint reads them without a lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// `at` as a non-zero stamp.
    pub(crate) fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The time a stamp stands for.
    pub(crate) fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            ..OutlierPolicy::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_them() {
        let policy = policy();
        let mut record = Record::new();
        let ms = Duration::from_millis(1);
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
        assert_eq!(record.record(&policy, Outcome::Success, ms), None);
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
        assert_eq!(record.record(&policy, Outcome::Ignored, ms), None);
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
        assert_eq!(
            record.record(&policy, Outcome::Failure, ms),
            Some(EjectionReason::ConsecutiveFailures)
        );
        assert_eq!(record.ejected(&policy, Instant::now()), 1);
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
    }

    #[test]
    fn the_ejection_count_decays_while_the_endpoint_stays_in_rotation() {
        let policy = policy(); // base 30 s
        let mut record = Record::new();
        let start = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(record.ejected(&policy, start), 1);
        record.returned(start + s(30));
        // Failing again at once: out for twice as long.
        assert_eq!(record.ejected(&policy, start + s(31)), 2);
        record.returned(start + s(91));
        // In rotation for 65 s (two base times): 2 - 2 + 1.
        assert_eq!(record.ejected(&policy, start + s(156)), 1);
        record.returned(start + s(186));
        // Long after: never below one.
        assert_eq!(record.ejected(&policy, start + s(100_000)), 1);
    }

    #[test]
    fn the_failure_rate_ejects_after_the_minimum_calls() {
        let policy = OutlierPolicy {
            consecutive_failures: 0,
            failure_rate: Some(0.5),
            failure_rate_window: 10,
            failure_rate_minimum_calls: 4,
            ..OutlierPolicy::default()
        };
        let mut record = Record::new();
        let ms = Duration::from_millis(1);
        // Alternating: 50%, never three in a row.
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
        assert_eq!(record.record(&policy, Outcome::Success, ms), None);
        assert_eq!(record.record(&policy, Outcome::Failure, ms), None);
        assert_eq!(
            record.record(&policy, Outcome::Success, ms),
            Some(EjectionReason::FailureRate)
        );
        // The window slides: ten successes bring the rate to 0.
        record.ejected(&policy, Instant::now());
        for _ in 0..10 {
            assert_eq!(record.record(&policy, Outcome::Success, ms), None);
        }
        assert_eq!(record.failure_rate(), 0.0);
        assert_eq!(record.calls(), 10);
    }

    #[test]
    fn disabled_never_ejects() {
        let policy = OutlierPolicy {
            enabled: false,
            ..policy()
        };
        let mut record = Record::new();
        for _ in 0..10 {
            assert_eq!(
                record.record(&policy, Outcome::Failure, Duration::ZERO),
                None
            );
        }
    }

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let policy = OutlierPolicy {
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
            ..OutlierPolicy::default()
        };
        assert_eq!(policy.ejection_time(0), Duration::from_secs(30));
        assert_eq!(policy.ejection_time(2), Duration::from_secs(60));
        assert_eq!(policy.ejection_time(4), Duration::from_secs(100));
        assert_eq!(policy.ejection_time(u32::MAX), Duration::from_secs(100));
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected() {
        let policy = OutlierPolicy {
            max_ejection_percent: 10,
            ..OutlierPolicy::default()
        };
        assert_eq!(policy.max_ejected(3), 1);
        assert_eq!(policy.max_ejected(30), 3);
        let all = OutlierPolicy {
            max_ejection_percent: 100,
            ..OutlierPolicy::default()
        };
        assert_eq!(all.max_ejected(3), 3);
    }
}
