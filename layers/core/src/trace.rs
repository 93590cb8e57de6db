//! Every published [`Event`] as a `tracing` event too, at the level an
//! operator expects, under a target named after the part that emitted it
//! (`tower_hardening::breaker`, `::limit`, `::recovery`, `::monitor`), with
//! the service, breaker or pool name as the `service` field. A user with
//! only `tracing-subscriber` sees the whole story.
//!
//! | event | level |
//! | --- | --- |
//! | a breaker opens (or is forced open) | `warn` |
//! | a half-open probe fails (half-open -> open) | `warn` |
//! | a breaker closes, goes half-open, is disabled | `info` |
//! | a call rejected (once per state period, or per priority per second) | `debug` |
//! | retries exhausted (once per second per layer) | `warn` |
//! | a lease reclaimed (once a second per pool), memory pressure on, a performance alert | `warn` |
//! | a priority shed | `warn` |
//! | a recovery attempt fails or gives up | `warn` |
//! | a recovery starts or succeeds, pressure or an alert clears | `info` |
//! | health turns degraded or unhealthy | `warn`; back to healthy: `info` |
//! | an upstream ejects an endpoint (`tower_hardening::upstream`) | `warn` |
//! | an ejected endpoint returns | `info` |
//!
//! ```
//! use tower_hardening_core::{CircuitState, Event, EventKind, publish};
//!
//! // With or without a sink, the event is traced.
//! publish(None, || Event::new("audio", EventKind::CircuitTransition {
//!     from: CircuitState::Closed,
//!     to: CircuitState::Open,
//! }));
//! ```

use crate::{CircuitState, Event, EventKind, EventSink, HealthState, RecoveryStep, RejectionKind};

/// Builds `event`, traces it, and sends it to `sink` if there is one: how
/// every layer publishes, so that tracing sees events whether or not
/// anyone subscribed. Call it on rare paths only (transitions, gated
/// rejections): it always builds the event.
pub fn publish(sink: Option<&EventSink>, event: impl FnOnce() -> Event) {
    let event = event();
    event.trace();
    if let Some(sink) = sink {
        sink.emit(event);
    }
}

macro_rules! at {
    ($level:ident, $target:literal, $event:expr, $($field:tt)*) => {
        tracing::$level!(target: $target, service = $event.service(), $($field)*)
    };
}

impl Event {
    /// Emits this event as a `tracing` event (see the module's table).
    pub fn trace(&self) {
        match self.kind() {
            EventKind::CircuitTransition { from, to } => match (from, to) {
                (CircuitState::HalfOpen, CircuitState::Open) => at!(
                    warn,
                    "tower_hardening::breaker",
                    self,
                    from = from.as_str(),
                    to = to.as_str(),
                    "half-open probe failed: circuit reopened"
                ),
                (_, CircuitState::Open | CircuitState::ForcedOpen) => at!(
                    warn,
                    "tower_hardening::breaker",
                    self,
                    from = from.as_str(),
                    to = to.as_str(),
                    "circuit opened"
                ),
                (_, CircuitState::Closed) => at!(
                    info,
                    "tower_hardening::breaker",
                    self,
                    from = from.as_str(),
                    to = to.as_str(),
                    "circuit closed"
                ),
                _ => at!(
                    info,
                    "tower_hardening::breaker",
                    self,
                    from = from.as_str(),
                    to = to.as_str(),
                    "circuit state changed"
                ),
            },
            EventKind::CallRejected { rejection } => match rejection {
                RejectionKind::CircuitOpen => at!(
                    debug,
                    "tower_hardening::breaker",
                    self,
                    rejection = rejection.as_str(),
                    "calls rejected"
                ),
                RejectionKind::Recovering | RejectionKind::RecoveryFailed => at!(
                    debug,
                    "tower_hardening::recovery",
                    self,
                    rejection = rejection.as_str(),
                    "calls rejected"
                ),
                _ => at!(
                    debug,
                    "tower_hardening::limit",
                    self,
                    rejection = rejection.as_str(),
                    "calls rejected"
                ),
            },
            EventKind::RetryExhausted {
                attempts,
                budget_exhausted,
            } => at!(
                warn,
                "tower_hardening::recovery",
                self,
                attempts = *attempts,
                budget_exhausted = *budget_exhausted,
                "retries exhausted"
            ),
            EventKind::LeaseReclaimed { lease_id, owner } => at!(
                warn,
                "tower_hardening::limit",
                self,
                lease_id = *lease_id,
                owner = &**owner,
                "lease reclaimed"
            ),
            EventKind::Shed { priority } => at!(
                warn, "tower_hardening::limit", self,
                priority = %priority, "work shed"
            ),
            EventKind::RecoveryStep { attempt, step } => match step {
                RecoveryStep::Started => at!(
                    info,
                    "tower_hardening::recovery",
                    self,
                    attempt = *attempt,
                    "recovery attempt started"
                ),
                RecoveryStep::Succeeded => at!(
                    info,
                    "tower_hardening::recovery",
                    self,
                    attempt = *attempt,
                    "recovered"
                ),
                RecoveryStep::Failed { error, retry_in } => at!(
                    warn, "tower_hardening::recovery", self,
                    attempt = *attempt, error = &**error, retry_in = ?retry_in, "recovery attempt failed"
                ),
                RecoveryStep::GaveUp => at!(
                    warn,
                    "tower_hardening::recovery",
                    self,
                    attempts = *attempt,
                    "recovery failed: gave up"
                ),
            },
            EventKind::MemoryPressure {
                active,
                used_bytes,
                limit_bytes,
            } => {
                if *active {
                    at!(
                        warn,
                        "tower_hardening::monitor",
                        self,
                        used_bytes = *used_bytes,
                        limit_bytes = *limit_bytes,
                        "memory pressure"
                    )
                } else {
                    at!(
                        info,
                        "tower_hardening::monitor",
                        self,
                        used_bytes = *used_bytes,
                        limit_bytes = *limit_bytes,
                        "memory pressure over"
                    )
                }
            }
            EventKind::PerformanceAlert {
                metric,
                active,
                value,
                threshold,
            } => {
                if *active {
                    at!(
                        warn,
                        "tower_hardening::monitor",
                        self,
                        metric = *metric,
                        value = *value,
                        threshold = *threshold,
                        "performance threshold crossed"
                    )
                } else {
                    at!(
                        info,
                        "tower_hardening::monitor",
                        self,
                        metric = *metric,
                        value = *value,
                        threshold = *threshold,
                        "performance back under threshold"
                    )
                }
            }
            EventKind::HealthChanged { from, to } => match to {
                HealthState::Healthy => at!(
                    info,
                    "tower_hardening::monitor",
                    self,
                    from = from.as_str(),
                    to = to.as_str(),
                    "health changed"
                ),
                _ => at!(
                    warn,
                    "tower_hardening::monitor",
                    self,
                    from = from.as_str(),
                    to = to.as_str(),
                    "health changed"
                ),
            },
            EventKind::EndpointEjected {
                endpoint,
                duration,
                ejections,
                reason,
            } => at!(
                warn,
                "tower_hardening::upstream",
                self,
                endpoint = &**endpoint,
                duration_seconds = duration.as_secs_f64(),
                ejections = *ejections,
                reason = *reason,
                "endpoint ejected"
            ),
            EventKind::EndpointReturned { endpoint } => at!(
                info,
                "tower_hardening::upstream",
                self,
                endpoint = &**endpoint,
                "endpoint returned"
            ),
        }
    }
}
