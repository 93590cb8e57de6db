//! Errors of the fault layer.
//!
//! ```
//! use tower_hardening_fault::FaultLayer;
//!
//! let err = FaultLayer::builder().error_rate(1.5).build().unwrap_err();
//! assert_eq!(err.field(), "error_rate");
//! ```

use std::fmt;
use std::sync::Arc;

pub use tower_hardening_core::ConfigError;

/// A failure the fault layer injected instead of calling the service.
///
/// Not a rejection: the breaker, retry and metrics treat it like any
/// failure of the dependency, which is the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    name: Arc<str>,
}

impl InjectedFault {
    pub(crate) fn new(name: Arc<str>) -> Self {
        InjectedFault { name }
    }

    /// The fault layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault injected by `{}`", self.name)
    }
}

impl std::error::Error for InjectedFault {}

pub(crate) fn invalid(
    field: &'static str,
    value: impl fmt::Debug,
    allowed: &'static str,
) -> ConfigError {
    ConfigError::new("fault", field, value, allowed)
}
