//! The recovery manager's job for one service: hold its breaker open, run
//! `shutdown` then `initialize` with exponential backoff up to
//! `max_recovery_attempts`, then let the breaker probe (half-open).
//!
//! One job per service at a time (the monitor sees to it); `shutdown()`
//! aborts jobs in progress.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_hardening_core::{CircuitState, EventSink, RecoveryStep};

use crate::breaker::BreakerHandle;
use crate::managed::ManagedService;
use crate::monitor::{call_with_timeout, record_attempt, recovery_event};

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
    // A breaker switched off (disabled, metrics-only) by configuration or
    // an operator stays as it was.
    if job.breaker.as_ref().is_some_and(|b| {
        matches!(
            b.state(),
            CircuitState::Disabled | CircuitState::MetricsOnly
        )
    }) {
        job.breaker = None;
    }
    if let Some(breaker) = &job.breaker {
        breaker.force_open();
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
                    breaker.half_open();
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
