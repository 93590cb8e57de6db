//! The background task: health ticks, performance ticks, the event-loop
//! probe, memory pressure and the recovery manager, in one task (plus the
//! probe's), all stopped by `shutdown()`.
//!
//! The monitor owns every piece of mutable state and publishes immutable
//! snapshots through `arc-swap`: readers never block it, and the request
//! path never waits on it.

pub(crate) mod pressure;
pub(crate) mod probe;
mod readings;
mod rules;
mod tick;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tower_hardening_core::{BoxError, Event, EventKind, HealthState, RecoveryStep, names};

pub use readings::{CpuReading, ManualReadings, MemoryReading, Readings, SysinfoReadings};

use crate::health::RecoveryState;
use crate::recovery_manager::{self as recovery, RecoveryUpdate};
use crate::shared::{Command, Shared};
use pressure::{Marks, Shedding};
use probe::LatencySamples;

/// What the monitor knows of one service beyond its breaker.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceState {
    pub(crate) failed_checks: u32,
    pub(crate) last_check: Option<SystemTime>,
    pub(crate) last_failure: Option<SystemTime>,
    pub(crate) check_error: Option<Arc<str>>,
    pub(crate) init_error: Option<Arc<str>>,
    pub(crate) recovery: Option<RecoveryState>,
    pub(crate) recovery_attempts: u32,
    pub(crate) recovery_error: Option<Arc<str>>,
    pub(crate) recovering: bool,
    pub(crate) last_status: HealthState,
    pub(crate) last_circuit_open: bool,
}

/// Performance alerts on now.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Alerts {
    pub(crate) cpu: bool,
    pub(crate) memory: bool,
    pub(crate) event_loop: bool,
}

type BoxedFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The monitor task's state.
pub(crate) struct Monitor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) readings: Box<dyn Readings>,
    pub(crate) services: BTreeMap<Arc<str>, ServiceState>,
    pub(crate) shedding: Shedding,
    pub(crate) marks: Marks,
    pub(crate) alerts: Alerts,
    pub(crate) memory: crate::health::MemoryStatus,
    pub(crate) latency: Arc<LatencySamples>,
    pub(crate) last_overall: HealthState,
    updates_tx: mpsc::UnboundedSender<RecoveryUpdate>,
    updates: mpsc::UnboundedReceiver<RecoveryUpdate>,
    commands: mpsc::UnboundedReceiver<Command>,
    recoveries: JoinSet<()>,
    ticker: Option<BoxedFuture<()>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Monitor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        readings: Box<dyn Readings>,
        commands: mpsc::UnboundedReceiver<Command>,
        ticker: BoxedFuture<()>,
    ) -> Self {
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let marks = Marks {
            warning: shared.config.memory_warning,
            critical: shared.config.memory_critical,
        };
        let services = shared
            .services
            .keys()
            .map(|name| (name.clone(), ServiceState::default()))
            .collect();
        Monitor {
            shared,
            readings,
            services,
            shedding: Shedding::None,
            marks,
            alerts: Alerts::default(),
            memory: crate::health::MemoryStatus::default(),
            latency: Arc::new(LatencySamples::default()),
            last_overall: HealthState::Healthy,
            updates_tx,
            updates,
            commands,
            recoveries: JoinSet::new(),
            ticker: Some(ticker),
        }
    }

    /// Runs until `shutdown()`, then stops everything it started.
    pub(crate) async fn run(mut self) {
        let config = self.shared.config.clone();
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return self.stop().await;
        }
        let mut events = self.shared.events.subscribe();
        let mut probe = None;
        if config.enable_performance_monitoring {
            probe = Some(tokio::spawn(probe::run(self.latency.clone())));
        }
        self.initialize_services().await;
        self.read_memory();
        self.evaluate();

        let mut health_tick = tokio::time::interval(config.health_check_interval);
        health_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        health_tick.reset(); // the first check one interval after start
        let mut performance_tick = tokio::time::interval(config.performance_check_interval);
        performance_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut checks: Option<BoxedFuture<Vec<(Arc<str>, Result<(), Arc<str>>)>>> = None;
        let mut ticker = self
            .ticker
            .take()
            .unwrap_or_else(|| Box::pin(std::future::pending()));

        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(update) = self.updates.recv() => self.on_recovery_update(update),
                Some(command) = self.commands.recv() => match command {
                    Command::TriggerRecovery(name) => self.trigger_recovery(&name, true),
                    Command::StackBuilt => self.evaluate(),
                },
                event = events.recv() => match event {
                    Ok(event) if matches!(event.kind(), EventKind::CircuitTransition { .. }) => {
                        self.evaluate();
                    }
                    Ok(_) => {}
                    // Missed some: whatever they were, the states are read anew.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.evaluate(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                },
                results = async { checks.as_mut().expect("guarded").await }, if checks.is_some() => {
                    checks = None;
                    self.on_health_checks(results);
                    self.read_memory();
                    self.evaluate();
                }
                _ = health_tick.tick(), if config.enable_health_monitoring && checks.is_none() => {
                    checks = Some(self.start_health_checks());
                }
                _ = performance_tick.tick(), if config.enable_performance_monitoring => {
                    self.performance_tick();
                    self.evaluate();
                }
                Some(_) = self.recoveries.join_next(), if !self.recoveries.is_empty() => {}
                _ = &mut ticker => {}
            }
        }
        if let Some(probe) = probe {
            probe.abort();
            let _ = probe.await;
        }
        drop(checks);
        self.stop().await;
    }

    /// Stops recoveries, shuts the services and pools down, tells
    /// `shutdown()` it is done.
    async fn stop(mut self) {
        self.recoveries.abort_all();
        while self.recoveries.join_next().await.is_some() {}
        shutdown_everything(&self.shared).await;
        self.shared.stopped.send_replace(true);
    }

    async fn initialize_services(&mut self) {
        let timeout = self.shared.config.health_check_timeout;
        let inits = self.shared.services.values().filter_map(|entry| {
            let managed = entry.managed.clone()?;
            let name = entry.name.clone();
            Some(async move {
                let result = call_with_timeout(timeout, managed.initialize(), "initialize").await;
                (name, result)
            })
        });
        for (name, result) in futures_util::future::join_all(inits).await {
            if let (Err(error), Some(state)) = (result, self.services.get_mut(&name)) {
                state.init_error = Some(error);
                state.last_failure = Some(SystemTime::now());
            }
        }
    }

    fn start_health_checks(&self) -> BoxedFuture<Vec<(Arc<str>, Result<(), Arc<str>>)>> {
        let timeout = self.shared.config.health_check_timeout;
        let checks: Vec<_> = self
            .shared
            .services
            .values()
            .filter(|entry| !self.services.get(&entry.name).is_some_and(|s| s.recovering))
            .filter_map(|entry| {
                let managed = entry.managed.clone()?;
                let name = entry.name.clone();
                Some(async move {
                    let result =
                        call_with_timeout(timeout, managed.health_check(), "health check").await;
                    (name, result)
                })
            })
            .collect();
        Box::pin(futures_util::future::join_all(checks))
    }

    fn on_health_checks(&mut self, results: Vec<(Arc<str>, Result<(), Arc<str>>)>) {
        let now = SystemTime::now();
        for (name, result) in results {
            let Some(state) = self.services.get_mut(&name) else {
                continue;
            };
            state.last_check = Some(now);
            match result {
                Ok(()) => {
                    state.failed_checks = 0;
                    state.check_error = None;
                    // A service that failed to start and now passes its
                    // check is up after all.
                    state.init_error = None;
                }
                Err(error) => {
                    state.failed_checks = state.failed_checks.saturating_add(1);
                    state.check_error = Some(error);
                    state.last_failure = Some(now);
                }
            }
        }
    }

    /// Starts a recovery of `name` if it is recoverable and none runs.
    /// `manual`: asked for by the application, also after one gave up.
    pub(crate) fn trigger_recovery(&mut self, name: &Arc<str>, manual: bool) {
        let config = &self.shared.config;
        let Some(entry) = self.shared.services.get(name) else {
            return;
        };
        let Some(managed) = entry.managed.clone() else {
            return;
        };
        if !(entry.recoverable && config.enable_error_recovery) && !manual {
            return;
        }
        let Some(state) = self.services.get_mut(name) else {
            return;
        };
        if state.recovering || self.shared.is_shutting_down() {
            return;
        }
        let first_attempt = match state.recovery {
            // Rebuilt, but the probes failed: the incident goes on.
            Some(RecoveryState::Probing) if !manual => state.recovery_attempts,
            Some(RecoveryState::GaveUp) if !manual => return,
            _ => 0,
        };
        if first_attempt >= config.max_recovery_attempts {
            state.recovery = Some(RecoveryState::GaveUp);
            return;
        }
        state.recovering = true;
        state.recovery_attempts = first_attempt;
        state.recovery = Some(RecoveryState::Recovering {
            attempt: first_attempt + 1,
        });
        let breaker = entry.stack.get().map(|parts| parts.breaker.clone());
        let job = recovery::Job {
            name: name.clone(),
            managed,
            breaker,
            first_attempt,
            max_attempts: config.max_recovery_attempts,
            backoff: config.recovery_backoff,
            max_backoff: config.max_recovery_backoff,
            timeout: config.health_check_timeout,
            events: self.shared.events.clone(),
            updates: self.updates_tx.clone(),
            recorder: self.shared.recorder.clone(),
        };
        self.recoveries.spawn(recovery::run(job));
    }

    fn on_recovery_update(&mut self, update: RecoveryUpdate) {
        let Some(state) = self.services.get_mut(update.service()) else {
            return;
        };
        match update {
            RecoveryUpdate::Attempt { attempt, .. } => {
                state.recovery_attempts = attempt;
                state.recovery = Some(RecoveryState::Recovering { attempt });
            }
            RecoveryUpdate::Succeeded { attempt, .. } => {
                state.recovering = false;
                state.recovery_attempts = attempt;
                state.recovery = Some(RecoveryState::Probing);
                state.init_error = None;
                state.check_error = None;
                state.failed_checks = 0;
                state.recovery_error = None;
            }
            RecoveryUpdate::GaveUp {
                attempts, error, ..
            } => {
                state.recovering = false;
                state.recovery_attempts = attempts;
                state.recovery = Some(RecoveryState::GaveUp);
                state.recovery_error = Some(error);
            }
        }
        self.evaluate();
    }
}

/// Runs one of a managed service's calls under `timeout`; the error as
/// text.
pub(crate) async fn call_with_timeout(
    timeout: Duration,
    call: impl Future<Output = Result<(), BoxError>>,
    what: &str,
) -> Result<(), Arc<str>> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Arc::from(format!("{what} failed: {error}"))),
        Err(_) => Err(Arc::from(format!("{what} timed out after {timeout:?}"))),
    }
}

/// What `shutdown()` does once: services shut down, every pool closed
/// (their leases released), health published as shutting down.
pub(crate) async fn shutdown_everything(shared: &Shared) {
    if shared
        .closed
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    let timeout = shared.config.health_check_timeout;
    let shutdowns = shared.services.values().filter_map(|entry| {
        let managed = entry.managed.clone()?;
        Some(async move {
            let _ = call_with_timeout(timeout, managed.shutdown(), "shutdown").await;
        })
    });
    futures_util::future::join_all(shutdowns).await;
    for pool in shared.pools.values() {
        pool.shutdown();
    }
    for entry in shared.services.values() {
        if let Some(parts) = entry.stack.get() {
            parts.pool.shutdown();
        }
    }
    let mut health = (**shared.health.load()).clone();
    health.reasons.push(Arc::from("shutting down"));
    health.checked_at = SystemTime::now();
    shared.health.store(Arc::new(health));
}

/// Emits the `hardening_recovery_*` figures of one attempt.
pub(crate) fn record_attempt(
    recorder: &(dyn metrics::Recorder + Send + Sync),
    service: &Arc<str>,
    ok: bool,
    took: Duration,
) {
    let result = if ok { "success" } else { "failure" };
    metrics::with_local_recorder(recorder, || {
        metrics::counter!(names::RECOVERY_ATTEMPTS_TOTAL, names::LABEL_SERVICE => service.clone(), names::LABEL_RESULT => result)
            .increment(1);
        metrics::histogram!(names::RECOVERY_DURATION_SECONDS, names::LABEL_SERVICE => service.clone(), names::LABEL_RESULT => result)
            .record(took.as_secs_f64());
    });
}

pub(crate) fn emit(shared: &Shared, service: &Arc<str>, kind: EventKind) {
    shared.events.emit(Event::new(service.clone(), kind));
}

pub(crate) fn recovery_event(
    events: &tower_hardening_core::EventSink,
    service: &Arc<str>,
    attempt: u32,
    step: RecoveryStep,
) {
    events.emit(Event::new(
        service.clone(),
        EventKind::RecoveryStep { attempt, step },
    ));
}
