//! Errors of the breaker layer.
//!
//! A rejected call fails with [`CircuitOpen`] (from the response future,
//! boxed as the service's `BoxError`); bad settings fail `build()` with
//! [`ConfigError`].
//!
//! ```
//! use tower_hardening_breaker::CircuitBreakerLayer;
//!
//! let err = CircuitBreakerLayer::builder().failure_rate_threshold(2.0).build().unwrap_err();
//! assert_eq!(err.field(), "failure_rate_threshold");
//! assert_eq!(
//!     err.to_string(),
//!     "invalid circuit breaker setting `failure_rate_threshold` = 2.0: expected a rate in (0, 1]"
//! );
//! ```

pub use tower_hardening_core::{CircuitOpen, ConfigError};

/// Builds the breaker's [`ConfigError`].
pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    allowed: &'static str,
) -> ConfigError {
    ConfigError::new("circuit breaker", field, value, allowed)
}

/// A half-open probe did not finish within the breaker's probe deadline
/// ([`BreakerBuilder::probe_timeout`](crate::BreakerBuilder::probe_timeout)):
/// it counts as a failed probe, and the call is abandoned.
///
/// ```
/// use tower_hardening_breaker::ProbeTimedOut;
///
/// let err = ProbeTimedOut::new("model-inference");
/// assert_eq!(err.to_string(), "the half-open probe of `model-inference` took longer than its deadline");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTimedOut {
    name: std::sync::Arc<str>,
}

impl ProbeTimedOut {
    /// A late probe of the breaker called `name`.
    pub fn new(name: impl Into<std::sync::Arc<str>>) -> Self {
        ProbeTimedOut { name: name.into() }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for ProbeTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the half-open probe of `{}` took longer than its deadline",
            self.name
        )
    }
}

impl std::error::Error for ProbeTimedOut {}
