//! Retry and recovery layers for any `tower::Service`.
//!
//! - [`RetryLayer`]: retries failed requests with exponential backoff and
//!   jitter, within a [`RetryBudget`] shared by every clone of the layer, so
//!   a dependency that is down costs at most a fixed fraction of extra
//!   load. It never retries a rejection from another hardening layer (any
//!   error `tower_hardening_core::rejection_of` recognises: `CircuitOpen`,
//!   `Overloaded`, `QueueTimeout`, `Recovering`, `RecoveryFailed`, ...),
//!   nor a result the classifier marks `Ignored`, nor a request the
//!   `idempotent` predicate refuses. It is a [`RetryService`] (tower's
//!   `Retry` algorithm and `Policy` trait, but the service below is
//!   cloned only for a retry, not on every call) driven by a
//!   [`RetryPolicy`]. Its counters (`hardening_retries_total`,
//!   `hardening_retry_budget_exhausted_total`,
//!   `hardening_retry_gave_up_total`) are registered when the layer is
//!   built. [`RetryLayer::http`] retries idempotent `http::Request`s only
//!   (by default [`IdempotentHttp`]) and buffers their bodies so they can
//!   be replayed.
//! - [`Recover`]: builds the inner service from a factory, lazily, and
//!   rebuilds it with backoff when it breaks (a failed `poll_ready`, too
//!   many failed calls in a row, or [`RecoverHandle::trigger`]); calls
//!   fail fast with [`Recovering`] (whose `retry_after` is the time to the
//!   next attempt) meanwhile, and with [`RecoveryFailed`] once every
//!   attempt failed. Each attempt has a timeout and a panicking factory is
//!   a failed attempt, so a recovery always ends. It is a service, not a
//!   layer (it makes its inner service rather than wrapping one): build it
//!   with [`Recover::builder`] and put it innermost.
//!
//! - [`FallbackLayer`]: answers in place of a refusal (open breaker,
//!   shedding, rate limit, queue timeout) or a failure that survived the
//!   retries, from a closure or a service; which cases it answers is
//!   [`FallbackOn`]; a fallback that fails surfaces the original error.
//!   See [`fallback`].
//!
//! Every layer of the workspace classifies `Result<Res, BoxError>`: one
//! classifier value (a closure, `HttpServerErrors`, `GrpcErrors`) serves
//! retry, recover, the breaker and metrics alike. Metric handles are
//! registered when a layer or service is built, with the recorder in force
//! then: install the `metrics` recorder first (or build inside
//! `metrics::with_local_recorder`).
//!
//! # Composing them with a breaker
//!
//! Recover innermost, the breaker around it, retry outside both: each
//! retry is a fresh call through the breaker, so the breaker sees (and
//! counts) every attempt and, once open, stops the retries at once with
//! `CircuitOpen` (which retry never retries); and the breaker also fails
//! fast while the inner service is being rebuilt.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_hardening_breaker::CircuitBreakerLayer;
//! use tower_hardening_recovery::{Backoff, Jitter, Recover, RetryBudget, RetryLayer};
//!
//! #[derive(Clone)]
//! struct ModelClient;
//!
//! impl tower::Service<String> for ModelClient {
//!     type Response = String;
//!     type Error = std::io::Error;
//!     type Future = std::future::Ready<Result<String, std::io::Error>>;
//!     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//!         std::task::Poll::Ready(Ok(()))
//!     }
//!     fn call(&mut self, prompt: String) -> Self::Future {
//!         std::future::ready(Ok(format!("answer to {prompt}")))
//!     }
//! }
//!
//! async fn connect_model() -> Result<ModelClient, std::io::Error> {
//!     Ok(ModelClient)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let retry = RetryLayer::builder()
//!     .name("model-inference")
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)))
//!     .jitter(Jitter::Full)
//!     .budget(RetryBudget::new(Duration::from_secs(10), 10, 0.2))
//!     .build()?;
//! let breaker = CircuitBreakerLayer::builder().name("model-inference").build()?;
//! let (recovery, model) = Recover::builder()
//!     .name("model-inference")
//!     .max_attempts(5)
//!     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)))
//!     .attempt_timeout(Duration::from_secs(10))
//!     .after_consecutive_failures(10)
//!     .build(connect_model)?;
//!
//! let mut client = ServiceBuilder::new().layer(retry).layer(breaker).service(model);
//!
//! // The first call starts building the client and fails fast meanwhile.
//! let first = client.ready().await?.call("hello".to_owned()).await;
//! assert!(first.unwrap_err().is::<tower_hardening_recovery::Recovering>());
//! while recovery.state() != tower_hardening_recovery::RecoverState::Ready {
//!     tokio::task::yield_now().await;
//! }
//! let answer = client.ready().await?.call("hello".to_owned()).await?;
//! assert_eq!(answer, "answer to hello");
//! # Ok(())
//! # }
//! ```

mod backoff;
mod boxed;
mod recover;
mod retry;

pub mod error;
pub mod fallback;

pub use backoff::{Backoff, Jitter};
pub use boxed::{BoxErrors, BoxErrorsFuture};
pub use error::{ConfigError, Recovering, RecoveryFailed};
pub use fallback::{
    Answer, AnswerSource, CASE_NAMES, Cause, Fallback, FallbackCase, FallbackCounts, FallbackLayer,
    FallbackOn, FallbackStats, FnAnswer, NoFallback, ServiceAnswer,
};
pub use recover::{
    Recover, RecoverBuilder, RecoverFuture, RecoverHandle, RecoverPair, RecoverState, RecoverStats,
};
pub use retry::{
    AnyRequest, BufferBodies, BufferBodiesFuture, CloneRequests, DEFAULT_BODY_TIMEOUT,
    HttpRetryLayer, IdempotentHttp, NeverReplay, ReplayBody, ReplayHttp, ReplayRequest,
    RetryBudget, RetryBuilder, RetryFuture, RetryHandle, RetryLayer, RetryPolicy, RetryPredicate,
    RetryService, RetryStats, UploadProgress, UploadState,
};
