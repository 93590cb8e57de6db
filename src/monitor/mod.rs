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
pub(crate) use tick::service_figures;

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
    /// Bumped when a recovery starts: health checks begun before it are
    /// about the old service.
    pub(crate) generation: u64,
    pub(crate) last_status: HealthState,
    pub(crate) last_circuit_open: bool,
    /// The breaker's last transition when the recovery gave up: a breaker
    /// closed since (an operator's reset, its own probes) puts the
    /// service back in service; one that was closed all along (a person
    /// owned it, so the recovery never held it) does not.
    pub(crate) gave_up_transition: Option<std::time::Instant>,
}

/// Performance alerts on now.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Alerts {
    pub(crate) cpu: bool,
    pub(crate) memory: bool,
    pub(crate) event_loop: bool,
}

type BoxedFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Each checked service with its recovery generation when the check
/// started, and the result.
type CheckResults = Vec<(Arc<str>, u64, Result<(), Arc<str>>)>;

/// Ends the monitor's helper tasks however `run` ends, and, if it ends
/// without stopping properly (dropped, or a panic), lets `shutdown()` run
/// the shutdown steps itself.
struct RunGuard {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    done: bool,
}

impl RunGuard {
    async fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if self.done {
            return;
        }
        self.shared
            .monitor_started
            .store(false, std::sync::atomic::Ordering::SeqCst);
        metrics::with_local_recorder(&*self.shared.recorder, || {
            metrics::gauge!(tower_hardening_core::names::MONITOR_ALIVE).set(0.0);
        });
        if !self.shared.is_shutting_down() {
            // Died (a panic, an abort, its runtime gone): nothing derives
            // health any more, so the last snapshot must not stand.
            self.shared
                .monitor_died
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let mut health = (**self.shared.health.load()).clone();
            health.status = HealthState::Unhealthy;
            health.reasons.push(Arc::from(MONITOR_DIED));
            health.checked_at = SystemTime::now();
            self.shared.health.store(Arc::new(health));
        }
        if self.shared.is_shutting_down()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // A `shutdown()` may be waiting for this monitor: finish its
            // work for it.
            let shared = self.shared.clone();
            runtime.spawn(async move { run_shutdown_steps(&shared).await });
        }
    }
}

/// What health and readiness say once the monitor died.
pub(crate) const MONITOR_DIED: &str =
    "monitor: stopped unexpectedly (a panic or an abort); health is no longer derived";

/// A readings source call that panicked, by what it read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailedReadings {
    pub(crate) memory: bool,
    pub(crate) cpu: bool,
}

/// The monitor task's state.
pub(crate) struct Monitor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) readings: Box<dyn Readings>,
    pub(crate) services: BTreeMap<Arc<str>, ServiceState>,
    pub(crate) shedding: Shedding,
    pub(crate) marks: Marks,
    pub(crate) alerts: Alerts,
    pub(crate) memory: crate::health::MemoryStatus,
    /// The last memory reading that worked, shown while readings fail.
    pub(crate) last_memory: MemoryReading,
    pub(crate) last_cpu: CpuReading,
    pub(crate) failed_readings: FailedReadings,
    pub(crate) latency: Arc<LatencySamples>,
    pub(crate) last_overall: HealthState,
    updates_tx: mpsc::UnboundedSender<RecoveryUpdate>,
    updates: mpsc::UnboundedReceiver<RecoveryUpdate>,
    commands: mpsc::UnboundedReceiver<Command>,
    recoveries: JoinSet<()>,
    recovery_names: std::collections::HashMap<tokio::task::Id, Arc<str>>,
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
            last_memory: MemoryReading::default(),
            last_cpu: CpuReading::default(),
            failed_readings: FailedReadings::default(),
            latency: Arc::new(LatencySamples::default()),
            last_overall: HealthState::Healthy,
            updates_tx,
            updates,
            commands,
            recoveries: JoinSet::new(),
            recovery_names: std::collections::HashMap::new(),
            ticker: Some(ticker),
        }
    }

    /// Runs until `shutdown()`, then stops everything it started.
    pub(crate) async fn run(mut self) {
        let config = self.shared.config.clone();
        // Whatever ends this future (shutdown, a panic, being dropped by
        // whoever polls it), the probe and the ticker end with it, and a
        // `shutdown()` waiting for it is not left waiting.
        let mut guard = RunGuard {
            shared: self.shared.clone(),
            tasks: Vec::new(),
            done: false,
        };
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            self.stop().await;
            guard.done = true;
            return;
        }
        let mut events = self.shared.events.subscribe();
        if let Some(ticker) = self.ticker.take() {
            guard.tasks.push(tokio::spawn(ticker));
        }
        if config.enable_performance_monitoring {
            guard
                .tasks
                .push(tokio::spawn(probe::run(self.latency.clone())));
        }
        self.initialize_services().await;
        self.shared
            .initialized
            .store(true, std::sync::atomic::Ordering::Release);
        // With both monitors off nothing would read memory again: a
        // reading now would set shedding that nothing ever clears.
        if config.enable_health_monitoring || config.enable_performance_monitoring {
            self.read_memory();
        }
        self.evaluate();

        let mut health_tick = tokio::time::interval(config.health_check_interval);
        health_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        health_tick.reset(); // the first check one interval after start
        let mut performance_tick = tokio::time::interval(config.performance_check_interval);
        performance_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut checks: Option<BoxedFuture<CheckResults>> = None;

        loop {
            // Shutdown first, then the monitor's own work, and the event
            // stream last: a flood of events (every refusal under
            // overload) must not starve the ticks.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(update) = self.updates.recv() => self.on_recovery_update(update),
                Some(command) = self.commands.recv() => match command {
                    Command::TriggerRecovery(name) => self.trigger_recovery(&name, true),
                    Command::StackBuilt => self.evaluate(),
                },
                Some(joined) = self.recoveries.join_next_with_id(), if !self.recoveries.is_empty() => {
                    self.on_recovery_ended(joined);
                }
                _ = performance_tick.tick(), if config.enable_performance_monitoring => {
                    self.performance_tick();
                    self.evaluate();
                }
                results = async { checks.as_mut().expect("guarded").await }, if checks.is_some() => {
                    checks = None;
                    self.on_health_checks(results);
                    self.read_memory();
                    self.evaluate();
                }
                _ = health_tick.tick(), if config.enable_health_monitoring && checks.is_none() => {
                    forget_idle_rate_keys(&self.shared);
                    checks = Some(self.start_health_checks());
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        remember(&self.shared, &event);
                        if matches!(event.kind(), EventKind::CircuitTransition { .. }) {
                            self.evaluate();
                        }
                    }
                    // Missed some: whatever they were, the states are read anew.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.evaluate(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                },
            }
        }
        drop(checks);
        guard.stop_tasks().await;
        self.stop().await;
        guard.done = true;
    }

    /// Stops recoveries, then runs the shutdown steps (once, in a task of
    /// their own) and waits for them.
    async fn stop(mut self) {
        self.recoveries.abort_all();
        while self.recoveries.join_next().await.is_some() {}
        run_shutdown_steps(&self.shared).await;
    }

    fn on_recovery_ended(&mut self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match &joined {
            Ok((id, ())) => *id,
            Err(error) => error.id(),
        };
        let Some(name) = self.recovery_names.remove(&id) else {
            return;
        };
        if joined.is_err()
            && let Some(state) = self.services.get(&name)
            && state.recovering
        {
            // The job died (a panic, or its runtime stopping) without
            // saying how it ended.
            let attempts = state.recovery_attempts;
            self.on_recovery_update(RecoveryUpdate::GaveUp {
                service: name,
                attempts,
                error: Arc::from("the recovery task ended abnormally"),
            });
        }
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

    fn start_health_checks(&self) -> BoxedFuture<CheckResults> {
        let timeout = self.shared.config.health_check_timeout;
        let checks: Vec<_> = self
            .shared
            .services
            .values()
            .filter_map(|entry| {
                let state = self.services.get(&entry.name)?;
                if state.recovering {
                    return None;
                }
                let generation = state.generation;
                let managed = entry.managed.clone()?;
                let name = entry.name.clone();
                Some(async move {
                    let result =
                        call_with_timeout(timeout, managed.health_check(), "health check").await;
                    (name, generation, result)
                })
            })
            .collect();
        Box::pin(futures_util::future::join_all(checks))
    }

    fn on_health_checks(&mut self, results: CheckResults) {
        let now = SystemTime::now();
        for (name, generation, result) in results {
            let Some(state) = self.services.get_mut(&name) else {
                continue;
            };
            if state.recovering || state.generation != generation {
                // A recovery started while the check ran: its result is
                // about the service before the rebuild.
                continue;
            }
            state.last_check = Some(now);
            match result {
                Ok(()) => {
                    state.failed_checks = 0;
                    state.check_error = None;
                    // Fresh evidence: the service works now, whatever
                    // `initialize` said at start.
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
        if !(manual || entry.recoverable && config.enable_error_recovery) {
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
        // With every attempt spent (rebuilt each time, but the probes kept
        // failing), the job gives up at once: the breaker held open, the
        // event sent, the reason kept.
        state.recovering = true;
        state.generation = state.generation.wrapping_add(1);
        state.recovery_attempts = first_attempt;
        state.recovery = Some(RecoveryState::Recovering {
            attempt: (first_attempt + 1).min(config.max_recovery_attempts),
        });
        let breaker = entry.stack.get().map(|parts| parts.breaker.clone());
        let job = recovery::Job {
            name: name.clone(),
            managed,
            breaker,
            steering: entry.steering.clone(),
            first_attempt,
            max_attempts: config.max_recovery_attempts,
            backoff: config.recovery_backoff,
            max_backoff: config.max_recovery_backoff,
            timeout: config.health_check_timeout,
            events: self.shared.events.clone(),
            updates: self.updates_tx.clone(),
            recorder: self.shared.recorder.clone(),
        };
        let task = self.recoveries.spawn(recovery::run(job));
        self.recovery_names.insert(task.id(), name.clone());
    }

    fn on_recovery_update(&mut self, update: RecoveryUpdate) {
        let name = update.service().clone();
        let Some(state) = self.services.get_mut(&name) else {
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
                metrics::with_local_recorder(&*self.shared.recorder, || {
                    metrics::counter!(
                        tower_hardening_core::names::RECOVERY_GAVE_UP_TOTAL,
                        tower_hardening_core::names::LABEL_SERVICE => name.clone()
                    )
                    .increment(1);
                });
                state.gave_up_transition = self
                    .shared
                    .services
                    .get(&name)
                    .and_then(|entry| entry.stack.get())
                    .map(|parts| parts.breaker.snapshot().last_transition);
                state.recovering = false;
                state.recovery_attempts = attempts;
                state.recovery = Some(RecoveryState::GaveUp);
                state.recovery_error = Some(error);
            }
        }
        self.evaluate();
    }
}

/// How many events the dashboard keeps (its history answers them by
/// minute; its live view shows the last 50).
pub(crate) const RECENT_EVENTS: usize = 500;

/// Keeps `event` among the recent ones the dashboard shows.
fn remember(shared: &Shared, event: &Event) {
    let (text, level) = describe(event.kind());
    let detail = match event.kind() {
        EventKind::RecoveryStep {
            step: RecoveryStep::Failed { error, .. },
            ..
        } => Some(bounded(error)),
        _ => None,
    };
    let mut recent = tower_hardening_core::sync::lock(&shared.recent_events);
    if recent.len() >= RECENT_EVENTS {
        recent.pop_front();
    }
    let kind = match event.kind() {
        EventKind::CircuitTransition { .. } => "circuit",
        EventKind::CallRejected { .. } => "rejected",
        EventKind::RetryExhausted { .. } => "retry",
        EventKind::LeaseReclaimed { .. } => "lease",
        EventKind::Shed { .. } => "shed",
        EventKind::RecoveryStep { .. } => "recovery",
        EventKind::MemoryPressure { .. } => "memory",
        EventKind::PerformanceAlert { .. } => "performance",
        EventKind::HealthChanged { .. } => "health",
        _ => "other",
    };
    recent.push_back(crate::endpoints::RecentEvent {
        at: event.at(),
        kind,
        service: Arc::from(bounded(event.service())),
        text: bounded(&text),
        detail,
        level,
    });
}

/// At most 300 bytes of `text` (cut at a character boundary).
fn bounded(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// An event in words, and how loud it is (`info`, `warn`, `error`).
pub(crate) fn describe(kind: &EventKind) -> (String, &'static str) {
    use tower_hardening_core::CircuitState;
    match kind {
        EventKind::CircuitTransition { from, to } => {
            let level = match to {
                CircuitState::Open | CircuitState::ForcedOpen => "error",
                CircuitState::HalfOpen => "warn",
                _ => "info",
            };
            (format!("circuit {from} -> {to}"), level)
        }
        EventKind::CallRejected { rejection } => {
            (format!("calls rejected ({})", rejection.as_str()), "warn")
        }
        EventKind::RetryExhausted {
            attempts,
            budget_exhausted,
        } => (
            if *budget_exhausted {
                "retry budget exhausted".to_owned()
            } else {
                format!("gave up after {attempts} attempts")
            },
            "warn",
        ),
        EventKind::LeaseReclaimed { lease_id, owner } => {
            (format!("lease {lease_id} of {owner} reclaimed"), "warn")
        }
        EventKind::Shed { priority } => (format!("shedding {priority} priority"), "warn"),
        EventKind::RecoveryStep { attempt, step } => match step {
            RecoveryStep::Started => (format!("recovery attempt {attempt} started"), "warn"),
            RecoveryStep::Succeeded => (format!("recovery attempt {attempt} succeeded"), "info"),
            RecoveryStep::Failed { .. } => (format!("recovery attempt {attempt} failed"), "error"),
            RecoveryStep::GaveUp => (format!("recovery gave up after {attempt} attempts"), "error"),
            _ => (format!("recovery attempt {attempt}"), "info"),
        },
        EventKind::MemoryPressure {
            active,
            used_bytes,
            limit_bytes,
        } => (
            format!(
                "memory pressure {} ({used_bytes} of {limit_bytes} bytes)",
                if *active { "on" } else { "off" }
            ),
            if *active { "warn" } else { "info" },
        ),
        EventKind::PerformanceAlert {
            metric,
            active,
            value,
            threshold,
        } => (
            format!(
                "{metric} {} ({value:.3}, threshold {threshold})",
                if *active { "above its threshold" } else { "back to normal" }
            ),
            if *active { "warn" } else { "info" },
        ),
        EventKind::HealthChanged { from, to } => (
            format!("health {from} -> {to}"),
            match to {
                HealthState::Unhealthy => "error",
                HealthState::Degraded => "warn",
                HealthState::Healthy => "info",
            },
        ),
        EventKind::EndpointEjected {
            endpoint,
            duration,
            reason,
            ..
        } => (
            format!(
                "endpoint {endpoint} ejected for {}s ({})",
                duration.as_secs(),
                reason.replace('_', " ")
            ),
            "warn",
        ),
        EventKind::EndpointReturned { endpoint } => {
            (format!("endpoint {endpoint} back in rotation"), "info")
        }
        _ => (format!("{kind:?}"), "info"),
    }
}

/// Runs one of a managed service's calls under `timeout`; the error as
/// text.
/// A panic in the call is a failed call: the application's code must not
/// take the monitor or a recovery down with it.
/// Every rate limiter forgets the keys back at rest (their quota whole
/// again: forgetting changes no decision), so keyed state follows the
/// clients that are active, not every client ever seen.
fn forget_idle_rate_keys(shared: &Shared) {
    for entry in shared.services.values() {
        if let Some(limiter) = entry.stack.get().and_then(|parts| parts.rate_limit.handle()) {
            limiter.forget_idle();
        }
    }
}

pub(crate) async fn call_with_timeout(
    timeout: Duration,
    call: impl Future<Output = Result<(), BoxError>>,
    what: &str,
) -> Result<(), Arc<str>> {
    use futures_util::FutureExt;
    let call = std::panic::AssertUnwindSafe(call).catch_unwind();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(Arc::from(format!("{what} failed: {error}"))),
        Ok(Err(_panic)) => Err(Arc::from(format!("{what} panicked"))),
        Err(_) => Err(Arc::from(format!("{what} timed out after {timeout:?}"))),
    }
}

/// Runs the shutdown steps once, in a task of their own (so a caller that
/// gives up waiting does not leave them half done), and waits until they
/// are done.
pub(crate) async fn run_shutdown_steps(shared: &Arc<Shared>) {
    if !shared
        .closed
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        let owner = shared.clone();
        let task = tokio::spawn(async move {
            shutdown_everything(&owner).await;
            owner.stopped.send_replace(true);
        });
        *tower_hardening_core::sync::lock(&shared.steps) = Some(task);
    }
    let task = tower_hardening_core::sync::lock(&shared.steps).take();
    if let Some(task) = task {
        let _ = task.await;
    }
    let mut stopped = shared.stopped.subscribe();
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// What `shutdown()` does once: services shut down, every pool closed
/// (their leases released), health published as shutting down.
async fn shutdown_everything(shared: &Shared) {
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
    tower_hardening_core::publish(Some(&shared.events), || Event::new(service.clone(), kind));
}

pub(crate) fn recovery_event(
    events: &tower_hardening_core::EventSink,
    service: &Arc<str>,
    attempt: u32,
    step: RecoveryStep,
) {
    tower_hardening_core::publish(Some(events), || {
        Event::new(service.clone(), EventKind::RecoveryStep { attempt, step })
    });
}
