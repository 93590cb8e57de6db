//! Rejections: errors a hardening layer returns instead of calling the inner
//! service. Retry never retries them; metrics counts them as `rejected`.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{CircuitState, Priority};

/// Which layer turned a request away, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A circuit breaker was open ([`CircuitOpen`]).
    CircuitOpen,
    /// Admission refused the request: full queue, shedding, or no capacity
    /// ([`Overloaded`]).
    Overloaded,
    /// The request waited in an admission queue longer than allowed
    /// ([`QueueTimeout`]).
    QueueTimeout,
    /// The inner service is being rebuilt ([`Recovering`]).
    Recovering,
    /// Every rebuild attempt of the inner service failed
    /// ([`RecoveryFailed`]).
    RecoveryFailed,
    /// The pool is shut down and grants nothing more ([`PoolClosed`]).
    PoolClosed,
    /// The request can never be granted: it asks for more than the pool
    /// has, or for a resource no one has ([`Unsatisfiable`]).
    Unsatisfiable,
    /// A rate limiter refused the request: its client (or the service as
    /// a whole) is over its quota ([`RateLimited`]).
    RateLimited,
    /// No endpoint of an upstream may be called now: every one is asking
    /// callers to stay away, or there is none ([`NoHealthyEndpoint`]).
    NoHealthyEndpoint,
}

impl RejectionKind {
    /// The kind's name in snake case, as used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::CircuitOpen => "circuit_open",
            RejectionKind::Overloaded => "overloaded",
            RejectionKind::QueueTimeout => "queue_timeout",
            RejectionKind::Recovering => "recovering",
            RejectionKind::RecoveryFailed => "recovery_failed",
            RejectionKind::PoolClosed => "pool_closed",
            RejectionKind::Unsatisfiable => "unsatisfiable",
            RejectionKind::RateLimited => "rate_limited",
            RejectionKind::NoHealthyEndpoint => "no_healthy_endpoint",
        }
    }
}

/// What [`rejection_of`] found: the kind, and when it makes sense to try
/// again (for an HTTP `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Which rejection it was.
    pub kind: RejectionKind,
    /// How long until trying again has a chance, if the layer knows.
    pub retry_after: Option<Duration>,
}

/// Whether `error`, or any error in its `source()` chain, is one of the
/// rejections in this crate.
///
/// The chain is walked because other middleware (tower's `Buffer`, for
/// one) wraps the errors of the service it drives.
///
/// ```
/// use tower_hardening_core::{rejection_of, BoxError, Overloaded, RejectionKind};
///
/// let err: BoxError = Overloaded::new("audio-processing").into();
/// assert_eq!(rejection_of(&*err).map(|r| r.kind), Some(RejectionKind::Overloaded));
///
/// let other: BoxError = "connection reset".into();
/// assert!(rejection_of(&*other).is_none());
/// ```
pub fn rejection_of(error: &(dyn Error + 'static)) -> Option<Rejection> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(found) = rejection_here(err) {
            return Some(found);
        }
        current = err.source();
    }
    None
}

fn rejection_here(err: &(dyn Error + 'static)) -> Option<Rejection> {
    let found = |kind, retry_after| Some(Rejection { kind, retry_after });
    if let Some(e) = err.downcast_ref::<CircuitOpen>() {
        return found(RejectionKind::CircuitOpen, e.retry_after());
    }
    if let Some(e) = err.downcast_ref::<Overloaded>() {
        return found(RejectionKind::Overloaded, e.retry_after());
    }
    if let Some(e) = err.downcast_ref::<QueueTimeout>() {
        return found(RejectionKind::QueueTimeout, e.retry_after());
    }
    if let Some(e) = err.downcast_ref::<Recovering>() {
        return found(RejectionKind::Recovering, e.retry_after());
    }
    if let Some(e) = err.downcast_ref::<RateLimited>() {
        return found(RejectionKind::RateLimited, Some(e.retry_after()));
    }
    if err.is::<RecoveryFailed>() {
        return found(RejectionKind::RecoveryFailed, None);
    }
    if err.is::<PoolClosed>() {
        return found(RejectionKind::PoolClosed, None);
    }
    if err.is::<Unsatisfiable>() {
        return found(RejectionKind::Unsatisfiable, None);
    }
    if let Some(e) = err.downcast_ref::<NoHealthyEndpoint>() {
        return found(RejectionKind::NoHealthyEndpoint, e.retry_after());
    }
    None
}

/// A circuit breaker is open (or forced open, or out of half-open probe
/// slots) and did not call the inner service.
///
/// ```
/// use tower_hardening_core::{CircuitOpen, CircuitState};
/// use std::time::Duration;
///
/// let err = CircuitOpen::new("model-inference").with_retry_after(Duration::from_millis(1500));
/// assert_eq!(err.name(), "model-inference");
/// assert_eq!(err.to_string(), "circuit breaker `model-inference` is open; retry after 1.5s");
///
/// // Half-open with every probe out: the message names the real state.
/// let half_open = CircuitOpen::new("model-inference")
///     .in_state(CircuitState::HalfOpen)
///     .with_retry_after(Duration::from_secs(2));
/// assert_eq!(
///     half_open.to_string(),
///     "circuit breaker `model-inference` is half-open (every probe is out); retry after 2s"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
    state: CircuitState,
}

impl CircuitOpen {
    /// A rejection by the breaker called `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        CircuitOpen {
            name: name.into(),
            retry_after: None,
            state: CircuitState::Open,
        }
    }

    /// Names the state that refused the call: `Open` (the default),
    /// `HalfOpen` (every probe permit taken) or `ForcedOpen`.
    pub fn in_state(mut self, state: CircuitState) -> Self {
        self.state = state;
        self
    }

    /// The state that refused the call.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Suggests when to try again: when the breaker will let a probe
    /// through. A zero duration is no hint and is ignored.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = (!retry_after.is_zero()).then_some(retry_after);
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until trying again has a chance: until the breaker lets a
    /// probe through, or (half-open, every probe out) until the probes in
    /// flight are decided.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            CircuitState::HalfOpen => "half-open (every probe is out)",
            CircuitState::ForcedOpen => "forced open",
            _ => "open",
        };
        write!(f, "circuit breaker `{}` is {state}", self.name)?;
        if let Some(after) = self.retry_after {
            write!(f, "; retry after {}", DisplayDuration(after))?;
        }
        Ok(())
    }
}

impl Error for CircuitOpen {}

/// Formats a retry hint for people: whole milliseconds at most (a hint of
/// "1.234567891s" says nothing more than "1.235s").
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_nanos().div_ceil(1_000_000);
        let rounded = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        write!(f, "{rounded:?}")
    }
}

/// Admission control refused a request: its queue was full, it is shedding
/// work of this priority, or the request can never fit.
///
/// ```
/// use tower_hardening_core::{Overloaded, Priority};
///
/// let err = Overloaded::new("cpu").with_priority(Priority::LOW).with_reason("shedding below high");
/// assert_eq!(err.to_string(), "`cpu` is overloaded (priority low): shedding below high");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    name: Arc<str>,
    priority: Option<Priority>,
    reason: Option<Arc<str>>,
    retry_after: Option<Duration>,
    client_share_exceeded: bool,
}

impl Overloaded {
    /// A refusal by the pool or service called `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Overloaded {
            name: name.into(),
            priority: None,
            reason: None,
            retry_after: None,
            client_share_exceeded: false,
        }
    }

    /// Records the priority of the refused request.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Records why it was refused ("queue full", "shedding below high").
    pub fn with_reason(mut self, reason: impl Into<Arc<str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Suggests when to try again. A zero duration is no hint and is
    /// ignored.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = (!retry_after.is_zero()).then_some(retry_after);
        self
    }

    /// Marks the refusal as the caller's own doing (it exceeded its share),
    /// which HTTP maps to 429 rather than 503.
    pub fn client_share_exceeded(mut self) -> Self {
        self.client_share_exceeded = true;
        self
    }

    /// The pool or service that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The refused request's priority, if known.
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// Why it was refused, if known.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// When to try again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the caller exceeded its own share (429) rather than the
    /// service being overloaded (503).
    pub fn is_client_share_exceeded(&self) -> bool {
        self.client_share_exceeded
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is overloaded", self.name)?;
        if let Some(priority) = self.priority {
            write!(f, " (priority {priority})")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

impl Error for Overloaded {}

/// A request waited in an admission queue for longer than the queue
/// timeout and was given up on without calling the inner service.
///
/// ```
/// use tower_hardening_core::QueueTimeout;
/// use std::time::Duration;
///
/// let err = QueueTimeout::new("memory", Duration::from_secs(5));
/// assert_eq!(err.to_string(), "timed out after 5s waiting for `memory`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTimeout {
    name: Arc<str>,
    waited: Duration,
    retry_after: Option<Duration>,
}

impl QueueTimeout {
    /// A queue timeout in the pool or service called `name` after `waited`.
    pub fn new(name: impl Into<Arc<str>>, waited: Duration) -> Self {
        QueueTimeout {
            name: name.into(),
            waited,
            retry_after: None,
        }
    }

    /// Suggests when to try again. A zero duration is no hint and is
    /// ignored.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = (!retry_after.is_zero()).then_some(retry_after);
        self
    }

    /// The pool or service whose queue timed out.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the request waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// When to try again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for QueueTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for `{}`",
            self.waited, self.name
        )
    }
}

impl Error for QueueTimeout {}

/// The inner service is being rebuilt after a failure; calls fail fast
/// until it is back.
///
/// ```
/// use tower_hardening_core::Recovering;
///
/// let err = Recovering::new("audio-processing", 2);
/// assert_eq!(err.to_string(), "`audio-processing` is recovering (rebuild attempt 2)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovering {
    name: Arc<str>,
    attempt: u32,
    retry_after: Option<Duration>,
}

impl Recovering {
    /// The service called `name` is on rebuild attempt `attempt` (from 1).
    pub fn new(name: impl Into<Arc<str>>, attempt: u32) -> Self {
        Recovering {
            name: name.into(),
            attempt,
            retry_after: None,
        }
    }

    /// Suggests when to try again (the next rebuild attempt). A zero duration is no hint and is
    /// ignored.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = (!retry_after.is_zero()).then_some(retry_after);
        self
    }

    /// The recovering service.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rebuild attempt under way, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When to try again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Recovering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is recovering (rebuild attempt {})",
            self.name, self.attempt
        )
    }
}

impl Error for Recovering {}

/// Every rebuild attempt of a recovering service failed; calls fail with
/// this until recovery is triggered again.
///
/// ```
/// use tower_hardening_core::{rejection_of, BoxError, RecoveryFailed, RejectionKind};
///
/// let err: BoxError = RecoveryFailed::new("audio-processing", 3, "connection refused").into();
/// assert_eq!(rejection_of(&*err).map(|r| r.kind), Some(RejectionKind::RecoveryFailed));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryFailed {
    name: Arc<str>,
    attempts: u32,
    last_error: Arc<str>,
}

impl RecoveryFailed {
    /// The service `name` could not be rebuilt in `attempts` attempts; the
    /// last one failed with `last_error`.
    pub fn new(name: impl Into<Arc<str>>, attempts: u32, last_error: impl Into<Arc<str>>) -> Self {
        RecoveryFailed {
            name: name.into(),
            attempts,
            last_error: last_error.into(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many build attempts failed.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error, as text.
    pub fn last_error(&self) -> &str {
        &self.last_error
    }
}

impl fmt::Display for RecoveryFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` could not be rebuilt after {} attempts (last error: {}); trigger recovery to try again",
            self.name, self.attempts, self.last_error
        )
    }
}

impl Error for RecoveryFailed {}

/// A pool was shut down; nothing more is granted.
///
/// ```
/// use tower_hardening_core::PoolClosed;
///
/// assert_eq!(PoolClosed::new("cpu").to_string(), "pool `cpu` is shut down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolClosed {
    pool: Arc<str>,
}

impl PoolClosed {
    /// The pool called `pool` is shut down.
    pub fn new(pool: impl Into<Arc<str>>) -> Self {
        PoolClosed { pool: pool.into() }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }
}

impl fmt::Display for PoolClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool `{}` is shut down", self.pool)
    }
}

impl Error for PoolClosed {}

/// A request a pool can never grant: more units than it has, or no
/// resource matching its requirements. Returned at once, never queued.
///
/// ```
/// use tower_hardening_core::Unsatisfiable;
///
/// let err = Unsatisfiable::new("cpu", "asks for 9 units of 8");
/// assert_eq!(err.to_string(), "pool `cpu` can never grant this request: asks for 9 units of 8");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsatisfiable {
    pool: Arc<str>,
    reason: Arc<str>,
}

impl Unsatisfiable {
    /// The pool called `pool` cannot grant the request, for `reason`.
    pub fn new(pool: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        Unsatisfiable {
            pool: pool.into(),
            reason: reason.into(),
        }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Why the request can never be granted.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Unsatisfiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool `{}` can never grant this request: {}",
            self.pool, self.reason
        )
    }
}

impl Error for Unsatisfiable {}

/// A rate limiter refused the request: the caller (one key: a peer
/// address, an API key) or the service as a whole is over its quota. It
/// always says when the next request would conform.
///
/// ```
/// use tower_hardening_core::{rejection_of, BoxError, RateLimited, RatePolicy, RejectionKind};
/// use std::time::Duration;
///
/// let err = RateLimited::new("api", Duration::from_millis(250))
///     .with_policy(RatePolicy::new("default", 100, Duration::from_secs(1)));
/// assert_eq!(err.to_string(), "`api` is rate limited; retry after 250ms");
/// assert_eq!(err.policy().map(|p| p.quota()), Some(100));
///
/// let boxed: BoxError = err.into();
/// let found = rejection_of(&*boxed).unwrap();
/// assert_eq!(found.kind, RejectionKind::RateLimited);
/// assert_eq!(found.retry_after, Some(Duration::from_millis(250)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    name: Arc<str>,
    retry_after: Duration,
    policy: Option<RatePolicy>,
}

impl RateLimited {
    /// A refusal by the rate limiter of the service called `name`; the
    /// next request conforms after `retry_after` (a zero wait is raised
    /// to one millisecond: a refusal always says when to come back).
    pub fn new(name: impl Into<Arc<str>>, retry_after: Duration) -> Self {
        RateLimited {
            name: name.into(),
            retry_after: retry_after.max(Duration::from_millis(1)),
            policy: None,
        }
    }

    /// Names the quota that refused the request (for the
    /// `RateLimit-Policy` header field).
    pub fn with_policy(mut self, policy: RatePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The service whose limiter refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until a request would conform: the limiter's own wait.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The quota that refused, if the limiter named it.
    pub fn policy(&self) -> Option<&RatePolicy> {
        self.policy.as_ref()
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is rate limited; retry after {}",
            self.name,
            DisplayDuration(self.retry_after)
        )
    }
}

impl Error for RateLimited {}

/// A rate limit's quota as the IETF `RateLimit-Policy` header field names
/// it: `quota` requests per `window`, under a policy name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    name: &'static str,
    quota: u64,
    window: Duration,
}

impl RatePolicy {
    /// `quota` requests per `window`, called `name` (a token: letters,
    /// digits, `-`, `_`).
    pub fn new(name: &'static str, quota: u64, window: Duration) -> Self {
        RatePolicy {
            name,
            quota,
            window,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Requests allowed per window.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// An upstream had no endpoint to call: it has none, or every one asked
/// callers to stay away (a `Retry-After` or gRPC pushback not yet over).
/// An ejected endpoint does not cause it: with every endpoint ejected, an
/// upstream calls them all (Envoy's panic routing).
///
/// ```
/// use tower_hardening_core::{rejection_of, BoxError, NoHealthyEndpoint, RejectionKind};
/// use std::time::Duration;
///
/// let err = NoHealthyEndpoint::new("model-inference").with_retry_after(Duration::from_secs(2));
/// assert_eq!(
///     err.to_string(),
///     "upstream `model-inference` has no endpoint to call; retry after 2s"
/// );
/// let err: BoxError = err.into();
/// assert_eq!(rejection_of(&*err).map(|r| r.kind), Some(RejectionKind::NoHealthyEndpoint));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHealthyEndpoint {
    name: Arc<str>,
    retry_after: Option<Duration>,
}

impl NoHealthyEndpoint {
    /// The upstream called `name` had no endpoint to call.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        NoHealthyEndpoint {
            name: name.into(),
            retry_after: None,
        }
    }

    /// Suggests when to try again: when the first endpoint's pushback
    /// ends. A zero duration is no hint and is ignored.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = (!retry_after.is_zero()).then_some(retry_after);
        self
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When to try again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for NoHealthyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream `{}` has no endpoint to call", self.name)?;
        if let Some(after) = self.retry_after {
            write!(f, "; retry after {}", DisplayDuration(after))?;
        }
        Ok(())
    }
}

impl Error for NoHealthyEndpoint {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn finds_every_kind() {
        let cases: Vec<(BoxError, RejectionKind)> = vec![
            (CircuitOpen::new("a").into(), RejectionKind::CircuitOpen),
            (
                RecoveryFailed::new("a", 3, "refused").into(),
                RejectionKind::RecoveryFailed,
            ),
            (PoolClosed::new("a").into(), RejectionKind::PoolClosed),
            (
                Unsatisfiable::new("a", "too big").into(),
                RejectionKind::Unsatisfiable,
            ),
            (Overloaded::new("a").into(), RejectionKind::Overloaded),
            (
                QueueTimeout::new("a", Duration::ZERO).into(),
                RejectionKind::QueueTimeout,
            ),
            (Recovering::new("a", 1).into(), RejectionKind::Recovering),
            (
                RateLimited::new("a", Duration::from_millis(5)).into(),
                RejectionKind::RateLimited,
            ),
            (
                NoHealthyEndpoint::new("a").into(),
                RejectionKind::NoHealthyEndpoint,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(rejection_of(&*err).map(|r| r.kind), Some(kind));
        }
    }

    #[test]
    fn finds_a_wrapped_rejection() {
        let inner: BoxError = QueueTimeout::new("pool", Duration::from_secs(1))
            .with_retry_after(Duration::from_secs(2))
            .into();
        let outer: BoxError = Box::new(Wrapper(inner));
        let found = rejection_of(&*outer).expect("the source chain is walked");
        assert_eq!(found.kind, RejectionKind::QueueTimeout);
        assert_eq!(found.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn no_message_says_retry_after_zero() {
        let zero = CircuitOpen::new("a").with_retry_after(Duration::ZERO);
        assert_eq!(zero.retry_after(), None);
        assert!(!zero.to_string().contains("0ns"), "{zero}");
        let rounded = CircuitOpen::new("a").with_retry_after(Duration::from_nanos(1));
        assert_eq!(
            rounded.to_string(),
            "circuit breaker `a` is open; retry after 1ms"
        );
    }
}
