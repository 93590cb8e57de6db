//! A circuit breaker for any `tower::Service`.
//!
//! Wrap a service with [`CircuitBreakerLayer`] and it stops calling a
//! dependency that is failing (or slow) until the dependency has had time
//! to recover, then lets a few probe calls decide whether to close again.
//!
//! - **States** ([`CircuitState`]): `Closed` (calls flow and are
//!   recorded), `Open` (calls fail fast with [`CircuitOpen`]), `HalfOpen`
//!   (up to `half_open_permits` probes), plus the manual `ForcedOpen`,
//!   `Disabled` and `MetricsOnly`.
//! - **Windows** ([`SlidingWindow`]): the last N calls, or the calls of the
//!   last period; no decision before `minimum_calls`.
//! - **Thresholds**: opens when the failure rate *or* the slow-call rate is
//!   at or above its threshold. What counts as a failure is any
//!   [`Classify`](tower_hardening_core::Classify): every `Err` by default,
//!   or [`HttpServerErrors`](tower_hardening_core::HttpServerErrors),
//!   [`GrpcErrors`](tower_hardening_core::GrpcErrors), a closure.
//! - **Open wait**: `wait_in_open`, doubled for each consecutive trip up to
//!   `max_wait_in_open`.
//! - **Cancellation and panics**: a call whose future is dropped is
//!   recorded as nothing and hands back its probe permit; a panic in the
//!   inner service is a failure, recorded where the unwind passes (so also
//!   under tower-http's `CatchPanic`). No permit is ever lost.
//! - **Rejections from below**: a rejection by a layer below the breaker
//!   (anything [`rejection_of`](tower_hardening_core::rejection_of)
//!   recognises: an admission queue's `Overloaded`, another breaker's
//!   `CircuitOpen`, ...) is not the dependency's failure and is not
//!   recorded.
//! - **Speed**: the closed path takes no lock, allocates nothing and (with a
//!   count window and no slow-call duration) never reads the clock.
//! - **Observability**: transitions and rejections as `Event`s (rejections
//!   once per state period) and through the `metrics` facade
//!   (`hardening_circuit_state`, `hardening_circuit_transitions_total`,
//!   `hardening_circuit_rejected_total`, label `breaker`: the layer's name,
//!   never a key). The state gauge and rejection counter are registered
//!   when the layer is built, with the recorder in force then: install
//!   your recorder first (the rule of every tower-hardening layer).
//!
//! Rejections come from the response future, never from `poll_ready`, so
//! axum and tonic (which treat services as always ready) see a
//! `CircuitOpen` error they can map to `503` with `Retry-After`.
//!
//! # Example: a breaker around an axum handler
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, error_handling::HandleErrorLayer, http::StatusCode, routing::get};
//! use tower::ServiceBuilder;
//! use tower_hardening_breaker::{CircuitBreakerLayer, CircuitOpen, SlidingWindow};
//! use tower_hardening_core::{BoxError, HttpServerErrors};
//!
//! async fn infer() -> Result<&'static str, StatusCode> {
//!     Ok("a cat")
//! }
//!
//! async fn on_error(err: BoxError) -> (StatusCode, [(&'static str, String); 1], String) {
//!     match err.downcast_ref::<CircuitOpen>() {
//!         Some(open) => (
//!             StatusCode::SERVICE_UNAVAILABLE,
//!             [("retry-after", open.retry_after().map_or(1, |d| d.as_secs().max(1)).to_string())],
//!             open.to_string(),
//!         ),
//!         None => (StatusCode::INTERNAL_SERVER_ERROR, [("retry-after", "0".into())], err.to_string()),
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("model-inference")
//!     .failure_rate_threshold(0.5)
//!     .slow_call_duration(Duration::from_secs(2))
//!     .sliding_window(SlidingWindow::count(100))
//!     .minimum_calls(20)
//!     .wait_in_open(Duration::from_secs(30))
//!     .half_open_permits(5)
//!     .classifier(HttpServerErrors::default())
//!     .build()?;
//! let handle = breaker.handle();
//!
//! let app: Router = Router::new().route("/infer", get(infer)).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(on_error))
//!         .layer(breaker),
//! );
//! # let _ = app;
//! assert_eq!(handle.state(), tower_hardening_breaker::CircuitState::Closed);
//! # Ok(())
//! # }
//! ```

mod eos;
mod handle;
mod keyed;
mod layer;
mod permit;
mod probes;
mod service;
mod state;
mod transitions;
mod window;

pub mod error;
pub mod future;

pub use eos::{EosBody, EosCircuitBreaker, EosCircuitBreakerLayer, EosFuture};
pub use error::{CircuitOpen, ConfigError, ProbeTimedOut};
pub use handle::{BreakerHandle, BreakerSnapshot};
pub use keyed::{KeyedBreakerHandle, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::{BreakerBuilder, CircuitBreakerLayer, DEFAULT_PROBE_TIMEOUT, SlidingWindow};
pub use service::CircuitBreaker;
pub use tower_hardening_core::CircuitState;
