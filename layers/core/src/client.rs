//! The client's own failures: a request body that broke, stalled or was
//! larger than allowed. They are the client's business, never the
//! service's: the breaker records nothing, retries do not retry, metrics
//! count them `ignored`, and HTTP answers 400 / 408 / 413.
//!
//! ```
//! use tower_hardening_core::{BoxError, ClientBodyError, ClientBodyErrorKind, client_body_error_of};
//!
//! let err: BoxError = ClientBodyError::timed_out().into();
//! assert_eq!(client_body_error_of(&*err).map(|e| e.kind()), Some(ClientBodyErrorKind::TimedOut));
//! assert_eq!(err.to_string(), "the client did not send its request body in time");
//!
//! let other: BoxError = "connection refused".into();
//! assert!(client_body_error_of(&*other).is_none());
//! ```

use std::error::Error;
use std::fmt;

use crate::BoxError;

/// How a client's request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientBodyErrorKind {
    /// Reading it failed: the connection was reset, the framing was broken.
    Broken,
    /// It did not arrive within its deadline.
    TimedOut,
    /// It was larger than it promised, or than allowed.
    TooLarge,
}

/// A request body failed on the client's side (see the module docs).
#[derive(Debug)]
pub struct ClientBodyError {
    kind: ClientBodyErrorKind,
    source: Option<BoxError>,
}

impl ClientBodyError {
    /// Reading the body failed with `source`.
    pub fn broken(source: impl Into<BoxError>) -> Self {
        ClientBodyError {
            kind: ClientBodyErrorKind::Broken,
            source: Some(source.into()),
        }
    }

    /// The body did not arrive in time.
    pub fn timed_out() -> Self {
        ClientBodyError {
            kind: ClientBodyErrorKind::TimedOut,
            source: None,
        }
    }

    /// The body was larger than allowed.
    pub fn too_large() -> Self {
        ClientBodyError {
            kind: ClientBodyErrorKind::TooLarge,
            source: None,
        }
    }

    /// How it failed.
    pub fn kind(&self) -> ClientBodyErrorKind {
        self.kind
    }
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ClientBodyErrorKind::Broken => "the client's request body could not be read",
            ClientBodyErrorKind::TimedOut => "the client did not send its request body in time",
            ClientBodyErrorKind::TooLarge => "the client's request body is too large",
        })
    }
}

impl Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// The [`ClientBodyError`] in `error` or its `source()` chain, if any.
pub fn client_body_error_of<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a ClientBodyError> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}
