//! Building an upstream: its endpoints, outlier rules, retries, hedging.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower_hardening_core::{ErrorsAsFailures, EventSink};

use crate::outlier::OutlierPolicy;
use crate::pushback::NoPushback;
use crate::service::{Rules, Upstream};
use crate::shared::{Shared, SharedParts};

/// When a hedged attempt is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelay {
    /// After this long without an answer.
    Fixed(Duration),
    /// After the upstream's observed 95th percentile latency (of its last
    /// 256 successful attempts); no hedge before 20 have been seen.
    P95,
}

/// Makes a copy of a request for a retry or a hedge; `None`: this one
/// cannot be copied, and is sent once.
pub(crate) type ReplayFn<Req> = dyn Fn(&Req) -> Option<Req> + Send + Sync;
/// Whether a request may be sent twice (retried after a failure it may
/// have caused, or hedged).
pub(crate) type IdempotentFn<Req> = dyn Fn(&Req) -> bool + Send + Sync;

/// Builds an [`Upstream`]; from [`Upstream::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct UpstreamBuilder<Req, C = ErrorsAsFailures, P = NoPushback> {
    name: Arc<str>,
    policy: OutlierPolicy,
    max_attempts: u32,
    budget: (Duration, u32, f32),
    timeout: Option<Duration>,
    hedge: Option<(HedgeDelay, u32)>,
    classify: C,
    pushback: P,
    replay: Option<Arc<ReplayFn<Req>>>,
    idempotent: Arc<IdempotentFn<Req>>,
    events: Option<EventSink>,
    recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
    default_rtt: Duration,
    decay: Duration,
    require_uris: bool,
}

impl<Req, C: fmt::Debug, P: fmt::Debug> fmt::Debug for UpstreamBuilder<Req, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBuilder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .field("hedge", &self.hedge)
            .field("classify", &self.classify)
            .field("pushback", &self.pushback)
            .field("replays", &self.replay.is_some())
            .finish_non_exhaustive()
    }
}

impl<Req> UpstreamBuilder<Req> {
    pub(crate) fn new(name: Arc<str>) -> Self {
        UpstreamBuilder {
            name,
            policy: OutlierPolicy::default(),
            max_attempts: 3,
            budget: (Duration::from_secs(10), 10, 0.2),
            timeout: None,
            hedge: None,
            classify: ErrorsAsFailures,
            pushback: NoPushback,
            replay: None,
            idempotent: Arc::new(|_| true),
            events: None,
            recorder: None,
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            require_uris: false,
        }
    }
}

impl<Req, C, P> UpstreamBuilder<Req, C, P> {
    /// The outlier rules (default: [`OutlierPolicy::default`]).
    pub fn outlier(mut self, policy: OutlierPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Attempts per request, the first included (default 3; 1: no
    /// retries). A retry goes to an endpoint not tried yet when there is
    /// one. Retries and hedges need a copy of the request:
    /// [`clone_requests`](Self::clone_requests) or
    /// [`replay_with`](Self::replay_with).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The retry budget shared by retries and hedges: `ratio` of the
    /// requests (over `ttl`) plus `min_per_second` (tower's `TpsBudget`;
    /// default 20%, 10 per second, over 10 s).
    pub fn budget(mut self, ttl: Duration, min_per_second: u32, ratio: f32) -> Self {
        self.budget = (ttl, min_per_second, ratio);
        self
    }

    /// The time each attempt may take; one that takes longer is a failure
    /// of its endpoint (tower's `Elapsed`) and may be retried elsewhere.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Hedging: for an idempotent request with no answer after `delay`, one
    /// more attempt to another endpoint, up to `max_hedges`; the first
    /// good answer wins and the others are dropped (cancelled). Each hedge
    /// takes a token of the retry budget.
    pub fn hedge(mut self, delay: HedgeDelay, max_hedges: u32) -> Self {
        self.hedge = (max_hedges > 0).then_some((delay, max_hedges));
        self
    }

    /// Where ejections and returns are published (they are traced in any
    /// case).
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = Some(events);
        self
    }

    /// The recorder the endpoint metrics go to (default: the global one).
    pub fn recorder(mut self, recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The latency an endpoint is assumed to have before it answered once
    /// (default 30 ms), and how fast peak-EWMA forgets (default 10 s).
    pub fn load_estimate(mut self, default_rtt: Duration, decay: Duration) -> Self {
        self.default_rtt = default_rtt;
        self.decay = decay;
        self
    }

    /// Requests are copied with `Clone` for retries and hedges.
    pub fn clone_requests(mut self) -> Self
    where
        Req: Clone + 'static,
    {
        self.replay = Some(Arc::new(|request: &Req| Some(request.clone())));
        self
    }

    /// Requests are copied by `replay` for retries and hedges; a request
    /// it returns `None` for is sent once. Without it (or
    /// [`clone_requests`](Self::clone_requests)) nothing is retried nor
    /// hedged.
    pub fn replay_with(
        mut self,
        replay: impl Fn(&Req) -> Option<Req> + Send + Sync + 'static,
    ) -> Self {
        self.replay = Some(Arc::new(replay));
        self
    }

    /// Which requests may be sent twice: hedged, or retried after a
    /// failure that may have reached the server (default: every request).
    /// A request that surely never left (connection refused, no endpoint)
    /// is retried whatever this says.
    pub fn idempotent(mut self, rule: impl Fn(&Req) -> bool + Send + Sync + 'static) -> Self {
        self.idempotent = Arc::new(rule);
        self
    }

    /// What counts as a failure of an endpoint (default: every `Err`);
    /// core's `HttpServerErrors` or `GrpcErrors` for HTTP or gRPC.
    pub fn classify<C2>(self, classify: C2) -> UpstreamBuilder<Req, C2, P> {
        UpstreamBuilder {
            classify,
            name: self.name,
            policy: self.policy,
            max_attempts: self.max_attempts,
            budget: self.budget,
            timeout: self.timeout,
            hedge: self.hedge,
            pushback: self.pushback,
            replay: self.replay,
            idempotent: self.idempotent,
            events: self.events,
            recorder: self.recorder,
            default_rtt: self.default_rtt,
            decay: self.decay,
            require_uris: self.require_uris,
        }
    }

    /// How pushback is read from a response (default: none;
    /// [`HttpPushback`](crate::HttpPushback) for HTTP and gRPC).
    pub fn pushback<P2>(self, pushback: P2) -> UpstreamBuilder<Req, C, P2> {
        UpstreamBuilder {
            pushback,
            name: self.name,
            policy: self.policy,
            max_attempts: self.max_attempts,
            budget: self.budget,
            timeout: self.timeout,
            hedge: self.hedge,
            classify: self.classify,
            replay: self.replay,
            idempotent: self.idempotent,
            events: self.events,
            recorder: self.recorder,
            default_rtt: self.default_rtt,
            decay: self.decay,
            require_uris: self.require_uris,
        }
    }

    /// Endpoints the handle adds at run time
    /// ([`set_endpoints`](crate::UpstreamHandle::set_endpoints),
    /// [`insert`](crate::UpstreamHandle::insert)) must be URIs with a
    /// scheme and an authority (`http://10.0.0.2:7001`): any other is
    /// refused with [`InvalidEndpoint`](crate::InvalidEndpoint) before the
    /// endpoint function sees it. Off by default (an endpoint's name may
    /// be any key).
    pub fn require_uris(mut self) -> Self {
        self.require_uris = true;
        self
    }

    /// The classifier set by [`classify`](Self::classify), for layers
    /// above the upstream that should count failures alike.
    pub fn classifier(&self) -> &C {
        &self.classify
    }

    /// The upstream over `uris`, each endpoint's service made by `make`
    /// (which the handle's `set_endpoints` and `insert` use too).
    pub fn build<S, U>(
        self,
        uris: impl IntoIterator<Item = U>,
        make: impl Fn(&str) -> S + Send + Sync + 'static,
    ) -> Upstream<S, Req, C, P>
    where
        U: Into<Arc<str>>,
    {
        let endpoints = uris
            .into_iter()
            .map(|uri| {
                let uri: Arc<str> = uri.into();
                let service = make(&uri);
                (uri, service)
            })
            .collect();
        self.finish(endpoints, Some(Arc::new(make)))
    }

    /// The upstream over services given with their URIs (for a
    /// [`Discover`](tower::discover::Discover) source; the handle then
    /// takes services, not URIs).
    pub fn build_with_services<S, U>(
        self,
        endpoints: impl IntoIterator<Item = (U, S)>,
    ) -> Upstream<S, Req, C, P>
    where
        U: Into<Arc<str>>,
    {
        let endpoints = endpoints
            .into_iter()
            .map(|(uri, service)| (uri.into(), service))
            .collect();
        self.finish(endpoints, None)
    }

    fn finish<S>(
        self,
        endpoints: Vec<(Arc<str>, S)>,
        make: Option<Arc<crate::shared::MakeEndpoint<S>>>,
    ) -> Upstream<S, Req, C, P> {
        let (ttl, min_per_second, ratio) = self.budget;
        let parts = SharedParts {
            name: self.name,
            policy: self.policy,
            events: self.events,
            recorder: self.recorder,
            make,
            budget: TpsBudget::new(
                ttl.clamp(Duration::from_secs(1), Duration::from_secs(60)),
                min_per_second.min(i32::MAX as u32 - 1),
                if ratio.is_nan() {
                    0.0
                } else {
                    ratio.clamp(0.0, 1000.0)
                },
            ),
            default_rtt: self.default_rtt,
            decay: self.decay,
            require_uris: self.require_uris,
        };
        let shared = Arc::new(Shared::new(parts, endpoints));
        let rules = Arc::new(Rules {
            classify: self.classify,
            pushback: self.pushback,
            replay: self.replay,
            idempotent: self.idempotent,
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            hedge: self.hedge,
        });
        Upstream::from_parts(shared, rules)
    }
}
