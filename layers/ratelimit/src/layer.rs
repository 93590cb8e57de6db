use std::sync::Arc;

use governor::clock::DefaultClock;
use tower_hardening_core::{ConfigError, Priority};
use tower_layer::Layer;

use crate::handle::RateLimitHandle;
use crate::key::{AnyRequest, HttpKeys, IpNet, KeyMode, PeerAddrFn, peer_addr};
use crate::priority::{ExtensionPriority, FixedPriority};
use crate::rate::{RATE_FORMAT, Rate};
use crate::service::RateLimit;
use crate::state::{QuotaConfig, RateLimitState};

/// The longest a quota's burst may take to refill.
const MAX_REFILL: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// The default bound on keys tracked at once (per quota).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A rate limiter as a `tower::Layer`: made by [`RateLimitLayer::builder`],
/// shared by every clone (one quota state for all of them).
///
/// `K` finds each request's key ([`HttpKeys`] for HTTP requests,
/// [`AnyRequest`] for any other type: one global quota); `P` its priority.
#[derive(Debug, Clone)]
pub struct RateLimitLayer<K = HttpKeys, P = ExtensionPriority> {
    state: Option<Arc<RateLimitState>>,
    mode: KeyMode,
    keys: K,
    priority: P,
}

impl RateLimitLayer {
    /// A builder for the service called `name` (the name refusals carry).
    pub fn builder(name: impl Into<Arc<str>>) -> RateLimitBuilder {
        RateLimitBuilder {
            name: name.into(),
            rate: None,
            burst: None,
            key: KeyMode::Global,
            max_keys: DEFAULT_MAX_KEYS,
            per_priority: Vec::new(),
            trusted_proxies: Vec::new(),
            peer: peer_addr,
        }
    }

    /// A limiter that limits nothing: every call passes, at the cost of a
    /// branch.
    pub fn disabled() -> Self {
        RateLimitLayer {
            state: None,
            mode: KeyMode::Global,
            keys: HttpKeys::new(KeyMode::Global, Arc::from([]), peer_addr),
            priority: ExtensionPriority(Priority::NORMAL),
        }
    }
}

impl<K, P> RateLimitLayer<K, P> {
    /// The limiter's figures and upkeep; `None` when it is switched off.
    pub fn handle(&self) -> Option<RateLimitHandle> {
        self.state.clone().map(|state| RateLimitHandle { state })
    }

    /// The key mode requests are counted by.
    pub fn key_mode(&self) -> &KeyMode {
        &self.mode
    }

    /// The same limiter for requests of any type, each counted against the
    /// one global quota at `priority`. Refused when the limiter is keyed:
    /// a peer address or a header needs an HTTP request.
    pub fn any_request(
        self,
        priority: Priority,
    ) -> Result<RateLimitLayer<AnyRequest, FixedPriority>, ConfigError> {
        if self.state.is_some() && self.mode.is_keyed() {
            return Err(ConfigError::new(
                "rate_limit",
                "key",
                self.mode.to_string(),
                "\"global\" for requests that are not HTTP (a peer address or a header needs an HTTP stack)",
            ));
        }
        Ok(RateLimitLayer {
            state: self.state,
            mode: self.mode,
            keys: AnyRequest,
            priority: FixedPriority(priority),
        })
    }

    /// Reads each request's priority with `priority` (default: a
    /// [`Priority`] in an HTTP request's extensions, else NORMAL).
    pub fn priority<P2>(self, priority: P2) -> RateLimitLayer<K, P2> {
        RateLimitLayer {
            state: self.state,
            mode: self.mode,
            keys: self.keys,
            priority,
        }
    }
}

impl<S, K: Clone, P: Clone> Layer<S> for RateLimitLayer<K, P> {
    type Service = RateLimit<S, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            self.state.clone(),
            self.keys.clone(),
            self.priority.clone(),
        )
    }
}

/// Builds a [`RateLimitLayer`].
///
/// ```
/// use tower_hardening_core::Priority;
/// use tower_hardening_ratelimit::{KeyMode, Rate, RateLimitLayer};
///
/// let layer = RateLimitLayer::builder("api")
///     .rate(Rate::per_second(100))
///     .burst(20)
///     .key(KeyMode::PeerIp)
///     .max_keys(100_000)
///     .priority_rate(Priority::HIGH, Rate::per_second(1000), 100)
///     .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
///     .build()
///     .unwrap();
/// # let _ = layer;
/// let err = RateLimitLayer::builder("api").rate(Rate::per_second(0)).build().unwrap_err();
/// assert_eq!(err.field(), "rate");
/// // A burst that would take longer than ten years to refill.
/// let err = RateLimitLayer::builder("api").rate(Rate::per_hour(1)).burst(u32::MAX).build().unwrap_err();
/// assert_eq!(err.field(), "burst");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RateLimitBuilder {
    name: Arc<str>,
    rate: Option<Rate>,
    burst: Option<u32>,
    key: KeyMode,
    max_keys: usize,
    per_priority: Vec<(Priority, Rate, Option<u32>)>,
    trusted_proxies: Vec<IpNet>,
    peer: PeerAddrFn,
}

impl RateLimitBuilder {
    /// The quota: so many requests per second, minute or hour (required).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// How many requests may come at once after a quiet spell (default:
    /// the rate's count). At least 1.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// What requests are counted against (default [`KeyMode::Global`]).
    pub fn key(mut self, key: KeyMode) -> Self {
        self.key = key;
        self
    }

    /// The most keys tracked at once per quota (default 100 000); while
    /// full, new keys share one overflow bucket (see the crate docs).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// A quota of its own for requests of `priority` (its own buckets,
    /// apart from the others'). CRITICAL (and above) is never limited
    /// unless given a quota here.
    pub fn priority_rate(mut self, priority: Priority, rate: Rate, burst: u32) -> Self {
        let priority = priority.min(Priority::CRITICAL);
        self.per_priority.retain(|(p, _, _)| *p != priority);
        self.per_priority.push((priority, rate, Some(burst)));
        self
    }

    /// Proxies whose `X-Forwarded-For` is believed (with
    /// [`KeyMode::PeerIp`]): when the peer is one of them, the client is
    /// the rightmost entry that is not. Without any, the header is never
    /// read: a client must not choose its own key.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// How the peer address is found in a request's extensions (default
    /// [`peer_addr`]: a `SocketAddr`, axum's `ConnectInfo`, tonic's
    /// `TcpConnectInfo` with the features `axum`, `tonic`).
    pub fn peer_addr(mut self, peer: PeerAddrFn) -> Self {
        self.peer = peer;
        self
    }

    /// Checks the settings and makes the limiter.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        let rate = self
            .rate
            .ok_or_else(|| ConfigError::new("rate_limit", "rate", "none", RATE_FORMAT))?;
        let quota = |(rate_field, burst_field): (&'static str, &'static str),
                     rate: Rate,
                     burst: Option<u32>| {
            rate.interval().map_err(|_| {
                ConfigError::new("rate_limit", rate_field, rate.to_string(), RATE_FORMAT)
            })?;
            let burst = burst.unwrap_or(rate.count());
            // GCRA keeps time in u64 nanoseconds: a burst whose refill
            // takes longer than ten years would overflow its clock.
            let refill = rate
                .interval()
                .ok()
                .and_then(|interval| interval.checked_mul(burst))
                .filter(|refill| *refill <= MAX_REFILL);
            if burst == 0 || refill.is_none() {
                return Err(ConfigError::new(
                    "rate_limit",
                    burst_field,
                    burst,
                    "a burst of at least 1 that the rate refills within ten years",
                ));
            }
            Ok(QuotaConfig { rate, burst })
        };
        let base = quota(("rate", "burst"), rate, self.burst)?;
        let per_priority = self
            .per_priority
            .iter()
            .map(|(priority, rate, burst)| {
                let fields = match *priority {
                    Priority::LOW => ("priorities.low.rate", "priorities.low.burst"),
                    Priority::NORMAL => ("priorities.normal.rate", "priorities.normal.burst"),
                    Priority::HIGH => ("priorities.high.rate", "priorities.high.burst"),
                    _ => ("priorities.critical.rate", "priorities.critical.burst"),
                };
                Ok((*priority, quota(fields, *rate, *burst)?))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if self.key.is_keyed() && self.max_keys == 0 {
            return Err(ConfigError::new(
                "rate_limit",
                "max_keys",
                self.max_keys,
                "at least 1 (new keys beyond it share one bucket)",
            ));
        }
        // Trusting every address is believing every client's own
        // `X-Forwarded-For`: the client would choose its key.
        if let Some(everyone) = self.trusted_proxies.iter().find(|net| net.is_everything()) {
            return Err(ConfigError::new(
                "rate_limit",
                "trusted_proxies",
                everyone.to_string(),
                "the addresses or networks of your proxies (\"10.0.0.0/8\"), not every address (a client would choose its own key)",
            ));
        }
        let keyed = self.key.is_keyed().then_some(self.max_keys);
        let state = RateLimitState::new(
            self.name.clone(),
            base,
            &per_priority,
            keyed,
            DefaultClock::default(),
        )
        .ok_or_else(|| ConfigError::new("rate_limit", "rate", rate.to_string(), RATE_FORMAT))?;
        Ok(RateLimitLayer {
            state: Some(Arc::new(state)),
            keys: HttpKeys::new(self.key.clone(), self.trusted_proxies.into(), self.peer),
            mode: self.key,
            priority: ExtensionPriority(Priority::NORMAL),
        })
    }
}
