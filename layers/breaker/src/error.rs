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
