//! How an adaptive limit is configured: the algorithm, its bounds and
//! its settings, checked before use.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_limit::{AdaptiveLimit, ResourceLimitLayer};
//!
//! let err = ResourceLimitLayer::adaptive(AdaptiveLimit::aimd().min(8).max(4)).unwrap_err();
//! assert_eq!(err.field(), "max");
//! let err = ResourceLimitLayer::adaptive(AdaptiveLimit::aimd().latency_threshold(Duration::ZERO))
//!     .unwrap_err();
//! assert_eq!(err.field(), "latency_threshold");
//! ```

use std::time::Duration;

use tower_hardening_core::ConfigError;

use super::controller::Controller;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Algorithm {
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
///   successful requests faster than the threshold), multiplicative
///   decrease (`* 0.9`) when a request is slower than the threshold, at
///   most once per round trip: after a decrease, slow requests that
///   started before it are the same congestion and are not counted again.
///   Failures (as the layer's [classifier](crate::ResourceLimitLayer::classify)
///   says) never grow the limit: fast failures during an outage are not
///   spare capacity.
///
/// Samples the classifier calls `Ignored` feed neither algorithm; a
/// cancelled or panicked request feeds nothing.
///
/// ```
/// use tower_hardening_limit::AdaptiveLimit;
///
/// let limit = AdaptiveLimit::gradient().min(4).max(512).initial(16);
/// assert_eq!(limit.bounds(), (4, 512));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    pub(super) algorithm: Algorithm,
    pub(super) min: u64,
    pub(super) max: u64,
    pub(super) initial: u64,
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
    #[must_use]
    pub fn min(mut self, min: u64) -> Self {
        self.min = min;
        self
    }

    /// The highest limit.
    #[must_use]
    pub fn max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// The limit to start from (clamped to the bounds).
    #[must_use]
    pub fn initial(mut self, initial: u64) -> Self {
        self.initial = initial;
        self
    }

    /// AIMD only: a request slower than `threshold` multiplies the limit by the backoff (0.9).
    #[must_use]
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
    #[must_use]
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
        if self.max > i64::MAX.unsigned_abs() {
            return Err(ConfigError::new(
                "adaptive limit",
                "max",
                self.max,
                "at most i64::MAX",
            ));
        }
        match self.algorithm {
            Algorithm::Aimd {
                latency_threshold, ..
            } if latency_threshold.is_zero() => {
                return Err(ConfigError::new(
                    "adaptive limit",
                    "latency_threshold",
                    latency_threshold,
                    "a duration above zero",
                ));
            }
            Algorithm::Gradient { min_rtt_window, .. } if min_rtt_window.is_zero() => {
                return Err(ConfigError::new(
                    "adaptive limit",
                    "min_rtt_window",
                    min_rtt_window,
                    "a duration above zero",
                ));
            }
            _ => {}
        }
        Ok(self.initial.clamp(self.min, self.max))
    }

    pub(crate) fn controller(&self) -> Controller {
        Controller::new(*self)
    }
}
