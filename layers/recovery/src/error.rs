//! Errors of the recovery layers.
//!
//! ```
//! use tower_hardening_recovery::RetryLayer;
//!
//! let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! assert!(err.to_string().contains("at least 1"));
//! ```

use std::fmt;

pub use tower_hardening_core::{ConfigError, Recovering};

/// Builds the retry layer's [`ConfigError`].
pub(crate) fn invalid_retry(
    field: &'static str,
    value: impl fmt::Debug,
    allowed: &'static str,
) -> ConfigError {
    ConfigError::new("retry", field, value, allowed)
}

/// Builds the recover layer's [`ConfigError`].
pub(crate) fn invalid_recover(
    field: &'static str,
    value: impl fmt::Debug,
    allowed: &'static str,
) -> ConfigError {
    ConfigError::new("recover", field, value, allowed)
}

/// Every rebuild attempt of a [`RecoverLayer`](crate::RecoverLayer)'s
/// service failed; calls fail with this until
/// [`RecoverHandle::trigger`](crate::RecoverHandle::trigger) starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryFailed {
    name: std::sync::Arc<str>,
    attempts: u32,
    last_error: std::sync::Arc<str>,
}

impl RecoveryFailed {
    pub(crate) fn new(
        name: std::sync::Arc<str>,
        attempts: u32,
        last_error: std::sync::Arc<str>,
    ) -> Self {
        RecoveryFailed {
            name,
            attempts,
            last_error,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many build attempts failed.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error, as text.
    pub fn last_error(&self) -> &str {
        &self.last_error
    }
}

impl fmt::Display for RecoveryFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` could not be rebuilt after {} attempts (last error: {}); trigger recovery to try again",
            self.name, self.attempts, self.last_error
        )
    }
}

impl std::error::Error for RecoveryFailed {}
