//! The per-service stack `layer(name)` and `http_layer(name)` build,
//! outermost first: metrics, fallback, rate limit, admission, retry,
//! breaker, timeout. The rate limit refuses before admission (a refused
//! request reads no body and takes no slot); the fallback sits right
//! inside metrics, where it sees every refusal and the failures that
//! survived the retries, and metrics sees its answers (outcome
//! `fallback`). Without a fallback in code it passes every result through
//! (a branch), and metrics pays nothing for it.
//!
//! Every part is always there, so a stack's type does not depend on the
//! configuration; a part switched off by config costs a few nanoseconds:
//! a disabled breaker records nothing, disabled retries never retry (and
//! never clone a request), disabled admission is a pool too large to fill
//! (it still sheds under memory pressure), and no timeout is no timer.
//!
//! A part switched off asks nothing of your types, with one exception the
//! type cannot know about: [`ServiceLayer`] needs `Req: Clone` for its
//! retries even when the configuration turns them off;
//! [`ServiceLayer::without_retries`] drops that bound. Fault injection
//! asks nothing of the response (the HTTP and gRPC stacks answer an
//! injected status themselves). Each stack's bounds are listed next to
//! [`SystemHardening::layer`](crate::SystemHardening::layer) and
//! [`http_layer`](crate::SystemHardening::http_layer); where a stack does
//! not fit, [`fits_layer`] and [`fits_http_layer`] make the compiler name
//! the missing bound.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::timeout::Timeout;
use tower_hardening_core::{BoxError, ConfigError, ErrorsAsFailures, GrpcCode, Outcome, Priority};
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{GrpcStatuses, HttpStatuses};
use crate::config::ClassifyConfig;
use crate::breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer, EosCircuitBreaker};
use crate::config::ServiceConfig;
use crate::limit::{PriorityOf, ResourceLimit, ResourceLimitLayer, ResourcePool};
use crate::metrics::{EosMetricsService, MetricsLayer, MetricsService};
use crate::fault::{Fault, FaultHandle, FaultLayer, NoResponse, StatusError};
use crate::client_body::{ServiceTimeout, StreamRelease};
use crate::recovery::{
    BoxErrors, BufferBodies, CloneRequests, IdempotentHttp, NeverReplay, ReplayBody, ReplayHttp, RetryHandle,
    RetryLayer, RetryPolicy, RetryPredicate,
};
use crate::responses::{ErrorResponse, ErrorResponses, GrpcErrorResponses, HttpErrorResponses};
use tower_hardening_core::fallback::CountingFallbacks;
use crate::ratelimit::{AnyRequest, ExtensionPriority, FixedPriority, HttpKeys, RateLimit, RateLimitHandle, RateLimitLayer};
use crate::recovery::{Answer, AnswerSource, Cause, Fallback, FallbackCounts, FallbackLayer, FallbackOn, FallbackStats, FnAnswer, NoFallback, ServiceAnswer};

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
    /// Whether admission is on (`limit.enabled`): off, `pool` is unlimited
    /// and no figure of it is published.
    pub(crate) admission: bool,
    pub(crate) retry: RetryLayer<ErrorsAsFailures, RetryEnabled>,
    pub(crate) metrics: MetricsLayer<ErrorsAsFailures>,
    pub(crate) fault: FaultLayer,
    pub(crate) retry_enabled: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) body_timeout: Duration,
    pub(crate) upload_timeout: Duration,
    pub(crate) stream_timeout: Duration,
    pub(crate) trust_idempotency_key: bool,
    pub(crate) default_priority: Priority,
    /// What the HTTP and gRPC stacks count as failures (checked).
    pub(crate) classify: ClassifyConfig,
    /// The rate limiter (`RateLimitLayer::disabled()` when off).
    pub(crate) rate_limit: RateLimitLayer,
    /// The cases a fallback set in code answers, and its counts.
    pub(crate) fallback_on: FallbackOn,
    pub(crate) fallback_counts: Arc<FallbackCounts>,
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
        let fault = config.fault.to_builder(name).build()?;
        config
            .classify
            .validate(&format!("services.{name}.classify"))?;
        let rate_limit = if config.rate_limit.enabled {
            let prefix = format!("services.{name}.rate_limit");
            config
                .rate_limit
                .to_builder(name, &prefix)?
                .build()
                .map_err(|err| err.at(&prefix))?
                .priority(ExtensionPriority(config.criticality))
        } else {
            RateLimitLayer::disabled()
        };
        let fallback_on = config.fallback.cases(&format!("services.{name}.fallback"))?;
        Ok(StackParts {
            breaker_layer,
            breaker,
            pool,
            admission: config.limit.enabled,
            retry,
            metrics,
            fault,
            retry_enabled: config.retry.enabled,
            timeout: config.timeout,
            body_timeout: config.body_timeout,
            upload_timeout: config.upload_timeout,
            stream_timeout: config.stream_timeout,
            trust_idempotency_key: config.retry.trust_idempotency_key,
            default_priority: config.criticality,
            classify: config.classify.clone(),
            rate_limit,
            fallback_on,
            fallback_counts: Arc::default(),
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

/// The HTTP stack's predicate: retries on, and the request idempotent by
/// the application's own rule ([`HttpServiceLayer::idempotent`]), or by
/// its method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE). A client's
/// `Idempotency-Key` header counts only where the configuration trusts it
/// (`retry.trust_idempotency_key`).
#[derive(Clone)]
pub struct HttpRetryEnabled {
    enabled: bool,
    trust_idempotency_key: bool,
    rule: Option<Arc<IdempotentRule>>,
}

/// The application's rule of which HTTP requests are idempotent.
type IdempotentRule = dyn Fn(&http::Method, &http::Uri, &http::HeaderMap) -> bool + Send + Sync;

impl fmt::Debug for HttpRetryEnabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRetryEnabled")
            .field("enabled", &self.enabled)
            .field("trust_idempotency_key", &self.trust_idempotency_key)
            .field("rule", &self.rule.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl<B> RetryPredicate<http::Request<B>> for HttpRetryEnabled {
    fn may_retry(&self, request: &http::Request<B>) -> bool {
        if !self.enabled {
            return false;
        }
        if let Some(rule) = &self.rule {
            return rule(request.method(), request.uri(), request.headers());
        }
        if self.trust_idempotency_key {
            return IdempotentHttp.may_retry(request);
        }
        matches!(
            *request.method(),
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::TRACE
                | http::Method::PUT
                | http::Method::DELETE
        )
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

/// The service a [`ServiceLayer`] builds around `S`; `K` is how a
/// request is copied for a retry ([`CloneRequests`], or [`NeverReplay`]
/// after [`ServiceLayer::without_retries`]); `A` where a fallback's
/// answers come from ([`NoFallback`] unless [`ServiceLayer::fallback`]).
pub type HardenedService<S, K = CloneRequests, A = NoFallback> = MetricsService<
    Fallback<RateLimit<ResourceLimit<
        crate::recovery::RetryService<
            RetryPolicy<ErrorsAsFailures, K, RetryEnabled>,
            BoxErrors<CircuitBreaker<OptionalTimeout<Fault<S, NoResponse>>, ErrorsAsFailures>>,
        >,
        ServicePriority,
        crate::limit::OneUnit,
        crate::limit::OnResponse,
        ErrorsAsFailures,
    >, AnyRequest, FixedPriority>, A, ErrorsAsFailures>,
    <A as AnswerSource>::Metrics<ErrorsAsFailures>,
>;

/// The service an [`HttpServiceLayer`] builds around `S`: its error type
/// is `Infallible` (errors are answered as [`responses`](crate::responses)
/// says), and `S` receives the request with its body as `F` makes it
/// (`ReplayBody<B>` unless [`HttpServiceLayer::map_body`] says otherwise).
pub type HardenedHttpService<S, P = Http, F = KeepReplay, A = NoFallback> = ErrorResponses<
    EosMetricsService<
        Fallback<RateLimit<BufferBodies<
            ResourceLimit<
                crate::recovery::RetryService<
                    RetryPolicy<<P as Protocol>::Classifier, ReplayHttp, crate::recovery::AnyRequest>,
                    BoxErrors<
                        EosCircuitBreaker<
                            ServiceTimeout<Fault<Rebody<S, F>, <P as Protocol>::FaultResponse>>,
                            <P as Protocol>::Classifier,
                        >,
                    >,
                >,
                HttpPriority,
                crate::limit::OneUnit,
                StreamRelease,
                <P as Protocol>::Classifier,
            >,
            HttpRetryEnabled,
        >, HttpKeys, ExtensionPriority>, A, <P as Protocol>::Classifier>,
        <A as AnswerSource>::Metrics<<P as Protocol>::Classifier>,
    >,
    <P as Protocol>::Errors,
>;

/// A service's whole stack as a `tower::Layer`, from
/// [`SystemHardening::layer`](crate::SystemHardening::layer): metrics,
/// admission, retry, breaker, timeout and fault injection, configured by
/// the service's section. Every error is a `BoxError`; every clone shares
/// one breaker, pool and budget.
#[derive(Debug, Clone)]
pub struct ServiceLayer<K = CloneRequests, A = NoFallback> {
    parts: Arc<StackParts>,
    replay: K,
    fallback: A,
    /// The rate limiter for requests of any type (global).
    rate_limit: RateLimitLayer<AnyRequest, FixedPriority>,
}

impl ServiceLayer {
    /// Refused when the rate limit is keyed: a peer address or a header
    /// needs the HTTP or gRPC stack.
    pub(crate) fn new(parts: Arc<StackParts>) -> Result<Self, BoxError> {
        let rate_limit = parts
            .rate_limit
            .clone()
            .any_request(parts.default_priority)
            .map_err(|err| err.at(&format!("services.{}.rate_limit", parts.breaker.name())))?;
        Ok(ServiceLayer {
            parts,
            replay: CloneRequests,
            fallback: NoFallback,
            rate_limit,
        })
    }
}

impl<A> ServiceLayer<CloneRequests, A> {
    /// The same stack without retries, whatever the configuration says:
    /// its requests need not be `Clone` (axum's `Body` is not). Every other
    /// part stays as configured.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_hardening::{SystemHardening, config::SystemHardeningConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_hardening::BoxError> {
    /// # let config = SystemHardeningConfig::from_toml_str("[services.api]")?;
    /// # let hardening = SystemHardening::builder(config).build()?;
    /// struct Upload(std::fs::File); // not `Clone`
    ///
    /// let svc = hardening.layer("api")?.without_retries().layer(service_fn(
    ///     |upload: Upload| async move { upload.0.metadata() },
    /// ));
    /// # let _ = svc;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn without_retries(self) -> ServiceLayer<NeverReplay, A> {
        ServiceLayer {
            parts: self.parts,
            replay: NeverReplay,
            fallback: self.fallback,
            rate_limit: self.rate_limit,
        }
    }
}

impl<K> ServiceLayer<K> {
    /// Answers with `answer(cause)` in place of a refusal (open breaker,
    /// shedding, rate limit, queue timeout) or a failure that survived
    /// the retries, in the cases the `fallback` section names (default
    /// every one); a client's own error never. A fallback that panics
    /// answers nothing: the original error surfaces. Its answers count as
    /// outcome `fallback` in metrics.
    ///
    /// ```
    /// # use tower::{Layer, Service, ServiceExt, service_fn};
    /// # use tower_hardening::{BoxError, SystemHardening, config::SystemHardeningConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// # let config = SystemHardeningConfig::from_toml_str("[services.prices]")?;
    /// # let hardening = SystemHardening::builder(config).build()?;
    /// let layer = hardening.layer("prices")?.fallback(|_cause| "cached prices".to_owned());
    /// layer.breaker().force_open();
    /// let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>("fresh".to_owned()) }));
    /// assert_eq!(svc.ready().await?.call(()).await?, "cached prices");
    /// assert_eq!(layer.fallback_stats().answered, 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn fallback<F, Res>(self, answer: F) -> ServiceLayer<K, FnAnswer<F>>
    where
        F: Fn(Cause) -> Res + Clone,
    {
        self.with_fallback(FnAnswer::new(answer))
    }

    /// [`fallback`](Self::fallback) with a service called with the
    /// [`Cause`] (a clone of it per answer, driven to readiness first).
    #[must_use]
    pub fn fallback_service<S2>(self, service: S2) -> ServiceLayer<K, ServiceAnswer<S2>>
    where
        S2: Service<Cause> + Clone,
    {
        self.with_fallback(ServiceAnswer::new(service))
    }

    fn with_fallback<A2>(self, fallback: A2) -> ServiceLayer<K, A2> {
        ServiceLayer {
            parts: self.parts,
            replay: self.replay,
            fallback,
            rate_limit: self.rate_limit,
        }
    }
}

impl<K, A> ServiceLayer<K, A> {
    /// The stack's rate limiter, if the `rate_limit` section switched it on.
    pub fn rate_limit(&self) -> Option<RateLimitHandle> {
        self.parts.rate_limit.handle()
    }

    /// How often the fallback answered (shared by every stack of the
    /// service), and how often it failed and the original error surfaced.
    pub fn fallback_stats(&self) -> FallbackStats {
        self.parts.fallback_counts.stats()
    }

    /// The stack's breaker.
    pub fn breaker(&self) -> BreakerHandle {
        self.parts.breaker.clone()
    }

    /// The stack's admission pool. With admission off (`limit.enabled =
    /// false`) it is an unlimited stand-in (2^40 units) that only
    /// memory-pressure shedding refuses; `/metrics` leaves it out.
    pub fn pool(&self) -> &ResourcePool {
        &self.parts.pool
    }

    /// The stack's retry counters.
    pub fn retry(&self) -> RetryHandle {
        self.parts.retry_handle()
    }

    /// The stack's fault injection (off unless configured).
    pub fn faults(&self) -> FaultHandle {
        self.parts.fault.handle()
    }
}

impl<S: Clone, K: Clone, A: Clone + AnswerSource> Layer<S> for ServiceLayer<K, A> {
    type Service = HardenedService<S, K, A>;

    fn layer(&self, inner: S) -> Self::Service {
        let parts = &self.parts;
        let inner = parts.fault.layer(inner);
        let inner = OptionalTimeout::new(inner, parts.timeout);
        let inner = parts.breaker_layer.layer(inner);
        let inner = parts.retry.layer_replaying(inner, self.replay.clone());
        let inner = ResourceLimitLayer::new(parts.pool.clone())
            .priority(ServicePriority(parts.default_priority))
            .layer(inner);
        // Refused before admission, seen by the fallback and metrics.
        let inner = self.rate_limit.layer(inner);
        let inner = FallbackLayer::from_answer(self.fallback.clone())
            .on(parts.fallback_on)
            .counts(parts.fallback_counts.clone())
            .layer(inner);
        // Counts the fallback's answers as `fallback` (free without one).
        parts
            .metrics
            .clone()
            .classifier(A::metrics(ErrorsAsFailures))
            .layer(inner)
    }
}

/// What an HTTP stack speaks: how it classifies responses, answers errors
/// and injects faulty responses. [`Http`] or [`Grpc`].
pub trait Protocol: Clone + Send + Sync + 'static {
    /// What counts as a failure.
    type Classifier: Clone + Send + Sync + 'static;
    /// How errors become responses.
    type Errors: ErrorResponse;
    /// How an injected status travels up: as an
    /// [`InjectedStatus`](crate::fault::InjectedStatus) error that the
    /// stack's error responses answer ([`StatusError`]), so the service's
    /// response body need not be `Default`.
    type FaultResponse: Clone + Send + Sync + 'static;

    /// The classifier for a service's `[services.x.classify]` section
    /// (checked before: an entry out of range is left out).
    fn classifier(config: &ClassifyConfig) -> Self::Classifier;
    /// The error mapping.
    fn errors() -> Self::Errors;
    /// The faulty response.
    fn fault_response() -> Self::FaultResponse;
    /// Whether a response's admission units are held until its body ends
    /// (a gRPC server stream), rather than given back at its head.
    fn holds_until_body_end() -> bool {
        false
    }
}

/// Plain HTTP: 5xx are failures (unless the service's `classify`
/// section or [`HttpServiceLayer::classify`] says otherwise), errors
/// become 503 / 504 / 500.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl Protocol for Http {
    type Classifier = HttpStatuses;
    type Errors = HttpErrorResponses;
    type FaultResponse = StatusError;

    fn classifier(config: &ClassifyConfig) -> HttpStatuses {
        HttpStatuses::from_config(config)
    }
    fn errors() -> HttpErrorResponses {
        HttpErrorResponses
    }
    fn fault_response() -> StatusError {
        StatusError
    }
}

/// gRPC: `grpc-status` UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL and
/// RESOURCE_EXHAUSTED are failures (read from the response headers, where
/// a trailers-only error puts them), unless the service's `classify`
/// section or [`HttpServiceLayer::classify`] says otherwise; errors become
/// gRPC statuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grpc;

impl Protocol for Grpc {
    type Classifier = GrpcStatuses;
    type Errors = GrpcErrorResponses;
    type FaultResponse = StatusError;

    fn classifier(config: &ClassifyConfig) -> GrpcStatuses {
        GrpcStatuses::from_config(config)
    }
    fn errors() -> GrpcErrorResponses {
        GrpcErrorResponses
    }
    fn fault_response() -> StatusError {
        StatusError
    }
    fn holds_until_body_end() -> bool {
        true
    }
}

/// The same stack for `http::Request<B>`, from
/// [`SystemHardening::http_layer`](crate::SystemHardening::http_layer) or
/// [`grpc_layer`](crate::SystemHardening::grpc_layer): responses are
/// classified by the protocol (5xx, or a failing `grpc-status`), errors
/// become responses (the service's error type is `Infallible`, as axum and
/// tonic require), priorities come from the request's extensions (never
/// from a client's header), and retries replay only idempotent requests
/// (by method, or by [`idempotent`](Self::idempotent); never by a client's
/// header unless the configuration trusts it) with a body of known size
/// up to 64 KiB.
///
/// The client's body is the client's business. A body kept for retries
/// is read before admission, within `body_timeout`, so a slow client
/// holds no slot; a body the handler streams itself must be in within
/// `upload_timeout`. A body that breaks is answered 400, one that stalls
/// 408, one too large 413; none of them is charged to the breaker, and
/// metrics count them `ignored`. The per-call `timeout` starts when the
/// service has its body (see [`ServiceTimeout`]).
///
/// A gRPC stack holds a call's admission units until its response stream
/// ends or is dropped (or `stream_timeout` passes, whether or not the
/// client is still reading), so server streams count towards
/// `max_concurrency` for as long as they run. Its refusals carry their
/// hint as `grpc-retry-pushback-ms`.
///
/// The service below receives `Request<ReplayBody<B>>`; to give it back
/// its own body type (what an axum `Router` or a tonic `Server` holds),
/// add [`map_body`](Self::map_body): `.map_body(axum::body::Body::new)`.
#[derive(Clone)]
pub struct HttpServiceLayer<P: Protocol = Http, F = KeepReplay, A = NoFallback> {
    parts: Arc<StackParts>,
    body: F,
    protocol: P,
    idempotent: Option<Arc<IdempotentRule>>,
    classifier: P::Classifier,
    fallback: A,
}

impl<P: Protocol> HttpServiceLayer<P> {
    pub(crate) fn new(parts: Arc<StackParts>, protocol: P) -> Self {
        let classifier = P::classifier(&parts.classify);
        HttpServiceLayer {
            parts,
            body: KeepReplay,
            protocol,
            idempotent: None,
            classifier,
            fallback: NoFallback,
        }
    }
}

impl<F, A> HttpServiceLayer<Http, F, A> {
    /// Which response statuses are this stack's failures, decided in code:
    /// `rule` gives each status its [`Outcome`], in place of the protocol's
    /// rule (5xx) and the `classify` section's lists. The breaker, the
    /// retries, admission and the metrics all read it. An `Err` stays a
    /// failure.
    ///
    /// ```
    /// # use tower_hardening::{SystemHardening, config::SystemHardeningConfig};
    /// use tower_hardening::core::Outcome;
    /// # let config = SystemHardeningConfig::from_toml_str("[services.api]").unwrap();
    /// # let hardening = SystemHardening::builder(config).build().unwrap();
    /// // A 502 from my dependency is not my failure.
    /// let layer = hardening.http_layer("api").unwrap().classify(|status| match status.as_u16() {
    ///     502 => Outcome::Ignored,
    ///     500..=599 => Outcome::Failure,
    ///     _ => Outcome::Success,
    /// });
    /// ```
    #[must_use]
    pub fn classify(
        mut self,
        rule: impl Fn(http::StatusCode) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        self.classifier = self.classifier.with_rule(rule);
        self
    }
}

impl<F, A> HttpServiceLayer<Grpc, F, A> {
    /// Which `grpc-status` codes are this stack's failures, decided in
    /// code: `rule` gives each code its [`Outcome`], in place of the
    /// default codes and the `classify` section's lists. The breaker, the
    /// retries, admission and the metrics all read it.
    ///
    /// ```
    /// # use tower_hardening::{SystemHardening, config::SystemHardeningConfig};
    /// use tower_hardening::core::{GrpcCode, Outcome};
    /// # let config = SystemHardeningConfig::from_toml_str("[services.api]").unwrap();
    /// # let hardening = SystemHardening::builder(config).build().unwrap();
    /// let layer = hardening.grpc_layer("api").unwrap().classify(|code| match code {
    ///     GrpcCode::Unavailable | GrpcCode::Internal => Outcome::Failure,
    ///     _ => Outcome::Success,
    /// });
    /// ```
    #[must_use]
    pub fn classify(mut self, rule: impl Fn(GrpcCode) -> Outcome + Send + Sync + 'static) -> Self {
        self.classifier = self.classifier.with_rule(rule);
        self
    }
}

impl<P: Protocol + fmt::Debug, F: fmt::Debug, A> fmt::Debug for HttpServiceLayer<P, F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServiceLayer")
            .field("parts", &self.parts)
            .field("body", &self.body)
            .field("protocol", &self.protocol)
            .field("idempotent", &self.idempotent.as_ref().map(|_| "Fn"))
            .field("classifier", &std::any::type_name::<P::Classifier>())
            .finish()
    }
}

impl<P: Protocol, F, A> HttpServiceLayer<P, F, A> {
    /// Hands the service below the request body as `map` makes it from
    /// the replayable body (`axum::body::Body::new`,
    /// `tonic::body::Body::new`).
    #[must_use]
    pub fn map_body<F2: Clone>(self, map: F2) -> HttpServiceLayer<P, WithBody<F2>, A> {
        HttpServiceLayer {
            parts: self.parts,
            body: WithBody(map),
            protocol: self.protocol,
            idempotent: self.idempotent,
            classifier: self.classifier,
            fallback: self.fallback,
        }
    }

    /// Answers with the response `answer(cause)` makes in place of a
    /// refusal (open breaker, shedding, rate limit, queue timeout) or a
    /// failure that survived the retries (an error, or a response the
    /// stack's classifier counts as a failure, read at the head), in the
    /// cases the `fallback` section names (default every one). A client's
    /// own error (a broken or stalled body) never falls back; a fallback
    /// that panics answers nothing and the original answer stands. The
    /// response body is the service's or the fallback's
    /// (`http_body_util::Either`); its answers count as outcome `fallback`
    /// in metrics.
    ///
    /// ```
    /// # use tower_hardening::{SystemHardening, config::SystemHardeningConfig};
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// # let config = SystemHardeningConfig::from_toml_str("[services.api]").unwrap();
    /// # let hardening = SystemHardening::builder(config).build().unwrap();
    /// let layer = hardening.http_layer("api").unwrap().fallback(|_cause| {
    ///     http::Response::new(Full::new(Bytes::from_static(b"{\"items\": []}")))
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn fallback<G, B2>(self, answer: G) -> HttpServiceLayer<P, F, HttpAnswer<G, B2>>
    where
        G: Fn(Cause) -> http::Response<B2> + Clone,
    {
        HttpServiceLayer {
            parts: self.parts,
            body: self.body,
            protocol: self.protocol,
            idempotent: self.idempotent,
            classifier: self.classifier,
            fallback: HttpAnswer {
                answer: FnAnswer::new(answer),
                body: std::marker::PhantomData,
            },
        }
    }

    /// The stack's rate limiter, if the `rate_limit` section switched it on.
    pub fn rate_limit(&self) -> Option<RateLimitHandle> {
        self.parts.rate_limit.handle()
    }

    /// How often the fallback answered (shared by every stack of the
    /// service), and how often it failed and the original answer stood.
    pub fn fallback_stats(&self) -> FallbackStats {
        self.parts.fallback_counts.stats()
    }

    /// Which requests are idempotent, and so may be retried (when the
    /// service's retries are on): the application's rule, in place of the
    /// default (idempotent methods). A client chooses nothing here.
    ///
    /// ```
    /// # use tower_hardening::{SystemHardening, config::SystemHardeningConfig};
    /// # let config = SystemHardeningConfig::from_toml_str("[services.api.retry]").unwrap();
    /// # let hardening = SystemHardening::builder(config).build().unwrap();
    /// let layer = hardening.http_layer("api").unwrap().idempotent(|method, uri, _headers| {
    ///     method == http::Method::GET || uri.path() == "/search"
    /// });
    /// ```
    #[must_use]
    pub fn idempotent(
        mut self,
        rule: impl Fn(&http::Method, &http::Uri, &http::HeaderMap) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.idempotent = Some(Arc::new(rule));
        self
    }

    /// The stack's breaker.
    pub fn breaker(&self) -> BreakerHandle {
        self.parts.breaker.clone()
    }

    /// The stack's admission pool. With admission off (`limit.enabled =
    /// false`) it is an unlimited stand-in (2^40 units) that only
    /// memory-pressure shedding refuses; `/metrics` leaves it out.
    pub fn pool(&self) -> &ResourcePool {
        &self.parts.pool
    }

    /// The stack's fault injection (off unless configured).
    pub fn faults(&self) -> FaultHandle {
        self.parts.fault.handle()
    }
}

impl<S: Clone, P: Protocol, F: Clone, A: Clone + AnswerSource> Layer<S> for HttpServiceLayer<P, F, A> {
    type Service = HardenedHttpService<S, P, F, A>;

    fn layer(&self, inner: S) -> Self::Service {
        let parts = &self.parts;
        let classifier = self.classifier.clone();
        let inner = Rebody {
            inner,
            map: self.body.clone(),
        };
        let inner = parts
            .fault
            .clone()
            .responding(P::fault_response())
            .layer(inner);
        // Measures the service, not the upload (see `ServiceTimeout`).
        let inner = ServiceTimeout::new(inner, parts.timeout, parts.upload_timeout);
        // A gRPC status may come in the trailers: the breaker waits for
        // the end of the body when the head does not decide.
        let inner = parts
            .breaker_layer
            .clone()
            .classifier(classifier.clone())
            .at_end_of_stream()
            .layer(inner);
        let predicate = HttpRetryEnabled {
            enabled: parts.retry_enabled,
            trust_idempotency_key: parts.trust_idempotency_key,
            rule: self.idempotent.clone(),
        };
        // The retries; their bodies are buffered above admission.
        let inner = parts
            .retry
            .clone()
            .classifier(classifier.clone())
            .idempotent(predicate.clone())
            .http(MAX_REPLAY_BODY)
            .layer(inner)
            .into_inner();
        let release = if P::holds_until_body_end() {
            StreamRelease::at_end(parts.stream_timeout)
        } else {
            StreamRelease::at_head()
        };
        let inner = ResourceLimitLayer::new(parts.pool.clone())
            .priority(HttpPriority(parts.default_priority))
            .classify(classifier.clone())
            .release_on(release)
            .layer(inner);
        // A body kept for retries is read before admission, within its
        // own deadline: a client that dawdles holds no slot.
        let inner = BufferBodies::new(inner, MAX_REPLAY_BODY, Some(predicate))
            .body_timeout(parts.body_timeout)
            .upload_timeout(Some(parts.upload_timeout));
        // Refused before a body is read or a slot is taken.
        let inner = parts.rate_limit.layer(inner);
        let inner = FallbackLayer::from_answer(self.fallback.clone())
            .on(parts.fallback_on)
            .classifier(classifier.clone())
            .counts(parts.fallback_counts.clone())
            .layer(inner);
        // Counted when the body ends if the head does not decide (gRPC);
        // the fallback's answers as `fallback` (free without one).
        let inner = parts
            .metrics
            .clone()
            .classifier(A::metrics(classifier))
            .at_end_of_stream()
            .layer(inner);
        ErrorResponses::new(inner, P::errors())
    }
}

/// An HTTP stack's fallback ([`HttpServiceLayer::fallback`]): answers
/// with a response of its own body type `B2`; the stack's responses carry
/// the service's body or the fallback's.
pub struct HttpAnswer<G, B2> {
    answer: FnAnswer<G>,
    body: std::marker::PhantomData<fn() -> B2>,
}

impl<G: Clone, B2> Clone for HttpAnswer<G, B2> {
    fn clone(&self) -> Self {
        HttpAnswer {
            answer: self.answer.clone(),
            body: std::marker::PhantomData,
        }
    }
}

impl<G, B2> fmt::Debug for HttpAnswer<G, B2> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpAnswer")
    }
}

impl<G, B2> AnswerSource for HttpAnswer<G, B2> {
    type Metrics<C: Clone> = CountingFallbacks<C>;

    fn metrics<C: Clone>(classifier: C) -> CountingFallbacks<C> {
        CountingFallbacks(classifier)
    }
}

impl<G, B, B2> Answer<http::Response<B>> for HttpAnswer<G, B2>
where
    G: Fn(Cause) -> http::Response<B2>,
{
    type Response = http::Response<http_body_util::Either<B, B2>>;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn pass(response: http::Response<B>) -> Self::Response {
        response.map(http_body_util::Either::Left)
    }

    fn answer(&self, cause: Cause) -> Self::Future {
        std::future::ready(
            self.answer
                .call(cause)
                .map(|response| response.map(http_body_util::Either::Right)),
        )
    }
}

/// Keeps the replayable body: the service below takes
/// `Request<ReplayBody<B>>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepReplay;

/// Maps the replayable body with a function (see
/// [`HttpServiceLayer::map_body`]).
#[derive(Debug, Clone, Copy)]
pub struct WithBody<F>(F);

/// How the request body reaches the service below an HTTP stack.
pub trait MapBody<B> {
    /// The body the service below receives.
    type Body;
    /// Makes it.
    fn map(&self, body: ReplayBody<B>) -> Self::Body;
}

impl<B> MapBody<B> for KeepReplay {
    type Body = ReplayBody<B>;
    fn map(&self, body: ReplayBody<B>) -> ReplayBody<B> {
        body
    }
}

impl<B, B2, F: Fn(ReplayBody<B>) -> B2> MapBody<B> for WithBody<F> {
    type Body = B2;
    fn map(&self, body: ReplayBody<B>) -> B2 {
        (self.0)(body)
    }
}

/// Hands the service below the request with its body mapped.
#[derive(Debug, Clone)]
pub struct Rebody<S, F> {
    inner: S,
    map: F,
}

impl<S, F, B> Service<http::Request<ReplayBody<B>>> for Rebody<S, F>
where
    F: MapBody<B>,
    S: Service<http::Request<F::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline(always)]
    fn call(&mut self, request: http::Request<ReplayBody<B>>) -> S::Future {
        let map = &self.map;
        self.inner.call(request.map(|body| map.map(body)))
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
    pub(crate) fn new(inner: S, timeout: Option<Duration>) -> Self {
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
    type Future = OptionalTimeoutFuture<
        Pin<Box<tower::timeout::future::ResponseFuture<S::Future>>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            OptionalTimeout::On(timeout) => timeout.poll_ready(cx),
            OptionalTimeout::Off(inner) => inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            // Boxed: the timer is large, and inline it would make the
            // future of every layer above larger even without a timeout.
            OptionalTimeout::On(timeout) => OptionalTimeoutFuture {
                kind: TimeoutKind::On {
                    future: Box::pin(timeout.call(request)),
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

/// Compiles only if [`SystemHardening::layer`](crate::SystemHardening::layer)'s
/// stack fits `service` for requests of type `Req` and can be spawned:
/// call it where the stack does not compile, and the compiler names the
/// bound that is missing (the stack's own error names only its type).
///
/// The bounds: `S: Service<Req> + Clone + Send + 'static` (every clone
/// shares one breaker, pool and budget), `S::Error: Into<BoxError>`,
/// `S::Future: Send + 'static`, `S::Response: Send + 'static`,
/// `Req: Send + 'static`, and `Req: Clone` for retries (drop it with
/// [`ServiceLayer::without_retries`] and [`fits_layer_without_retries`]).
///
/// ```
/// use tower::service_fn;
/// use tower_hardening::stack::fits_layer;
///
/// let svc = service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// fits_layer::<u32, _>(&svc);
/// ```
///
/// A request that is not `Clone`:
///
/// ```compile_fail
/// use tower::service_fn;
/// use tower_hardening::stack::fits_layer;
///
/// struct Upload(std::fs::File);
/// let svc = service_fn(|u: Upload| async move { u.0.metadata() });
/// // error[E0277]: the trait bound `Upload: Clone` is not satisfied
/// //   note: required by a bound in `fits_layer`
/// fits_layer::<Upload, _>(&svc);
/// ```
pub fn fits_layer<Req, S>(service: &S)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Clone + Send + 'static,
{
    let _ = service;
}

/// [`fits_layer`] for [`ServiceLayer::without_retries`]: the same bounds
/// but `Req: Clone`.
pub fn fits_layer_without_retries<Req, S>(service: &S)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    let _ = service;
}

/// Compiles only if the stack of
/// [`SystemHardening::http_layer`](crate::SystemHardening::http_layer) or
/// [`grpc_layer`](crate::SystemHardening::grpc_layer), with
/// [`map_body`](HttpServiceLayer::map_body) giving the service its body
/// type `ReqBody`, fits `service` and can be spawned; the compiler then
/// names the bound that is missing.
///
/// The bounds: `S: Service<http::Request<ReqBody>, Response =
/// http::Response<ResBody>> + Clone + Send + 'static`, `S::Error:
/// Into<BoxError>`, `S::Future: Send + 'static`, and a response body
/// `ResBody: http_body::Body + Send + 'static`. Nothing more: the body need
/// not be `Default` (hyper's `Incoming` fits), and requests need not be
/// `Clone` (bodies are buffered for retries by the stack itself).
///
/// ```
/// use tower::service_fn;
/// use tower_hardening::stack::fits_http_layer;
///
/// let svc = service_fn(|_: http::Request<axum::body::Body>| async move {
///     Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
/// });
/// fits_http_layer::<axum::body::Body, _, _>(&svc);
/// ```
///
/// A response that is no `http::Response`:
///
/// ```compile_fail
/// use tower::service_fn;
/// use tower_hardening::stack::fits_http_layer;
///
/// let svc = service_fn(|_: http::Request<axum::body::Body>| async move {
///     Ok::<_, std::convert::Infallible>("hello")
/// });
/// // error[E0271]: expected `{async block}` to be a future that resolves to
/// //   `Result<Response<_>, _>`, but it resolves to `Result<&str, Infallible>`
/// //   note: required by a bound in `fits_http_layer`
/// fits_http_layer::<axum::body::Body, _, _>(&svc);
/// ```
pub fn fits_http_layer<ReqBody, ResBody, S>(service: &S)
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
{
    let _ = service;
}
