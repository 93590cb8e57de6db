//! The words every tower-hardening layer shares.
//!
//! A layer crate depends on this crate and on nothing else of the
//! workspace, so the breaker, retry, limit and metrics layers can each be
//! used alone in a `tower::ServiceBuilder` and still understand one
//! another:
//!
//! - [`Outcome`] and [`Classify`]: what counts as a failure, decided once
//!   and used by the breaker, retry and metrics alike. Provided classifiers:
//!   [`ErrorsAsFailures`] (the default), [`HttpServerErrors`],
//!   [`GrpcErrors`], and any closure `Fn(&Result<Res, E>) -> Outcome`.
//! - The rejection errors one layer returns and the others recognise:
//!   [`CircuitOpen`], [`Overloaded`], [`QueueTimeout`], [`Recovering`],
//!   [`RecoveryFailed`], [`PoolClosed`], [`Unsatisfiable`],
//!   [`NoHealthyEndpoint`], [`RateLimited`], and
//!   [`rejection_of`] to ask a boxed error whether it is one of them.
//! - [`Priority`], the importance of a request or a resource request.
//! - [`Event`] and [`EventSink`], the one event stream layers and the
//!   monitor publish to.
//! - [`CircuitState`] and [`HealthState`], the states reported in events
//!   and snapshots.
//!
//! ```
//! use tower_hardening_core::{
//!     rejection_of, BoxError, CircuitOpen, Classify, ErrorsAsFailures, Outcome, RejectionKind,
//! };
//! use std::time::Duration;
//!
//! // Every `Err` is a failure by default.
//! let result: Result<u32, &str> = Err("boom");
//! assert_eq!(ErrorsAsFailures.classify(&result), Outcome::Failure);
//!
//! // A breaker's rejection, seen by a layer that knows nothing of breakers.
//! let err: BoxError = CircuitOpen::new("model-inference")
//!     .with_retry_after(Duration::from_secs(3))
//!     .into();
//! let rejection = rejection_of(&*err).expect("a circuit-open error is a rejection");
//! assert_eq!(rejection.kind, RejectionKind::CircuitOpen);
//! assert_eq!(rejection.retry_after, Some(Duration::from_secs(3)));
//! ```

mod circuit;
mod classify;
mod client;
mod config_error;
mod event;
pub mod fallback;
mod health;
pub mod names;
mod outcome;
mod priority;
pub mod ready;
mod rejection;
#[cfg(feature = "serde")]
mod serde_impls;
pub mod stripe;
pub mod sync;
mod trace;

pub use circuit::CircuitState;
pub use classify::{
    Classify, ClassifyEos, DEFAULT_FAILING_CODES, ErrorsAsFailures, GrpcErrors, HttpServerErrors,
};
pub use client::{ClientBodyError, ClientBodyErrorKind, client_body_error_of};
pub use config_error::{ConfigError, ConfigErrorKind};
pub use event::{Event, EventKind, EventSink, RecoveryStep};
pub use health::HealthState;
pub use outcome::Outcome;
pub use priority::{ParsePriorityError, Priority};
pub use rejection::{
    CircuitOpen, NoHealthyEndpoint, Overloaded, PoolClosed, QueueTimeout, RateLimited, RatePolicy,
    Recovering, RecoveryFailed, Rejection, RejectionKind, Unsatisfiable, rejection_of,
};
pub use trace::publish;

/// The error type at every tower-hardening service boundary, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Re-exported so users can name gRPC codes for [`GrpcErrors`] without a
/// direct dependency on tower-http.
pub use tower_http::classify::GrpcCode;
