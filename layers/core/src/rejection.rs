//! Rejections: errors a hardening layer returns instead of calling the inner
//! service. Retry never retries them; metrics counts them as `rejected`.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Priority;

/// Which layer turned a request away, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl RejectionKind {
    /// The kind's name in snake case, as used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::CircuitOpen => "circuit_open",
            RejectionKind::Overloaded => "overloaded",
            RejectionKind::QueueTimeout => "queue_timeout",
            RejectionKind::Recovering => "recovering",
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
        if let Some(e) = err.downcast_ref::<CircuitOpen>() {
            return Some(Rejection {
                kind: RejectionKind::CircuitOpen,
                retry_after: Some(e.retry_after()),
            });
        }
        if let Some(e) = err.downcast_ref::<Overloaded>() {
            return Some(Rejection {
                kind: RejectionKind::Overloaded,
                retry_after: e.retry_after(),
            });
        }
        if let Some(e) = err.downcast_ref::<QueueTimeout>() {
            return Some(Rejection {
                kind: RejectionKind::QueueTimeout,
                retry_after: e.retry_after(),
            });
        }
        if let Some(e) = err.downcast_ref::<Recovering>() {
            return Some(Rejection {
                kind: RejectionKind::Recovering,
                retry_after: e.retry_after(),
            });
        }
        current = err.source();
    }
    None
}

/// A circuit breaker is open (or forced open, or out of half-open probe
/// slots) and did not call the inner service.
///
/// ```
/// use tower_hardening_core::CircuitOpen;
/// use std::time::Duration;
///
/// let err = CircuitOpen::new("model-inference", Duration::from_millis(1500));
/// assert_eq!(err.name(), "model-inference");
/// assert_eq!(err.to_string(), "circuit breaker `model-inference` is open; retry after 1.5s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Duration,
}

impl CircuitOpen {
    /// A rejection by the breaker called `name`, which expects to let a
    /// probe through after `retry_after`.
    pub fn new(name: impl Into<Arc<str>>, retry_after: Duration) -> Self {
        CircuitOpen {
            name: name.into(),
            retry_after,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker lets a probe through (zero when it is
    /// half-open and out of probe slots, or forced open with no end known).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker `{}` is open; retry after {:?}",
            self.name, self.retry_after
        )
    }
}

impl Error for CircuitOpen {}

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

    /// Suggests when to try again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
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

    /// Suggests when to try again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
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

    /// Suggests when to try again (the next rebuild attempt).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
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
            (
                CircuitOpen::new("a", Duration::ZERO).into(),
                RejectionKind::CircuitOpen,
            ),
            (Overloaded::new("a").into(), RejectionKind::Overloaded),
            (
                QueueTimeout::new("a", Duration::ZERO).into(),
                RejectionKind::QueueTimeout,
            ),
            (Recovering::new("a", 1).into(), RejectionKind::Recovering),
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
}
