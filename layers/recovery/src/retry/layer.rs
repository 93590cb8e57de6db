//! The retry layer, its builder and its budget.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_recovery::{Backoff, Jitter, RetryBudget, RetryLayer};
//!
//! let retry = RetryLayer::builder()
//!     .name("model-inference")
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)))
//!     .jitter(Jitter::Equal)
//!     .budget(RetryBudget::new(Duration::from_secs(10), 10, 0.2))
//!     .build()
//!     .unwrap();
//! assert_eq!(retry.handle().max_total_backoff(), Duration::from_millis(150));
//! ```

use std::sync::Arc;
use std::time::Duration;

use tower_hardening_core::{ErrorsAsFailures, EventSink};
use tower_layer::Layer;

use super::budget::StripedBudget;
use super::policy::{AnyRequest, Attempts, RetryPolicy};
#[cfg(doc)]
use super::policy::{IdempotentHttp, RetryPredicate};
use super::replay::{BufferBodies, CloneRequests, ReplayHttp};
use super::service::RetryService;
use super::shared::{RetryHandle, RetryShared};
use crate::backoff::{Backoff, Jitter};
use crate::boxed::BoxErrors;
use crate::error::{ConfigError, invalid_retry};

/// Caps retries to a fraction of the traffic, shared by every clone of a
/// layer: a dependency that is down costs at most `ratio` extra load (plus
/// `min_per_second`), not `max_attempts` times the load.
///
/// It allows what tower's `TpsBudget` allows (each first attempt
/// deposits, each retry withdraws `1 / ratio` deposits, deposits expire
/// after `ttl`), but a deposit is one atomic add on the calling thread's
/// own stripe, with no lock and, on a busy thread, a clock reading only
/// every 16th time, so the success path stays cheap on many cores.
/// Deposits made since a thread last read the clock (at most 15) may
/// expire early, never late; a withdrawal counts for at least `ttl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    ttl: Duration,
    min_per_second: u32,
    ratio: f32,
}

impl RetryBudget {
    /// Deposits last `ttl` (1 s to 60 s); `min_per_second` retries a second
    /// are always allowed; beyond that, retries may add `ratio` (0 to 1000)
    /// of the first attempts' load.
    pub fn new(ttl: Duration, min_per_second: u32, ratio: f32) -> Self {
        RetryBudget {
            ttl,
            min_per_second,
            ratio,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(invalid_retry("budget.ttl", self.ttl, "from 1s to 60s"));
        }
        if !(0.0..=1000.0).contains(&self.ratio) {
            return Err(invalid_retry("budget.ratio", self.ratio, "from 0 to 1000"));
        }
        if self.min_per_second >= i32::MAX as u32 {
            return Err(invalid_retry(
                "budget.min_per_second",
                self.min_per_second,
                "below 2^31 - 1",
            ));
        }
        Ok(())
    }
}

impl Default for RetryBudget {
    /// 10 s, 10 retries a second, 20% extra load.
    fn default() -> Self {
        RetryBudget::new(Duration::from_secs(10), 10, 0.2)
    }
}

/// Builds a [`RetryLayer`]: `RetryLayer::builder()`, the settings to
/// change, then [`build`](Self::build), which checks them all.
///
/// | setting | default |
/// | --- | --- |
/// | `name` | `"retry"` |
/// | `max_attempts` | 3 (the first included) |
/// | `backoff` | exponential, 50 ms to 2 s |
/// | `jitter` | [`Jitter::Full`] |
/// | `budget` | [`RetryBudget::default`] (10 s, 10/s, 20%) |
/// | `classifier` | [`ErrorsAsFailures`] |
/// | `idempotent` | plain requests: every one; [`RetryLayer::http`]: [`IdempotentHttp`] |
///
/// Durations are not refused for being large: backoffs and their sums
/// saturate at `Duration::MAX`, and a wait too long for the clock to
/// reach never ends. Keep the backoff's `max` to what a caller will wait.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RetryBuilder<C = ErrorsAsFailures, P = AnyRequest> {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    jitter: Jitter,
    budget: Option<RetryBudget>,
    classifier: C,
    /// `None`: the default of the layer's kind (see the table above).
    predicate: Option<P>,
    events: Option<EventSink>,
}

impl Default for RetryBuilder {
    fn default() -> Self {
        RetryBuilder {
            name: Arc::from("retry"),
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)),
            jitter: Jitter::Full,
            budget: Some(RetryBudget::default()),
            classifier: ErrorsAsFailures,
            predicate: None,
            events: None,
        }
    }
}

impl<C, P> RetryBuilder<C, P> {
    /// The name used in events and metric labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Attempts in total, the first included (at least 1; 1 never retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait before each retry.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How the waits are spread.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The budget shared by every clone of the layer.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No budget: only `max_attempts` limits retries. A dependency that is
    /// down then sees up to `max_attempts` times the load; prefer a budget.
    pub fn without_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Publishes an event when a request gives up or the budget is empty.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// What counts as a failure worth retrying (`Ignored` is never
    /// retried, nor is any rejection, whatever the classifier says).
    ///
    /// It classifies `Result<Res, BoxError>`, `Res` being the inner
    /// service's response (the inner errors are boxed first): the shape
    /// every tower-hardening layer takes, so the classifier given to the
    /// breaker, metrics and recover serves here too.
    ///
    /// An HTTP response is decided at its headers: a gRPC status that
    /// arrives only in trailers is not seen by retry (use
    /// [`GrpcErrors`](tower_hardening_core::GrpcErrors), which reads the
    /// `grpc-status` header of trailers-only responses).
    pub fn classifier<C2>(self, classifier: C2) -> RetryBuilder<C2, P> {
        RetryBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            budget: self.budget,
            classifier,
            predicate: self.predicate,
            events: self.events,
        }
    }

    /// Only requests for which `predicate` returns true are retried; any
    /// [`RetryPredicate`], such as a `Fn(&Req) -> bool + Clone`. It
    /// replaces the default: every request for a plain layer,
    /// [`IdempotentHttp`] under [`RetryLayer::http`], where it sees the
    /// request as it arrives (`&http::Request<B>`, before any buffering).
    ///
    /// ```
    /// use http::Request;
    /// use tower_hardening_recovery::{IdempotentHttp, RetryLayer, RetryPredicate};
    ///
    /// // Also retry POST /transcribe: it has no side effects.
    /// let retry = RetryLayer::builder()
    ///     .idempotent(|r: &Request<String>| {
    ///         IdempotentHttp.may_retry(r) || r.uri().path() == "/transcribe"
    ///     })
    ///     .build()?
    ///     .http(64 * 1024);
    /// # let _ = retry;
    /// # Ok::<(), tower_hardening_recovery::ConfigError>(())
    /// ```
    pub fn idempotent<P2>(self, predicate: P2) -> RetryBuilder<C, P2> {
        RetryBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            budget: self.budget,
            classifier: self.classifier,
            predicate: Some(predicate),
            events: self.events,
        }
    }

    /// Checks every setting without building anything: what
    /// [`build`](Self::build) refuses, this refuses. The configuration
    /// file's retry sections are checked by it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(invalid_retry("name", &*self.name, "a non-empty name"));
        }
        if self.max_attempts == 0 {
            return Err(invalid_retry("max_attempts", 0, "at least 1"));
        }
        self.backoff
            .validate()
            .map_err(|allowed| invalid_retry("backoff", self.backoff, allowed))?;
        if let Some(budget) = &self.budget {
            budget.validate()?;
        }
        Ok(())
    }

    /// Checks every setting and builds the layer.
    ///
    /// Its counters are registered here, with the `metrics` recorder in
    /// force now: install the recorder before building layers (or build
    /// them inside `metrics::with_local_recorder`).
    pub fn build(self) -> Result<RetryLayer<C, P>, ConfigError> {
        self.validate()?;
        let budget = self
            .budget
            .map(|b| StripedBudget::new(b.ttl, b.min_per_second, b.ratio));
        Ok(RetryLayer {
            shared: Arc::new(RetryShared::new(
                self.name,
                self.max_attempts,
                self.backoff,
                self.jitter,
                budget,
                self.events,
            )),
            classifier: self.classifier,
            predicate: self.predicate,
        })
    }
}

/// Retries failed requests with backoff, within a shared budget; never
/// retries a rejection from another hardening layer (any error core's
/// `rejection_of` recognises).
///
/// The service it builds is a [`RetryService`] driven by a
/// [`RetryPolicy`] (tower's `Retry` algorithm, without cloning the stack
/// below on every call), over the inner service with its errors boxed.
/// Requests must be `Clone`; for `http::Request`s use
/// [`RetryLayer::http`].
///
/// ```
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
/// use tower_hardening_recovery::{Backoff, RetryLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_hardening_core::BoxError> {
/// let retry = RetryLayer::builder()
///     .name("model-inference")
///     .max_attempts(3)
///     .backoff(Backoff::constant(Duration::from_millis(1)))
///     .build()?;
/// let svc = retry.layer(service_fn(|prompt: String| async move {
///     Ok::<_, std::io::Error>(prompt.len())
/// }));
/// assert_eq!(svc.oneshot("hello".to_owned()).await?, 5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<C = ErrorsAsFailures, P = AnyRequest> {
    shared: Arc<RetryShared>,
    classifier: C,
    /// `None`: every request (plain), [`IdempotentHttp`] (HTTP).
    predicate: Option<P>,
}

impl RetryLayer {
    /// A builder with the defaults listed on [`RetryBuilder`].
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }
}

impl<C, P> RetryLayer<C, P> {
    /// The handle to this layer's counters.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            shared: self.shared.clone(),
        }
    }

    /// The same layer (same budget, counters and settings) with another
    /// classifier: for one service reached both as plain requests and as
    /// HTTP, say.
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayer<C2, P> {
        RetryLayer {
            shared: self.shared,
            classifier,
            predicate: self.predicate,
        }
    }

    /// The same layer (same budget, counters and settings) with another
    /// idempotency predicate (see [`RetryBuilder::idempotent`]).
    #[must_use]
    pub fn idempotent<P2>(self, predicate: P2) -> RetryLayer<C, P2> {
        RetryLayer {
            shared: self.shared,
            classifier: self.classifier,
            predicate: Some(predicate),
        }
    }

    /// The same retries for `http::Request<B>`.
    ///
    /// Only idempotent requests are retried: by default those
    /// [`IdempotentHttp`] allows (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`,
    /// `DELETE`, or any request with an `Idempotency-Key` header); others
    /// opt in through [`RetryBuilder::idempotent`]. A request that is not
    /// idempotent is sent once and never retried, whatever its error (a
    /// timeout included).
    ///
    /// Each retryable body whose size is known to be at most
    /// `max_body_bytes` is buffered once so it can be replayed; a larger
    /// body, or one of unknown size (chunked, no `Content-Length`), is
    /// sent once and never retried. The inner service receives
    /// `Request<ReplayBody<B>>`. See [`BufferBodies`] for how buffering
    /// keeps no readiness of the inner service.
    pub fn http(self, max_body_bytes: usize) -> HttpRetryLayer<C, P> {
        HttpRetryLayer {
            retry: self,
            max_body_bytes,
            body_timeout: super::replay::DEFAULT_BODY_TIMEOUT,
        }
    }

    /// Wraps `inner` as [`Layer::layer`] does, with requests copied for a
    /// retry by `replay` instead of cloned: with [`NeverReplay`](super::NeverReplay)
    /// nothing is ever retried and the request need not be `Clone`.
    pub fn layer_replaying<S, K>(
        &self,
        inner: S,
        replay: K,
    ) -> RetryService<RetryPolicy<C, K, P>, BoxErrors<S>>
    where
        S: Clone,
        C: Clone,
        P: Clone,
        K: Clone,
    {
        let policy = self.policy(replay, self.predicate.clone());
        RetryService::new(BoxErrors::new(inner), policy)
    }

    fn policy<K, P2>(&self, replay: K, predicate: Option<P2>) -> RetryPolicy<C, K, P2>
    where
        C: Clone,
    {
        RetryPolicy {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            replay,
            predicate,
            attempts: Attempts::default(),
        }
    }
}

impl<S: Clone, C: Clone, P: Clone> Layer<S> for RetryLayer<C, P> {
    type Service = RetryService<RetryPolicy<C, CloneRequests, P>, BoxErrors<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        let policy = self.policy(CloneRequests, self.predicate.clone());
        RetryService::new(BoxErrors::new(inner), policy)
    }
}

/// [`RetryLayer`] for `http::Request`s with replayable bodies, made by
/// [`RetryLayer::http`]: retries idempotent requests only.
#[derive(Debug, Clone)]
pub struct HttpRetryLayer<C = ErrorsAsFailures, P = AnyRequest> {
    retry: RetryLayer<C, P>,
    max_body_bytes: usize,
    body_timeout: std::time::Duration,
}

impl<C, P> HttpRetryLayer<C, P> {
    /// The handle to this layer's counters.
    pub fn handle(&self) -> RetryHandle {
        self.retry.handle()
    }

    /// How long a client may take to send a body that is buffered for
    /// replay (see [`BufferBodies::body_timeout`]); 10 s unless set.
    #[must_use]
    pub fn body_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_timeout = timeout;
        self
    }
}

impl<S: Clone, C: Clone, P: Clone> Layer<S> for HttpRetryLayer<C, P> {
    type Service =
        BufferBodies<RetryService<RetryPolicy<C, ReplayHttp, AnyRequest>, BoxErrors<S>>, P>;

    fn layer(&self, inner: S) -> Self::Service {
        // The predicate is applied where the request arrives, before its
        // body is buffered: a request that may not be retried is never
        // buffered, and the policy can replay every buffered one.
        BufferBodies::new(
            {
                let policy = self.retry.policy(ReplayHttp, None);
                RetryService::new(BoxErrors::new(inner), policy)
            },
            self.max_body_bytes,
            self.retry.predicate.clone(),
        )
        .body_timeout(self.body_timeout)
    }
}
