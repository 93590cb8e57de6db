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

use std::fmt;

pub use tower_hardening_core::CircuitOpen;

/// A breaker setting outside what is allowed; names the setting, the value
/// and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    allowed: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, value: impl fmt::Debug, allowed: &'static str) -> Self {
        ConfigError {
            field,
            value: format!("{value:?}"),
            allowed,
        }
    }

    /// The builder method whose value was refused.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid circuit breaker setting `{}` = {}: expected {}",
            self.field, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}
