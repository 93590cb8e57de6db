//! Errors of the recovery layers.
//!
//! [`Recovering`] and [`RecoveryFailed`] are core's rejection types,
//! re-exported here, so every layer recognises them through
//! `tower_hardening_core::rejection_of`. [`ConfigError`] is what the
//! builders return for a setting out of range; it names the setting.
//!
//! ```
//! use tower_hardening_recovery::RetryLayer;
//!
//! let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! assert!(err.to_string().contains("at least 1"));
//! ```

use std::fmt;

pub use tower_hardening_core::{ConfigError, Recovering, RecoveryFailed};

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
