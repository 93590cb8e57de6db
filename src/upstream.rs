//! Upstreams: one hardened service over the endpoints of a dependency.
//! The layer crate `tower-hardening-upstream` (all of it re-exported
//! here) does the per-endpoint work; the facade puts the whole upstream
//! under one breaker, admission, fault injection and metrics, as a
//! service, and reports each endpoint in health. The guide below is
//! `docs/upstreams.md`.
//!
#![doc = include_str!("../docs/upstreams.md")]

pub use tower_hardening_upstream::*;

#[cfg(all(
    feature = "breaker",
    feature = "recovery",
    feature = "limit",
    feature = "metrics",
    feature = "fault"
))]
mod hardened {
    use std::fmt;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tower_hardening_core::{BoxError, ErrorsAsFailures, Priority};
    use tower_hardening_upstream::{
        EndpointState, HedgeDelay, HttpPushback, NoPushback, Upstream, UpstreamBuilder,
        UpstreamHandle,
    };
    use tower_layer::Layer;
    use tower_service::Service;

    use crate::SystemHardening;
    use crate::breaker::{BreakerHandle, CircuitBreaker};
    use crate::classify::{GrpcStatuses, HttpStatuses};
    use crate::config::HedgeDelayConfig;
    use crate::fault::{Fault, FaultHandle, NoResponse};
    use crate::handle::UnknownName;
    use crate::health::{EndpointHealth, EndpointView};
    use crate::limit::{OnResponse, OneUnit, PriorityOf, ResourceLimit, ResourceLimitLayer};
    use crate::metrics::MetricsService;
    use crate::stack::OptionalTimeout;

    /// The priority of an upstream's requests: a [`Priority`] in an HTTP
    /// request's extensions is not read here (requests of any type come
    /// through); every request has the upstream's criticality.
    #[derive(Debug, Clone, Copy)]
    pub struct UpstreamPriority(Priority);

    impl<Req> PriorityOf<Req> for UpstreamPriority {
        fn priority_of(&self, _: &Req) -> Priority {
            self.0
        }
    }

    type Stack<S, Req, C, P> = MetricsService<
        ResourceLimit<
            CircuitBreaker<OptionalTimeout<Fault<Upstream<S, Req, C, P>, NoResponse>>, C>,
            UpstreamPriority,
            OneUnit,
            OnResponse,
            C,
        >,
        C,
    >;

    /// An upstream under its service's stack, from
    /// [`SystemHardening::upstream`]: metrics, admission, one breaker over
    /// every endpoint (all of them failing opens it, and callers fail fast
    /// with `CircuitOpen`), the overall `timeout` of `[services.<name>]`,
    /// fault injection, then the upstream (endpoint choice, ejection,
    /// retries, pushback, hedging). Errors stay errors (`BoxError`): a
    /// client wants `Err`, not a 503.
    pub struct HardenedUpstream<S, Req, C = ErrorsAsFailures, P = NoPushback> {
        inner: Stack<S, Req, C, P>,
        handle: UpstreamHandle<S>,
        breaker: BreakerHandle,
        faults: FaultHandle,
    }

    impl<S, Req, C, P> Clone for HardenedUpstream<S, Req, C, P>
    where
        Stack<S, Req, C, P>: Clone,
    {
        fn clone(&self) -> Self {
            HardenedUpstream {
                inner: self.inner.clone(),
                handle: self.handle.clone(),
                breaker: self.breaker.clone(),
                faults: self.faults.clone(),
            }
        }
    }

    impl<S, Req, C, P> fmt::Debug for HardenedUpstream<S, Req, C, P> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("HardenedUpstream")
                .field("upstream", &self.handle)
                .field("breaker", &self.breaker)
                .finish_non_exhaustive()
        }
    }

    impl<S, Req, C, P> HardenedUpstream<S, Req, C, P> {
        /// The upstream's endpoints: their state, and changing them.
        pub fn endpoints(&self) -> &UpstreamHandle<S> {
            &self.handle
        }

        /// The breaker over the whole upstream.
        pub fn breaker(&self) -> BreakerHandle {
            self.breaker.clone()
        }

        /// The upstream's fault injection (off unless configured in
        /// `[services.<name>.fault]`).
        pub fn faults(&self) -> FaultHandle {
            self.faults.clone()
        }
    }

    impl<S, Req, C, P> Service<Req> for HardenedUpstream<S, Req, C, P>
    where
        Stack<S, Req, C, P>: Service<Req, Error = BoxError>,
    {
        type Response = <Stack<S, Req, C, P> as Service<Req>>::Response;
        type Error = BoxError;
        type Future = <Stack<S, Req, C, P> as Service<Req>>::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Req) -> Self::Future {
            self.inner.call(request)
        }
    }

    impl<S: Send + 'static> EndpointView for UpstreamHandle<S> {
        fn endpoints(&self) -> Vec<EndpointHealth> {
            UpstreamHandle::endpoints(self)
                .into_iter()
                .map(|e| EndpointHealth {
                    state: e.state.as_str(),
                    out_for: match e.state {
                        EndpointState::Healthy => None,
                        EndpointState::Ejected { remaining }
                        | EndpointState::PushedBack { remaining } => Some(remaining),
                    },
                    uri: e.uri,
                    failure_rate: e.failure_rate,
                    calls: e.calls,
                    ejections: e.ejections,
                    latency: e.latency,
                })
                .collect()
        }
    }

    /// A copy of an HTTP request whose body is `Clone` (head, body and
    /// extensions).
    fn copy_request<B: Clone>(request: &http::Request<B>) -> Option<http::Request<B>> {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }

    /// GET, HEAD, OPTIONS, TRACE, PUT and DELETE: the methods HTTP calls
    /// idempotent.
    fn idempotent_method<B>(request: &http::Request<B>) -> bool {
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

    impl SystemHardening {
        /// The upstream `name` (its `[upstreams.<name>]` section) as one
        /// hardened service over requests `Req`, each endpoint's service
        /// made by `make_endpoint` from its URI (and again for each
        /// endpoint the handle adds at run time). Every `Err` of an
        /// endpoint is its failure; requests are cloned for retries and
        /// hedges.
        ///
        /// Built once per name (a second call is an error): clone the
        /// service it returns.
        ///
        /// **What it needs of your types**: `S: Service<Req> + Clone +
        /// Send + 'static` with `S::Error: Into<BoxError>`, `S::Future:
        /// Send`, `S::Response: Send + 'static`, and `Req: Clone + Send +
        /// 'static`. A request that is not `Clone` goes through
        /// [`upstream_with`](Self::upstream_with) without a copy: it is
        /// sent once, never retried nor hedged.
        pub fn upstream<Req, S>(
            &self,
            name: &str,
            make_endpoint: impl Fn(&str) -> S + Send + Sync + 'static,
        ) -> Result<HardenedUpstream<S, Req>, BoxError>
        where
            Req: Clone + Send + 'static,
            S: Send + 'static,
        {
            self.upstream_with(name, |builder| builder.clone_requests(), make_endpoint)
        }

        /// The upstream `name` for HTTP clients (a hyper-util `Client`
        /// behind [`SetEndpoint`](crate::upstream::SetEndpoint)): 5xx
        /// answers are failures (or as `[services.<name>.classify]`
        /// says), `Retry-After` and `grpc-retry-pushback-ms` are obeyed,
        /// and only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT,
        /// DELETE) are retried after an answer or hedged; a refused
        /// connection is retried whatever the method. The request body
        /// `B` must be `Clone` (`Full<Bytes>`, `Empty`); for a body that
        /// is not (hyper's `Incoming`), use
        /// [`upstream_with`](Self::upstream_with) without a copy.
        pub fn http_upstream<B, S>(
            &self,
            name: &str,
            make_endpoint: impl Fn(&str) -> S + Send + Sync + 'static,
        ) -> Result<HardenedUpstream<S, http::Request<B>, HttpStatuses, HttpPushback>, BoxError>
        where
            B: Clone + Send + 'static,
            S: Send + 'static,
        {
            let classify = HttpStatuses::from_config(&self.upstream_section(name)?.0.classify);
            self.upstream_with(
                name,
                |builder| {
                    builder
                        .classify(classify)
                        .pushback(HttpPushback)
                        .replay_with(copy_request)
                        .idempotent(idempotent_method)
                },
                make_endpoint,
            )
        }

        /// The upstream `name` for gRPC clients (a tonic `Channel` per
        /// endpoint): failing `grpc-status` codes are failures (read from
        /// a trailers-only answer's head), `grpc-retry-pushback-ms` is
        /// obeyed. tonic's request body is not `Clone`, so requests are
        /// sent once: choice, ejection, pushback and the breaker work;
        /// retries and hedges do not.
        pub fn grpc_upstream<B, S>(
            &self,
            name: &str,
            make_endpoint: impl Fn(&str) -> S + Send + Sync + 'static,
        ) -> Result<HardenedUpstream<S, http::Request<B>, GrpcStatuses, HttpPushback>, BoxError>
        where
            B: Send + 'static,
            S: Send + 'static,
        {
            let classify = GrpcStatuses::from_config(&self.upstream_section(name)?.0.classify);
            self.upstream_with(
                name,
                |builder| builder.classify(classify).pushback(HttpPushback),
                make_endpoint,
            )
        }

        /// The upstream `name` with its layer set up by `setup` from the
        /// configured builder: a classifier, a pushback reader, how a
        /// request is copied ([`clone_requests`](UpstreamBuilder::clone_requests),
        /// [`replay_with`](UpstreamBuilder::replay_with), or neither: sent
        /// once) and which requests are idempotent. The classifier counts
        /// for the breaker, admission and metrics above too.
        pub fn upstream_with<Req, S, C, P>(
            &self,
            name: &str,
            setup: impl FnOnce(UpstreamBuilder<Req>) -> UpstreamBuilder<Req, C, P>,
            make_endpoint: impl Fn(&str) -> S + Send + Sync + 'static,
        ) -> Result<HardenedUpstream<S, Req, C, P>, BoxError>
        where
            S: Send + 'static,
            C: Clone,
        {
            let (service, config) = self.upstream_section(name)?;
            let entry = &self.shared.services[name];
            if entry.endpoints.get().is_some() {
                return Err(format!(
                    "upstream `{name}` was built already: clone the service it returned"
                )
                .into());
            }
            let parts = crate::hardening::parts(&self.shared, name)?;
            // Endpoints added at run time are checked as the
            // configuration's are: a bad one is an error, never a panic of
            // an endpoint function that trusts the configuration.
            let mut builder = Upstream::builder(name)
                .require_uris()
                .outlier(config.outlier_policy())
                .max_attempts(if config.retry.enabled {
                    config.retry.max_attempts
                } else {
                    1
                })
                .budget(
                    Duration::from_secs(10),
                    config.retry.budget_min_per_second,
                    config.retry.budget_ratio,
                )
                .events(self.shared.events.clone())
                .recorder(self.shared.recorder.clone());
            if let Some(timeout) = config.timeout {
                builder = builder.attempt_timeout(timeout);
            }
            if config.hedge.enabled {
                let delay = match config.hedge.delay {
                    HedgeDelayConfig::P95 => HedgeDelay::P95,
                    HedgeDelayConfig::Fixed(delay) => HedgeDelay::Fixed(delay),
                };
                builder = builder.hedge(delay, config.hedge.max_hedges);
            }
            let builder = setup(builder);
            let classify = builder.classifier().clone();
            let upstream = builder.build(config.endpoints.clone(), make_endpoint);
            let handle = upstream.handle();
            if entry
                .endpoints
                .set(Arc::new(handle.clone()) as Arc<dyn EndpointView>)
                .is_err()
            {
                return Err(format!(
                    "upstream `{name}` was built already: clone the service it returned"
                )
                .into());
            }
            let faults = parts.fault.handle();
            let inner = parts.fault.layer(upstream);
            let inner = OptionalTimeout::new(inner, service.timeout);
            let inner = parts
                .breaker_layer
                .clone()
                .classifier(classify.clone())
                .layer(inner);
            let inner = ResourceLimitLayer::new(parts.pool.clone())
                .priority(UpstreamPriority(parts.default_priority))
                .classify(classify.clone())
                .layer(inner);
            let inner = parts.metrics.clone().classifier(classify).layer(inner);
            Ok(HardenedUpstream {
                inner,
                handle,
                breaker: parts.breaker.clone(),
                faults,
            })
        }

        fn upstream_section(
            &self,
            name: &str,
        ) -> Result<(crate::config::ServiceConfig, crate::config::UpstreamConfig), BoxError>
        {
            let entry = self
                .shared
                .services
                .get(name)
                .filter(|entry| entry.upstream.is_some())
                .ok_or_else(|| UnknownName::Upstream(name.to_owned()))?;
            let upstream = entry
                .upstream
                .clone()
                .ok_or_else(|| UnknownName::Upstream(name.to_owned()))?;
            Ok((entry.config.clone(), upstream))
        }
    }
}

#[cfg(all(
    feature = "breaker",
    feature = "recovery",
    feature = "limit",
    feature = "metrics",
    feature = "fault"
))]
pub use hardened::{HardenedUpstream, UpstreamPriority};
