use std::sync::Arc;
use std::time::Duration;

use tower::retry::Retry;
use tower::retry::budget::TpsBudget;
use tower_hardening_core::{ErrorsAsFailures, EventSink};
use tower_layer::Layer;

use super::policy::{AnyRequest, RetryPolicy};
use super::replay::{BufferBodies, CloneRequests, ReplayHttp};
use super::shared::{RetryHandle, RetryShared};
use crate::backoff::{Backoff, Jitter};
use crate::boxed::BoxErrors;
use crate::error::{ConfigError, invalid_retry};

/// Caps retries to a fraction of the traffic, shared by every clone of a
/// layer: a dependency that is down costs at most `ratio` extra load (plus
/// `min_per_second`), not `max_attempts` times the load.
///
/// It is tower's `TpsBudget`: each first attempt deposits, each retry
/// withdraws `1 / ratio` deposits, deposits expire after `ttl`.
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

/// Builds a [`RetryLayer`].
///
/// | setting | default |
/// | --- | --- |
/// | `name` | `"retry"` |
/// | `max_attempts` | 3 (the first included) |
/// | `backoff` | exponential, 50 ms to 2 s |
/// | `jitter` | [`Jitter::Full`] |
/// | `budget` | [`RetryBudget::default`] (10 s, 10/s, 20%) |
/// | `classifier` | [`ErrorsAsFailures`] |
/// | `idempotent` | every request ([`AnyRequest`]) |
#[derive(Debug, Clone)]
pub struct Builder<C = ErrorsAsFailures, P = AnyRequest> {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    jitter: Jitter,
    budget: Option<RetryBudget>,
    classifier: C,
    predicate: P,
    events: Option<EventSink>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            name: Arc::from("retry"),
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)),
            jitter: Jitter::Full,
            budget: Some(RetryBudget::default()),
            classifier: ErrorsAsFailures,
            predicate: AnyRequest,
            events: None,
        }
    }
}

impl<C, P> Builder<C, P> {
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

    /// What counts as a failure worth retrying (`Ignored` is never retried).
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2, P> {
        Builder {
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

    /// Only requests for which `predicate` returns true are retried (say,
    /// idempotent HTTP methods); any `Fn(&Req) -> bool + Clone`.
    pub fn idempotent<P2>(self, predicate: P2) -> Builder<C, P2> {
        Builder {
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            budget: self.budget,
            classifier: self.classifier,
            predicate,
            events: self.events,
        }
    }

    /// Checks every setting and builds the layer.
    pub fn build(self) -> Result<RetryLayer<C, P>, ConfigError> {
        if self.max_attempts == 0 {
            return Err(invalid_retry("max_attempts", 0, "at least 1"));
        }
        self.backoff
            .validate()
            .map_err(|allowed| invalid_retry("backoff", self.backoff, allowed))?;
        if let Some(budget) = &self.budget {
            budget.validate()?;
        }
        let budget = self
            .budget
            .map(|b| TpsBudget::new(b.ttl, b.min_per_second, b.ratio));
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
/// retries a rejection from another hardening layer.
///
/// The service it builds is tower's own [`Retry`] driven by a
/// [`RetryPolicy`], over the inner service with its errors boxed. Requests
/// must be `Clone`; for `http::Request`s use [`RetryLayer::http`].
#[derive(Debug, Clone)]
pub struct RetryLayer<C = ErrorsAsFailures, P = AnyRequest> {
    shared: Arc<RetryShared>,
    classifier: C,
    predicate: P,
}

impl RetryLayer {
    /// A builder with the defaults listed on [`Builder`].
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<C, P> RetryLayer<C, P> {
    /// The handle to this layer's counters.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            shared: self.shared.clone(),
        }
    }

    /// The same retries for `http::Request<B>`: each body whose size is
    /// known to be at most `max_body_bytes` is buffered once so it can be
    /// replayed; a larger body, or one of unknown size (chunked, no
    /// `Content-Length`), is sent once and never retried. The inner
    /// service receives `Request<ReplayBody<B>>`.
    pub fn http(self, max_body_bytes: usize) -> HttpRetryLayer<C, P> {
        HttpRetryLayer {
            retry: self,
            max_body_bytes,
        }
    }

    fn policy<K>(&self, replay: K) -> RetryPolicy<C, K, P>
    where
        C: Clone,
        P: Clone,
    {
        RetryPolicy {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            replay,
            predicate: self.predicate.clone(),
            attempts: 0,
            rng: None,
        }
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for RetryLayer<C, P> {
    type Service = Retry<RetryPolicy<C, CloneRequests, P>, BoxErrors<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(self.policy(CloneRequests), BoxErrors::new(inner))
    }
}

/// [`RetryLayer`] for `http::Request`s with replayable bodies, made by
/// [`RetryLayer::http`].
#[derive(Debug, Clone)]
pub struct HttpRetryLayer<C = ErrorsAsFailures, P = AnyRequest> {
    retry: RetryLayer<C, P>,
    max_body_bytes: usize,
}

impl<C, P> HttpRetryLayer<C, P> {
    /// The handle to this layer's counters.
    pub fn handle(&self) -> RetryHandle {
        self.retry.handle()
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for HttpRetryLayer<C, P> {
    type Service = BufferBodies<Retry<RetryPolicy<C, ReplayHttp, P>, BoxErrors<S>>>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferBodies::new(
            Retry::new(self.retry.policy(ReplayHttp), BoxErrors::new(inner)),
            self.max_body_bytes,
        )
    }
}
