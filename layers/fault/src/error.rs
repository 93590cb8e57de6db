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

/// A status the fault layer injected, as an error: what
/// [`StatusError`](crate::StatusError) answers with, for stacks that turn
/// errors into responses themselves (the facade's `http_layer` and
/// `grpc_layer`), so the service's response body need not be `Default`.
///
/// Not a rejection. A classifier that knows it (the facade's HTTP and
/// gRPC stacks' `HttpStatuses` / `GrpcStatuses`) classifies it as the
/// status it carries, as the service's own answer would be; to any other
/// it is an `Err`, a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedStatus {
    name: Arc<str>,
    status: u16,
}

impl InjectedStatus {
    pub(crate) fn new(name: Arc<str>, status: u16) -> Self {
        InjectedStatus { name, status }
    }

    /// The fault layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The status injected: an HTTP status, or a gRPC code (0 to 16).
    pub fn status(&self) -> u16 {
        self.status
    }
}

impl fmt::Display for InjectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {} injected by `{}`", self.status, self.name)
    }
}

impl std::error::Error for InjectedStatus {}

pub(crate) fn invalid(
    field: &'static str,
    value: impl fmt::Debug,
    allowed: &'static str,
) -> ConfigError {
    ConfigError::new("fault", field, value, allowed)
}
