//! State every clone of a retry layer shares: the budget and the counters.
//!
//! ```
//! use tower_hardening_recovery::RetryLayer;
//!
//! let retry = RetryLayer::builder().name("model-inference").build().unwrap();
//! let handle = retry.handle();
//! assert_eq!(handle.name(), "model-inference");
//! assert_eq!(handle.stats().retries, 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower_hardening_core::{Event, EventKind, EventSink, names};

use super::budget::StripedBudget;
use crate::backoff::{Backoff, Jitter};

#[derive(Debug)]
pub(crate) struct RetryShared {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    /// The budget (unlimited when none is set), which also counts first
    /// attempts, on striped lines.
    budget: StripedBudget,
    events: Option<EventSink>,
    retries: AtomicU64,
    /// Registered once, with the recorder in force when the layer is built.
    retries_counter: metrics::Counter,
    budget_exhausted_counter: metrics::Counter,
    gave_up_counter: metrics::Counter,
    budget_exhausted: AtomicU64,
    gave_up: AtomicU64,
    created: std::time::Instant,
    /// The second (since `created`, plus one) of the last `RetryExhausted`.
    last_exhausted_event: [AtomicU64; 2],
}

impl RetryShared {
    pub(crate) fn new(
        name: Arc<str>,
        max_attempts: u32,
        backoff: Backoff,
        jitter: Jitter,
        budget: Option<StripedBudget>,
        events: Option<EventSink>,
    ) -> Self {
        RetryShared {
            name: name.clone(),
            max_attempts,
            backoff,
            jitter,
            budget: budget.unwrap_or_else(StripedBudget::unlimited),
            events,
            retries: AtomicU64::new(0),
            retries_counter: metrics::counter!(names::RETRIES_TOTAL, names::LABEL_SERVICE => name.clone()),
            budget_exhausted_counter: metrics::counter!(names::RETRY_BUDGET_EXHAUSTED_TOTAL, names::LABEL_SERVICE => name.clone()),
            gave_up_counter: metrics::counter!(names::RETRY_GAVE_UP_TOTAL, names::LABEL_SERVICE => name),
            budget_exhausted: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            created: std::time::Instant::now(),
            last_exhausted_event: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// A first attempt is being made (on the thread numbered `thread`):
    /// it is counted, and earns the budget its share.
    #[inline]
    pub(crate) fn deposit(&self, thread: usize) {
        self.budget.deposit(thread);
    }

    /// Takes a retry from the budget; counts and reports when it is empty.
    pub(crate) fn withdraw(&self, attempts: u32) -> bool {
        let allowed = self.budget.withdraw();
        if allowed {
            self.retries.fetch_add(1, Ordering::Relaxed);
            self.retries_counter.increment(1);
        } else {
            self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            self.budget_exhausted_counter.increment(1);
            self.exhausted(attempts, true);
        }
        allowed
    }

    pub(crate) fn gave_up(&self, attempts: u32) {
        self.gave_up.fetch_add(1, Ordering::Relaxed);
        self.gave_up_counter.increment(1);
        self.exhausted(attempts, false);
    }

    /// Publishes at most one `RetryExhausted` a second: under an outage
    /// every request exhausts its retries, and one event (one log line)
    /// a second says as much as thousands; the counters carry the totals.
    fn exhausted(&self, attempts: u32, budget_exhausted: bool) {
        // One gate per kind: a flood of one never hides the other.
        let gate = &self.last_exhausted_event[usize::from(budget_exhausted)];
        let second = self.created.elapsed().as_secs() + 1;
        let last = gate.load(Ordering::Relaxed);
        if second <= last
            || gate
                .compare_exchange(last, second, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tower_hardening_core::publish(self.events.as_ref(), || {
            Event::new(
                self.name.clone(),
                EventKind::RetryExhausted {
                    attempts,
                    budget_exhausted,
                },
            )
        });
    }

    pub(crate) fn stats(&self) -> RetryStats {
        // `retries` read once: `attempts` is never below it.
        let retries = self.retries.load(Ordering::Relaxed);
        RetryStats {
            attempts: self.budget.first_attempts().saturating_add(retries),
            retries,
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            gave_up: self.gave_up.load(Ordering::Relaxed),
        }
    }
}

/// Reads a retry layer's counters. Cheap to clone; shared by every clone
/// of the layer and every service it made.
#[derive(Debug, Clone)]
pub struct RetryHandle {
    pub(crate) shared: Arc<RetryShared>,
}

impl RetryHandle {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The counters so far.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats()
    }

    /// The longest a request may spend waiting between its attempts,
    /// before jitter (the sum of the backoffs of every retry allowed),
    /// saturating at `Duration::MAX`.
    pub fn max_total_backoff(&self) -> Duration {
        self.shared
            .backoff
            .total(self.shared.max_attempts.saturating_sub(1))
    }
}

/// The counters of a retry layer, from [`RetryHandle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RetryStats {
    /// Attempts: first attempts started, plus retries decided (a request
    /// cancelled while it waits its backoff counts the retry it waited
    /// for). Counted as they start, so requests still running count, and
    /// so do the first attempts of requests that cannot be replayed (a
    /// body not kept, a predicate that refuses).
    pub attempts: u64,
    /// Retries made.
    pub retries: u64,
    /// Failures not retried because the budget was empty.
    pub budget_exhausted: u64,
    /// Requests that failed on their last allowed attempt.
    pub gave_up: u64,
}
