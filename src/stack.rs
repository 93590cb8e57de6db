//! The per-service stack `layer(name)` and `http_layer(name)` build,
//! outermost first: metrics, admission, retry, breaker, timeout.
//!
//! Every part is always there, so a stack's type does not depend on the
//! configuration; a part switched off by config costs a few nanoseconds:
//! a disabled breaker records nothing, disabled retries never retry (and
//! never clone a request), disabled admission is a pool too large to fill
//! (it still sheds under memory pressure), and no timeout is no timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::timeout::Timeout;
use tower_hardening_core::{BoxError, ConfigError, ErrorsAsFailures, HttpServerErrors, Priority};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use crate::config::ServiceConfig;
use crate::limit::{PriorityOf, ResourceLimit, ResourceLimitLayer, ResourcePool};
use crate::metrics::{MetricsLayer, MetricsService};
use crate::recovery::{
    BoxErrors, BufferBodies, CloneRequests, IdempotentHttp, ReplayHttp, RetryHandle, RetryLayer,
    RetryPolicy, RetryPredicate,
};

/// Units of the admission pool when admission is switched off: more than
/// any process serves at once, so only memory-pressure shedding refuses.
const UNLIMITED: u64 = 1 << 40;

/// Bodies larger than this are never buffered for retries.
pub(crate) const MAX_REPLAY_BODY: usize = 64 * 1024;

/// The parts every stack of one service shares: one breaker, one
/// admission pool, one retry budget, one set of metric handles.
#[derive(Debug)]
pub(crate) struct StackParts {
    pub(crate) breaker_layer: CircuitBreakerLayer<ErrorsAsFailures>,
    pub(crate) breaker: BreakerHandle,
    pub(crate) pool: ResourcePool,
    pub(crate) retry: RetryLayer<ErrorsAsFailures, RetryEnabled>,
    pub(crate) metrics: MetricsLayer<ErrorsAsFailures>,
    pub(crate) retry_enabled: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) default_priority: Priority,
}

impl StackParts {
    /// Builds the parts from `config` (inside the hardening's recorder, so
    /// the handles record into its collector).
    pub(crate) fn build(
        name: &Arc<str>,
        config: &ServiceConfig,
        events: &tower_hardening_core::EventSink,
    ) -> Result<Self, ConfigError> {
        let breaker_layer = config
            .breaker
            .to_builder(name)
            .events(events.clone())
            .build()?;
        let breaker = breaker_layer.handle();
        if !config.breaker.enabled {
            breaker.disable();
        }
        let pool = if config.limit.enabled {
            config.limit.to_pool_builder(name)
        } else {
            ResourcePool::builder(name.clone()).capacity(UNLIMITED)
        }
        .events(events.clone())
        .build()?;
        let retry = config
            .retry
            .to_builder(name)
            .events(events.clone())
            .build()?
            .idempotent(RetryEnabled(config.retry.enabled));
        let metrics = MetricsLayer::builder().name(name.clone()).build()?;
        Ok(StackParts {
            breaker_layer,
            breaker,
            pool,
            retry,
            metrics,
            retry_enabled: config.retry.enabled,
            timeout: config.timeout,
            default_priority: config.criticality,
        })
    }

    pub(crate) fn retry_handle(&self) -> RetryHandle {
        self.retry.handle()
    }
}

/// Whether a service's retries are on: every request may be retried, or
/// none (the plain stack's predicate).
#[derive(Debug, Clone, Copy)]
pub struct RetryEnabled(bool);

impl<Req> RetryPredicate<Req> for RetryEnabled {
    fn may_retry(&self, _: &Req) -> bool {
        self.0
    }
}

/// The HTTP stack's predicate: retries on, and the request idempotent
/// ([`IdempotentHttp`]: GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or an
/// `Idempotency-Key`).
#[derive(Debug, Clone, Copy)]
pub struct HttpRetryEnabled(bool);

impl<B> RetryPredicate<http::Request<B>> for HttpRetryEnabled {
    fn may_retry(&self, request: &http::Request<B>) -> bool {
        self.0 && IdempotentHttp.may_retry(request)
    }
}

/// The priority of a plain request: the service's criticality.
#[derive(Debug, Clone, Copy)]
pub struct ServicePriority(Priority);

impl<Req> PriorityOf<Req> for ServicePriority {
    fn priority_of(&self, _: &Req) -> Priority {
        self.0
    }
}

/// The priority of an HTTP request: a [`Priority`] the application put in
/// its extensions (trusted), else the service's criticality. Clients
/// cannot choose it: no header is read.
#[derive(Debug, Clone, Copy)]
pub struct HttpPriority(Priority);

impl<B> PriorityOf<http::Request<B>> for HttpPriority {
    fn priority_of(&self, request: &http::Request<B>) -> Priority {
        request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or(self.0)
    }
}

/// The service a [`ServiceLayer`] builds around `S`.
pub type HardenedService<S> = MetricsService<
    ResourceLimit<
        tower::retry::Retry<
            RetryPolicy<ErrorsAsFailures, CloneRequests, RetryEnabled>,
            BoxErrors<CircuitBreaker<OptionalTimeout<S>, ErrorsAsFailures>>,
        >,
        ServicePriority,
        crate::limit::OneUnit,
        crate::limit::OnResponse,
        ErrorsAsFailures,
    >,
    ErrorsAsFailures,
>;

/// The service an [`HttpServiceLayer`] builds around `S`, which receives
/// `http::Request<ReplayBody<B>>`.
pub type HardenedHttpService<S> = MetricsService<
    ResourceLimit<
        BufferBodies<
            tower::retry::Retry<
                RetryPolicy<HttpServerErrors, ReplayHttp, crate::recovery::AnyRequest>,
                BoxErrors<CircuitBreaker<OptionalTimeout<S>, HttpServerErrors>>,
            >,
            HttpRetryEnabled,
        >,
        HttpPriority,
        crate::limit::OneUnit,
        crate::limit::OnResponse,
        HttpServerErrors,
    >,
    HttpServerErrors,
>;

/// A service's whole stack as a `tower::Layer`, from
/// [`SystemHardening::layer`](crate::SystemHardening::layer): metrics,
/// admission, retry, breaker and timeout, configured by the service's
/// section. Every error is a `BoxError`; every clone shares one breaker,
/// pool and budget.
#[derive(Debug, Clone)]
pub struct ServiceLayer {
    parts: Arc<StackParts>,
}

impl ServiceLayer {
    pub(crate) fn new(parts: Arc<StackParts>) -> Self {
        ServiceLayer { parts }
    }

    /// The stack's breaker.
    pub fn breaker(&self) -> BreakerHandle {
        self.parts.breaker.clone()
    }

    /// The stack's admission pool.
    pub fn pool(&self) -> &ResourcePool {
        &self.parts.pool
    }

    /// The stack's retry counters.
    pub fn retry(&self) -> RetryHandle {
        self.parts.retry_handle()
    }
}

impl<S: Clone> Layer<S> for ServiceLayer {
    type Service = HardenedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let parts = &self.parts;
        let inner = OptionalTimeout::new(inner, parts.timeout);
        let inner = parts.breaker_layer.layer(inner);
        let inner = parts.retry.layer(inner);
        let inner = ResourceLimitLayer::new(parts.pool.clone())
            .priority(ServicePriority(parts.default_priority))
            .layer(inner);
        parts.metrics.layer(inner)
    }
}

/// The same stack for `http::Request<B>`, from
/// [`SystemHardening::http_layer`](crate::SystemHardening::http_layer):
/// 5xx responses count as failures, priorities come from the request's
/// extensions (never from a client's header), and retries replay only
/// idempotent requests with a body of known size up to 64 KiB. The inner
/// service receives `Request<ReplayBody<B>>` (for axum, add
/// `.map_request(|r: Request<ReplayBody<Body>>| r.map(Body::new))` below
/// the layer).
#[derive(Debug, Clone)]
pub struct HttpServiceLayer {
    parts: Arc<StackParts>,
}

impl HttpServiceLayer {
    pub(crate) fn new(parts: Arc<StackParts>) -> Self {
        HttpServiceLayer { parts }
    }

    /// The stack's breaker.
    pub fn breaker(&self) -> BreakerHandle {
        self.parts.breaker.clone()
    }

    /// The stack's admission pool.
    pub fn pool(&self) -> &ResourcePool {
        &self.parts.pool
    }
}

impl<S: Clone> Layer<S> for HttpServiceLayer {
    type Service = HardenedHttpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let parts = &self.parts;
        let classifier = HttpServerErrors::default();
        let inner = OptionalTimeout::new(inner, parts.timeout);
        let inner = parts
            .breaker_layer
            .clone()
            .classifier(classifier)
            .layer(inner);
        let enabled = HttpRetryEnabled(parts.retry_enabled);
        let inner = parts
            .retry
            .clone()
            .classifier(classifier)
            .idempotent(enabled)
            .http(MAX_REPLAY_BODY)
            .layer(inner);
        let inner = ResourceLimitLayer::new(parts.pool.clone())
            .priority(HttpPriority(parts.default_priority))
            .classify(classifier)
            .layer(inner);
        parts.metrics.clone().classifier(classifier).layer(inner)
    }
}

/// tower's `Timeout` when a deadline is set, the bare service otherwise
/// (no timer per call).
#[derive(Debug, Clone)]
pub enum OptionalTimeout<S> {
    /// Calls under a deadline.
    On(Timeout<S>),
    /// Calls without one.
    Off(S),
}

impl<S> OptionalTimeout<S> {
    fn new(inner: S, timeout: Option<Duration>) -> Self {
        match timeout {
            Some(timeout) => OptionalTimeout::On(Timeout::new(inner, timeout)),
            None => OptionalTimeout::Off(inner),
        }
    }
}

impl<S, Req> Service<Req> for OptionalTimeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        OptionalTimeoutFuture<tower::timeout::future::ResponseFuture<S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            OptionalTimeout::On(timeout) => timeout.poll_ready(cx),
            OptionalTimeout::Off(inner) => inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            OptionalTimeout::On(timeout) => OptionalTimeoutFuture {
                kind: TimeoutKind::On {
                    future: timeout.call(request),
                },
            },
            OptionalTimeout::Off(inner) => OptionalTimeoutFuture {
                kind: TimeoutKind::Off {
                    future: inner.call(request),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`OptionalTimeout`].
    #[derive(Debug)]
    pub struct OptionalTimeoutFuture<On, Off> {
        #[pin]
        kind: TimeoutKind<On, Off>,
    }
}

pin_project! {
    #[project = TimeoutKindProj]
    #[derive(Debug)]
    enum TimeoutKind<On, Off> {
        On { #[pin] future: On },
        Off { #[pin] future: Off },
    }
}

impl<On, Off, T, E1, E2> Future for OptionalTimeoutFuture<On, Off>
where
    On: Future<Output = Result<T, E1>>,
    Off: Future<Output = Result<T, E2>>,
    E1: Into<BoxError>,
    E2: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            TimeoutKindProj::On { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Into::into))
            }
            TimeoutKindProj::Off { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Into::into))
            }
        }
    }
}
