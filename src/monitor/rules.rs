//! The health rules (see the `health` module's table), applied to what the
//! monitor knows and to each breaker's live state; publishing the result
//! and an event for each change.

use std::sync::Arc;
use std::time::SystemTime;

use tower_hardening_core::{CircuitState, EventKind, HealthState, names};

use super::{Monitor, emit};
use crate::health::{HealthStatus, RecoveryState, ServiceHealth};

/// The name events about the whole process carry (no service may take it).
pub(crate) const PROCESS: &str = crate::config::PROCESS;

fn level(state: HealthState) -> f64 {
    match state {
        HealthState::Healthy => 0.0,
        HealthState::Degraded => 1.0,
        HealthState::Unhealthy => 2.0,
    }
}

impl Monitor {
    /// Derives every status from what is known now, publishes the new
    /// snapshot, and emits one event per status that changed. Starts the
    /// recoveries the rules call for.
    pub(crate) fn evaluate(&mut self) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let now = SystemTime::now();
        let mut services = std::collections::BTreeMap::new();
        let mut reasons: Vec<Arc<str>> = Vec::new();
        let mut overall = HealthState::Healthy;
        let mut to_recover = Vec::new();
        for (name, entry) in &shared.services {
            let state = self.services.entry(name.clone()).or_default();
            let mut health = ServiceHealth::new(entry.critical);
            let mut why: Vec<String> = Vec::new();
            let mut status = HealthState::Healthy;
            let mut automatic_cause = false;
            if let Some(parts) = entry.stack.get() {
                let snapshot = parts.breaker.snapshot();
                if snapshot.state == CircuitState::Closed
                    && state.recovery == Some(RecoveryState::GaveUp)
                    && state.gave_up_transition != Some(snapshot.last_transition)
                {
                    // Reset by an operator (or closed by its own probes):
                    // the service is back in service.
                    state.recovery = Some(RecoveryState::Idle);
                    state.recovery_error = None;
                }
                automatic_cause = snapshot.state == CircuitState::Open;
                health.circuit_state = Some(snapshot.state);
                health.failure_rate = snapshot.failure_rate;
                health.slow_call_rate = snapshot.slow_call_rate;
                health.calls = snapshot.calls;
                let open = matches!(
                    snapshot.state,
                    CircuitState::Open | CircuitState::ForcedOpen
                );
                if open && !state.last_circuit_open {
                    state.last_failure = Some(now);
                }
                state.last_circuit_open = open;
                match snapshot.state {
                    CircuitState::Open | CircuitState::ForcedOpen => {
                        status = HealthState::Unhealthy;
                        why.push(format!("circuit {}", snapshot.state));
                    }
                    CircuitState::HalfOpen => {
                        status = status.max(HealthState::Degraded);
                        why.push("circuit half-open (probing)".to_owned());
                    }
                    _ => {}
                }
            }
            if let Some(view) = entry.endpoints.get() {
                let endpoints = view.endpoints();
                if let Some((verdict, reason)) = crate::health::endpoints_verdict(&endpoints) {
                    status = status.max(verdict);
                    why.push(reason);
                }
                health.endpoints = endpoints;
            }
            if let Some(error) = &state.init_error {
                status = HealthState::Unhealthy;
                automatic_cause = true;
                why.push(error.to_string());
            }
            if state.failed_checks >= config.unhealthy_after_failed_checks {
                automatic_cause = true;
                status = HealthState::Unhealthy;
                why.push(format!(
                    "{} health checks failed in a row; last: {}",
                    state.failed_checks,
                    state.check_error.as_deref().unwrap_or("?")
                ));
            } else if state.failed_checks > 0 {
                status = status.max(HealthState::Degraded);
                why.push(
                    state
                        .check_error
                        .as_deref()
                        .unwrap_or("health check failed")
                        .to_owned(),
                );
            }
            if state.recovery == Some(RecoveryState::GaveUp) {
                status = HealthState::Unhealthy;
                why.push(format!(
                    "recovery gave up after {} attempts; last: {}",
                    state.recovery_attempts,
                    state.recovery_error.as_deref().unwrap_or("?")
                ));
            }
            if status == HealthState::Healthy && state.recovery == Some(RecoveryState::Probing) {
                // Rebuilt and confirmed by its probes: the incident is over.
                state.recovery = Some(RecoveryState::Idle);
            }
            // An operator's force-open is no reason to restart anything.
            if status == HealthState::Unhealthy
                && automatic_cause
                && entry.recoverable
                && config.enable_error_recovery
                && entry.managed.is_some()
                && !state.recovering
            {
                to_recover.push(name.clone());
            }
            health.status = status;
            health.last_check = state.last_check;
            health.last_failure = state.last_failure;
            health.failed_checks = state.failed_checks;
            health.recovery = state.recovery.unwrap_or(RecoveryState::Idle);
            health.recovery_attempts = state.recovery_attempts;
            health.reason = (!why.is_empty()).then(|| Arc::from(why.join("; ")));
            let counts_as = match (status, entry.critical) {
                (HealthState::Unhealthy, true) => HealthState::Unhealthy,
                (HealthState::Healthy, _) => HealthState::Healthy,
                _ => HealthState::Degraded,
            };
            if counts_as != HealthState::Healthy {
                overall = overall.max(counts_as);
                reasons.push(Arc::from(format!(
                    "{name}: {}",
                    health.reason.as_deref().unwrap_or(status.as_str())
                )));
            }
            if status != state.last_status {
                emit(
                    &shared,
                    name,
                    EventKind::HealthChanged {
                        from: state.last_status,
                        to: status,
                    },
                );
                state.last_status = status;
            }
            services.insert(name.clone(), health);
        }

        let memory = self.memory;
        let used = memory.percentage / 100.0;
        if memory.limit > 0 && used >= config.memory_critical {
            overall = HealthState::Unhealthy;
            reasons.push(Arc::from(format!(
                "memory: {:.1}% of the limit, above the critical mark",
                memory.percentage
            )));
        } else if memory.limit > 0 && used >= config.memory_warning {
            overall = overall.max(HealthState::Degraded);
            reasons.push(Arc::from(format!(
                "memory: {:.1}% of the limit, above the warning mark",
                memory.percentage
            )));
        }
        for (on, what) in [
            (
                self.failed_readings.memory,
                "monitor: memory reading failed (the readings source panicked); figures are from the last good reading",
            ),
            (
                self.failed_readings.cpu,
                "monitor: CPU reading failed (the readings source panicked); figures are from the last good reading",
            ),
            (
                self.alerts.cpu,
                "performance: process CPU above its threshold",
            ),
            (
                self.alerts.memory,
                "performance: memory above its threshold",
            ),
            (
                self.alerts.event_loop,
                "performance: event-loop p99 above its threshold",
            ),
        ] {
            if on {
                overall = overall.max(HealthState::Degraded);
                reasons.push(Arc::from(what));
            }
        }

        let status = HealthStatus {
            status: overall,
            memory,
            services,
            shedding_below: self.shedding.below(),
            reasons,
            checked_at: now,
        };
        metrics::with_local_recorder(&*shared.recorder, || {
            metrics::gauge!(names::PROCESS_HEALTH).set(level(overall));
            metrics::gauge!(names::MONITOR_ALIVE).set(1.0);
            let since_epoch = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            metrics::gauge!(names::MONITOR_LAST_TICK_SECONDS).set(since_epoch.as_secs_f64());
            for (name, health) in &status.services {
                metrics::gauge!(names::SERVICE_HEALTH, names::LABEL_SERVICE => name.clone())
                    .set(level(health.status));
            }
        });
        let changed = {
            let old = shared.health.load();
            old.status != status.status
                || old.services != status.services
                || old.reasons != status.reasons
                || old.shedding_below != status.shedding_below
                || old.memory != status.memory
        };
        if changed {
            shared.health.store(Arc::new(status));
        }
        if overall != self.last_overall {
            emit(
                &shared,
                &Arc::from(PROCESS),
                EventKind::HealthChanged {
                    from: self.last_overall,
                    to: overall,
                },
            );
            self.last_overall = overall;
        }
        for name in to_recover {
            self.trigger_recovery(&name, false);
        }
    }
}
