//! Fallbacks: an answer in place of a refusal or a failure.
//!
//! [`FallbackLayer`] wraps a service; when a call is refused by a
//! hardening layer below (open breaker, shed or full admission, rate
//! limit, queue timeout, a service being rebuilt: any error core's
//! `rejection_of` recognises) or fails (an error, or a response the
//! classifier counts as a failure; put the layer outside the retries so a
//! failure is one that survived them), the answer comes from the
//! fallback: a closure ([`FallbackLayer::new`]) or a service
//! ([`FallbackLayer::service`]) given the [`Cause`]. [`FallbackOn`] says
//! which cases it answers (default every one).
//!
//! - A client's own error (a request body that broke or stalled) never
//!   falls back: it is answered as it is.
//! - A fallback that fails or panics answers nothing: the original result
//!   surfaces (and [`FallbackStats::failed`] counts it).
//! - A fallback's answer is marked for a metrics layer above
//!   (`tower_hardening_core::fallback`): with
//!   `MetricsLayer::counting_fallbacks` it counts as outcome `fallback`.
//! - Cancelled mid-answer, nothing is held: the future owns only the
//!   answer's future and the original result.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_core::{BoxError, CircuitOpen};
//! use tower_hardening_recovery::{Cause, FallbackCase, FallbackLayer, FallbackOn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let refusing = service_fn(|_: &'static str| async {
//!     Err::<String, BoxError>(CircuitOpen::new("prices").with_retry_after(Duration::from_secs(5)).into())
//! });
//! let layer = FallbackLayer::new(|cause: Cause| format!("cached prices ({:?})", cause.case()))
//!     .on(FallbackOn::refusals());
//! let mut svc = layer.layer(refusing);
//! let answer = svc.ready().await.unwrap().call("EUR").await.unwrap();
//! assert_eq!(answer, "cached prices (CircuitOpen)");
//! assert_eq!(layer.stats().answered, 1);
//!
//! // A failure is not a case here: the error surfaces.
//! let failing = service_fn(|_: &'static str| async { Err::<String, BoxError>("boom".into()) });
//! let mut svc = layer.layer(failing);
//! assert!(svc.ready().await.unwrap().call("EUR").await.is_err());
//! # let _ = FallbackCase::Failure;
//! # }
//! ```

mod answer;
mod cases;
mod layer;
mod service;

pub mod future;

pub use answer::{Answer, AnswerSource, FnAnswer, NoFallback, ServiceAnswer, ServiceAnswerFuture};
pub use cases::{CASE_NAMES, Cause, FallbackCase, FallbackOn, ParseCaseError};
pub use future::FallbackFuture;
pub use layer::{FallbackCounts, FallbackLayer, FallbackStats};
pub use service::Fallback;
