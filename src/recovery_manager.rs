//! The recovery manager's job for one service: hold its breaker open, run
//! `shutdown` then `initialize` with exponential backoff up to
//! `max_recovery_attempts`, then let the breaker probe (half-open).
//!
//! One job per service at a time (the monitor sees to it); `shutdown()`
//! aborts jobs in progress.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_hardening_core::{CircuitState, EventSink, RecoveryStep};

use crate::breaker::{BreakerHandle, BreakerSnapshot};
use crate::managed::ManagedService;
use crate::monitor::{call_with_timeout, record_attempt, recovery_event};

/// Who owns a breaker's state now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Its own rules (closed, open, half-open as calls decide).
    Breaker,
    /// The recovery manager, holding it forced open for a rebuild.
    Recovery,
    /// A person: anything the recovery manager did not set (through the
    /// handle, or straight on the breaker), and configuration's
    /// `disabled`. Automation never changes it.
    Operator,
}

/// Who set one service's breaker state, so that automation only ever
/// undoes what automation did. Each side's mark is the breaker's
/// generation just after that side moved it: every change of state, a
/// manual one to the same state included, starts a new generation, so
/// once anyone else moved the breaker the mark no longer matches. Every
/// move by automation is a compare-and-set on the generation it read
/// ([`BreakerHandle::transition_if`]): a person's change made in between
/// is never overwritten.
#[derive(Debug, Default)]
pub(crate) struct Steering {
    marks: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    recovery: Option<u64>,
    operator: Option<u64>,
}

impl Steering {
    fn owner(marks: &Marks, now: &BreakerSnapshot) -> Owner {
        if now.state == CircuitState::ForcedOpen && marks.recovery == Some(now.generation) {
            return Owner::Recovery;
        }
        if marks.operator == Some(now.generation) {
            return Owner::Operator;
        }
        match now.state {
            CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly => {
                Owner::Operator
            }
            _ => Owner::Breaker,
        }
    }

    /// A person sets `state`: it stands until a person changes it.
    pub(crate) fn operator_sets(&self, breaker: &BreakerHandle, state: CircuitState) {
        let mut marks = tower_hardening_core::sync::lock(&self.marks);
        let to = match state {
            CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly => state,
            _ => CircuitState::Closed,
        };
        // The person wins whatever the breaker did meanwhile: retry on
        // the generation just read until the move lands, so the mark is
        // exactly the person's.
        let generation = loop {
            if let Some(generation) = breaker.transition_if(breaker.snapshot().generation, to) {
                break generation;
            }
        };
        marks.recovery = None;
        marks.operator = Some(generation);
    }

    /// Holds `breaker` forced open for a rebuild, unless a person owns its
    /// state. Whether the recovery holds it.
    pub(crate) fn hold(&self, breaker: &BreakerHandle) -> bool {
        let mut marks = tower_hardening_core::sync::lock(&self.marks);
        loop {
            let now = breaker.snapshot();
            match Self::owner(&marks, &now) {
                Owner::Operator => return false,
                Owner::Recovery => return true,
                Owner::Breaker => {
                    // Only from what was just read: a person's change in
                    // between makes this fail, and is looked at again.
                    if let Some(generation) =
                        breaker.transition_if(now.generation, CircuitState::ForcedOpen)
                    {
                        marks.operator = None;
                        marks.recovery = Some(generation);
                        return true;
                    }
                }
            }
        }
    }

    /// Hands `breaker` to its probes (half-open) if the recovery still
    /// holds it; whatever a person set meanwhile stays.
    pub(crate) fn release(&self, breaker: &BreakerHandle) {
        let mut marks = tower_hardening_core::sync::lock(&self.marks);
        if let Some(held) = marks.recovery.take() {
            // Fails, changing nothing, if anyone moved it since the hold.
            let _ = breaker.transition_if(held, CircuitState::HalfOpen);
        }
    }
}

/// What a job tells the monitor.
#[derive(Debug)]
pub(crate) enum RecoveryUpdate {
    Attempt {
        service: Arc<str>,
        attempt: u32,
    },
    Succeeded {
        service: Arc<str>,
        attempt: u32,
    },
    GaveUp {
        service: Arc<str>,
        attempts: u32,
        error: Arc<str>,
    },
}

impl RecoveryUpdate {
    pub(crate) fn service(&self) -> &Arc<str> {
        match self {
            RecoveryUpdate::Attempt { service, .. }
            | RecoveryUpdate::Succeeded { service, .. }
            | RecoveryUpdate::GaveUp { service, .. } => service,
        }
    }
}

pub(crate) struct Job {
    pub(crate) name: Arc<str>,
    pub(crate) managed: Arc<dyn ManagedService>,
    pub(crate) breaker: Option<BreakerHandle>,
    pub(crate) steering: Arc<Steering>,
    /// Attempts already made in this incident.
    pub(crate) first_attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) timeout: Duration,
    pub(crate) events: EventSink,
    pub(crate) updates: mpsc::UnboundedSender<RecoveryUpdate>,
    pub(crate) recorder: Arc<dyn metrics::Recorder + Send + Sync>,
}

/// The wait before attempt `attempt` (from 1): none before the first, then
/// `backoff` doubled for each attempt after the second, capped.
fn wait_before(job: &Job, attempt: u32) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let doublings = (attempt - 2).min(31);
    job.backoff
        .checked_mul(1 << doublings)
        .unwrap_or(job.max_backoff)
        .min(job.max_backoff)
}

pub(crate) async fn run(mut job: Job) {
    // A breaker a person (or configuration) set stays as it is: the
    // service is rebuilt all the same, and its breaker left alone.
    if job
        .breaker
        .as_ref()
        .is_some_and(|breaker| !job.steering.hold(breaker))
    {
        job.breaker = None;
    }
    let mut last_error: Arc<str> = Arc::from(
        "the service was rebuilt, but its breaker's probes failed after the last attempt",
    );
    for attempt in job.first_attempt + 1..=job.max_attempts {
        tokio::time::sleep(wait_before(&job, attempt)).await;
        let _ = job.updates.send(RecoveryUpdate::Attempt {
            service: job.name.clone(),
            attempt,
        });
        recovery_event(&job.events, &job.name, attempt, RecoveryStep::Started);
        let started = Instant::now();
        // A failing shutdown does not stop the rebuild: the point is to
        // come back up, and initialize says whether it did.
        let _ = call_with_timeout(job.timeout, job.managed.shutdown(), "shutdown").await;
        let result = call_with_timeout(job.timeout, job.managed.initialize(), "initialize").await;
        record_attempt(&*job.recorder, &job.name, result.is_ok(), started.elapsed());
        match result {
            Ok(()) => {
                recovery_event(&job.events, &job.name, attempt, RecoveryStep::Succeeded);
                if let Some(breaker) = &job.breaker {
                    job.steering.release(breaker);
                }
                let _ = job.updates.send(RecoveryUpdate::Succeeded {
                    service: job.name.clone(),
                    attempt,
                });
                return;
            }
            Err(error) => {
                let retry_in = (attempt < job.max_attempts).then(|| wait_before(&job, attempt + 1));
                recovery_event(
                    &job.events,
                    &job.name,
                    attempt,
                    RecoveryStep::Failed {
                        error: error.clone(),
                        retry_in,
                    },
                );
                last_error = error;
            }
        }
    }
    recovery_event(
        &job.events,
        &job.name,
        job.max_attempts,
        RecoveryStep::GaveUp,
    );
    let _ = job.updates.send(RecoveryUpdate::GaveUp {
        service: job.name.clone(),
        attempts: job.max_attempts,
        error: last_error,
    });
}
