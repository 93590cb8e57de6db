//! The shared state of a recoverable service: which phase it is in, the
//! service built last, and the task that rebuilds it.
//!
//! ```
//! use tower_hardening_recovery::RecoverState;
//!
//! // A service is built lazily: nothing happens before the first call.
//! let state = RecoverState::Idle;
//! assert_ne!(state, RecoverState::Ready);
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower_hardening_core::sync::lock;
use tower_hardening_core::{
    BoxError, Event, EventKind, EventSink, Outcome, Recovering, RecoveryFailed, RecoveryStep,
    names, rejection_of,
};

use crate::backoff::Backoff;

/// Where a recoverable service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverState {
    /// Not built yet: the first call starts building it.
    Idle,
    /// Built and serving.
    Ready,
    /// Being built, or waiting the backoff before the next attempt; calls
    /// fail fast with `Recovering`.
    Rebuilding {
        /// The build attempt under way (or the last one, while waiting
        /// the backoff), from 1.
        attempt: u32,
    },
    /// Every attempt failed; calls fail with `RecoveryFailed` until
    /// `trigger()`.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last_error: Arc<str>,
    },
}

/// Counters of a recoverable service, from
/// [`RecoverHandle::stats`](crate::RecoverHandle::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RecoverStats {
    /// Build attempts started (the first build included).
    pub attempts: u64,
    /// Attempts that produced a service.
    pub successes: u64,
    /// Attempts that failed: an error, a panic, or the attempt timeout.
    pub failures: u64,
    /// Rebuilds started after the service was ready (a failed
    /// `poll_ready`, too many failed calls, or `trigger()`).
    pub rebuilds: u64,
}

/// The shortest retry hint a `Recovering` carries: a hint of zero would
/// tell a client to come back at once, into the same refusal.
const MIN_RETRY_HINT: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) attempt_timeout: Duration,
    pub(crate) after_consecutive_failures: Option<u32>,
    pub(crate) events: Option<EventSink>,
}

#[derive(Debug)]
struct Slot<S> {
    state: RecoverState,
    service: Option<S>,
    /// Which rebuild run is current; a run that finds another number here
    /// was cancelled and changes nothing.
    run: u64,
    /// The current run's task, to cancel it.
    task: Option<AbortHandle>,
    /// While waiting the backoff: when the next attempt starts.
    next_attempt_at: Option<Instant>,
}

/// The `hardening_recovery_attempts_total` handles, registered once when
/// the service is built.
#[derive(Debug)]
struct AttemptCounters {
    success: metrics::Counter,
    failure: metrics::Counter,
}

/// Shared by the handle and every service a builder made.
#[derive(Debug)]
pub(crate) struct Shared<S, F, C> {
    pub(crate) settings: Settings,
    factory: F,
    pub(crate) classifier: C,
    slot: Mutex<Slot<S>>,
    /// Bumped every time a new service is ready or the current one is
    /// dropped; services compare it with their own copy's generation
    /// without taking the lock.
    generation: AtomicU64,
    consecutive_failures: AtomicU32,
    attempts: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rebuilds: AtomicU64,
    counters: AttemptCounters,
}

/// What a service should do with its next call.
pub(crate) enum Admission<S> {
    /// Use this copy of the service (of this generation).
    Serve(u64, S),
    /// Keep using the copy it has.
    Unchanged,
    /// Fail the call with this error.
    Refuse(BoxError),
}

/// What the handle needs of a `Shared`, whatever its type parameters.
pub(crate) trait Control: Send + Sync + 'static {
    fn name(&self) -> &Arc<str>;
    fn state(&self) -> RecoverState;
    fn stats(&self) -> RecoverStats;
    fn trigger(self: Arc<Self>);
}

impl<S, F, Fut, E, C> Control for Shared<S, F, C>
where
    S: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    C: Send + Sync + 'static,
{
    fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    fn state(&self) -> RecoverState {
        let mut slot = lock(&self.slot);
        settle(&mut slot);
        slot.state.clone()
    }

    fn stats(&self) -> RecoverStats {
        RecoverStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
        }
    }

    fn trigger(self: Arc<Self>) {
        let mut slot = lock(&self.slot);
        let rebuild = slot.state == RecoverState::Ready;
        // A run under way (building, possibly hung, or waiting its
        // backoff) is cancelled: the new run starts at attempt 1 now.
        let stopped = self.start(&mut slot, rebuild);
        drop(slot);
        drop(stopped);
    }
}

impl<S, F, C> Shared<S, F, C> {
    pub(crate) fn new(settings: Settings, factory: F, classifier: C) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                names::RECOVERY_ATTEMPTS_TOTAL,
                names::LABEL_SERVICE => settings.name.clone(),
                names::LABEL_RESULT => result
            )
        };
        let counters = AttemptCounters {
            success: counter("success"),
            failure: counter("failure"),
        };
        Shared {
            settings,
            factory,
            classifier,
            slot: Mutex::new(Slot {
                state: RecoverState::Idle,
                service: None,
                run: 0,
                task: None,
                next_attempt_at: None,
            }),
            generation: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            attempts: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
            counters,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The error a call gets while there is no service to call.
    fn refusal(&self, slot: &Slot<S>) -> BoxError {
        let name = self.settings.name.clone();
        match &slot.state {
            RecoverState::Failed {
                attempts,
                last_error,
            } => Box::new(RecoveryFailed::new(name, *attempts, last_error.clone())),
            RecoverState::Rebuilding { attempt } => Box::new(
                Recovering::new(name, *attempt).with_retry_after(self.retry_hint(slot, *attempt)),
            ),
            // A service that was broken a moment ago may already be back.
            RecoverState::Idle | RecoverState::Ready => {
                Box::new(Recovering::new(name, 1).with_retry_after(MIN_RETRY_HINT))
            }
        }
    }

    /// How long until calling again has a chance: to the next attempt
    /// while waiting the backoff; while an attempt runs, the backoff that
    /// would follow it if it failed (it may succeed sooner). Never zero.
    fn retry_hint(&self, slot: &Slot<S>, attempt: u32) -> Duration {
        let hint = match slot.next_attempt_at {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => self.settings.backoff.base(attempt),
        };
        hint.max(MIN_RETRY_HINT)
    }

    /// Counts a finished call of generation `generation`; after
    /// `after_consecutive_failures` failures in a row, reports the service
    /// broken. Rejections (from layers inside the built service) and
    /// `Ignored` results are no evidence either way.
    pub(crate) fn call_finished<Res>(&self, generation: u64, result: &Result<Res, BoxError>) -> bool
    where
        C: tower_hardening_core::Classify<Res, BoxError>,
    {
        let Some(limit) = self.settings.after_consecutive_failures else {
            return false;
        };
        if generation != self.generation() {
            // A call to a service already replaced says nothing of the new.
            return false;
        }
        if let Err(error) = result
            && rejection_of(&**error).is_some()
        {
            return false;
        }
        match self.classifier.classify(result) {
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                false
            }
            Outcome::Ignored => false,
            Outcome::Failure => self.call_failed(limit),
        }
    }

    /// Counts a failed call (one that errored, was classified a failure,
    /// or panicked); true when the limit is reached.
    pub(crate) fn call_failed(&self, limit: u32) -> bool {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= limit {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn emit(&self, attempt: u32, step: RecoveryStep) {
        tower_hardening_core::publish(self.settings.events.as_ref(), || {
            Event::new(
                self.settings.name.clone(),
                EventKind::RecoveryStep { attempt, step },
            )
        });
    }

    fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.counters.failure.increment(1);
    }

    /// Runs `change` on the slot if run `run` is still the current one.
    fn update_if_current(&self, run: u64, change: impl FnOnce(&mut Slot<S>)) -> bool {
        let mut slot = lock(&self.slot);
        if slot.run != run {
            return false;
        }
        change(&mut slot);
        true
    }
}

impl<S, F, Fut, E, C> Shared<S, F, C>
where
    S: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    C: Send + Sync + 'static,
{
    /// Called by a service whose copy is of generation `have` (or none):
    /// hands out the current service, or the reason there is none.
    pub(crate) fn admit(self: &Arc<Self>, have: Option<u64>) -> Admission<S> {
        if have.is_some_and(|g| g == self.generation()) {
            return Admission::Unchanged;
        }
        let mut slot = lock(&self.slot);
        settle(&mut slot);
        match &slot.state {
            RecoverState::Ready => {
                let service = slot.service.clone().expect("a ready slot holds a service");
                Admission::Serve(self.generation(), service)
            }
            RecoverState::Idle => {
                let stopped = self.start(&mut slot, false);
                let refusal = self.refusal(&slot);
                drop(slot);
                drop(stopped);
                Admission::Refuse(refusal)
            }
            _ => Admission::Refuse(self.refusal(&slot)),
        }
    }

    /// The copy of generation `generation` failed `poll_ready`, or failed
    /// too many calls: drop it and rebuild, unless that already happened.
    /// Returns the error the call that found it broken fails with.
    pub(crate) fn broken(self: &Arc<Self>, generation: u64) -> BoxError {
        let mut slot = lock(&self.slot);
        let mut stopped = None;
        if self.generation() == generation && slot.state == RecoverState::Ready {
            stopped = Some(self.start(&mut slot, true));
        }
        let refusal = self.refusal(&slot);
        drop(slot);
        drop(stopped);
        refusal
    }

    /// Starts a new run: takes the service out, cancels the run under way
    /// (if any) and spawns a task that builds from attempt 1. The caller
    /// drops what it returns once the lock is released: the old service's
    /// `Drop` and the old run's cancellation run no code under the lock.
    #[must_use = "drop it after releasing the lock"]
    fn start(self: &Arc<Self>, slot: &mut Slot<S>, rebuild: bool) -> Stopped<S> {
        let stopped = Stopped {
            task: slot.task.take(),
            _service: slot.service.take(),
        };
        slot.run = slot.run.wrapping_add(1);
        slot.state = RecoverState::Rebuilding { attempt: 1 };
        slot.next_attempt_at = None;
        self.generation.fetch_add(1, Ordering::AcqRel);
        if rebuild {
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(run(Arc::downgrade(self), slot.run));
                slot.task = Some(task.abort_handle());
            }
            Err(_) => {
                slot.state = RecoverState::Failed {
                    attempts: 0,
                    last_error: Arc::from("no tokio runtime to build the service on"),
                };
            }
        }
        stopped
    }

    /// One build attempt: the factory's future within the attempt timeout,
    /// a panic (in the call or the future) caught and turned into an error.
    async fn attempt(&self) -> Result<S, Arc<str>> {
        let timeout = self.settings.attempt_timeout;
        let future = match catch_unwind(AssertUnwindSafe(|| (self.factory)())) {
            Ok(future) => future,
            Err(panic) => return Err(panicked(&*panic)),
        };
        // `timeout` never panics: a deadline past the end of the clock is
        // no deadline.
        match tokio::time::timeout(timeout, CatchUnwind { inner: future }).await {
            Ok(Ok(Ok(service))) => Ok(service),
            Ok(Ok(Err(error))) => Err(Into::<BoxError>::into(error).to_string().into()),
            Ok(Err(panic)) => Err(panicked(&*panic)),
            Err(_elapsed) => Err(format!("the attempt timed out after {timeout:?}").into()),
        }
    }
}

/// A rebuild run: attempts with backoff until one succeeds or none is
/// left. Holds the state weakly between steps, so that once every service
/// and handle is gone the run stops at its next step.
async fn run<S, F, Fut, E, C>(shared: Weak<Shared<S, F, C>>, run: u64)
where
    S: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    C: Send + Sync + 'static,
{
    let mut guard = RunGuard {
        shared: shared.clone(),
        run,
        attempt: 1,
        in_attempt: false,
    };
    let Some(max) = shared.upgrade().map(|s| s.settings.max_attempts) else {
        return guard.disarm();
    };
    for attempt in 1..=max {
        let Some(this) = shared.upgrade() else {
            return guard.disarm();
        };
        let current = this.update_if_current(run, |slot| {
            slot.state = RecoverState::Rebuilding { attempt };
            slot.next_attempt_at = None;
        });
        if !current {
            return guard.disarm();
        }
        guard.attempt = attempt;
        guard.in_attempt = true;
        this.attempts.fetch_add(1, Ordering::Relaxed);
        this.emit(attempt, RecoveryStep::Started);
        let built = this.attempt().await;
        guard.in_attempt = false;
        match built {
            Ok(service) => {
                let installed = this.update_if_current(run, |slot| {
                    slot.service = Some(service);
                    slot.state = RecoverState::Ready;
                    slot.task = None;
                    this.consecutive_failures.store(0, Ordering::Relaxed);
                    this.generation.fetch_add(1, Ordering::AcqRel);
                });
                if installed {
                    this.successes.fetch_add(1, Ordering::Relaxed);
                    this.counters.success.increment(1);
                    this.emit(attempt, RecoveryStep::Succeeded);
                }
                return guard.disarm();
            }
            Err(error) => {
                this.count_failure();
                let retry_in = (attempt < max).then(|| this.settings.backoff.base(attempt));
                this.emit(
                    attempt,
                    RecoveryStep::Failed {
                        error: error.clone(),
                        retry_in,
                    },
                );
                let Some(wait) = retry_in else {
                    let current = this.update_if_current(run, |slot| {
                        slot.state = RecoverState::Failed {
                            attempts: attempt,
                            last_error: error,
                        };
                        slot.task = None;
                    });
                    if current {
                        this.emit(attempt, RecoveryStep::GaveUp);
                    }
                    return guard.disarm();
                };
                let now = Instant::now();
                // Past the end of the clock: the hint says "much later".
                let at = now.checked_add(wait).unwrap_or_else(|| far_future(now));
                if !this.update_if_current(run, |slot| slot.next_attempt_at = Some(at)) {
                    return guard.disarm();
                }
                drop(this);
                tokio::time::sleep(wait).await;
            }
        }
    }
    // Every attempt returns above; this is for the compiler.
    guard.disarm();
}

/// What a new run replaced: the old service and the old run's task.
/// Dropping it (after the lock is released) drops the service and
/// cancels the task.
struct Stopped<S> {
    task: Option<AbortHandle>,
    /// Held only to be dropped outside the lock.
    _service: Option<S>,
}

impl<S> Drop for Stopped<S> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The error a run leaves when it ends any other way than through its own
/// steps.
const RUN_STOPPED: &str = "the rebuild stopped: it panicked or its runtime shut down";

/// Marks a run whose task ended without a word (dropped before it ever
/// ran, say, by a runtime shutting down) failed, rather than leaving the
/// service `Rebuilding` for ever.
fn settle<S>(slot: &mut Slot<S>) {
    if let RecoverState::Rebuilding { attempt } = slot.state
        && slot.task.as_ref().is_some_and(AbortHandle::is_finished)
    {
        slot.state = RecoverState::Failed {
            attempts: attempt,
            last_error: Arc::from(RUN_STOPPED),
        };
        slot.task = None;
        slot.next_attempt_at = None;
    }
}

/// About 30 years from `now`, as tokio's own far-future deadline.
fn far_future(now: Instant) -> Instant {
    now.checked_add(Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(now)
}

/// Marks the run's attempt failed, and the service `Failed`, if the run
/// ends any other way than through its own steps: a panic outside the
/// factory, or its task dropped (its runtime shut down). Without it the
/// state would stay `Rebuilding` for ever.
struct RunGuard<S, F, C> {
    shared: Weak<Shared<S, F, C>>,
    run: u64,
    attempt: u32,
    in_attempt: bool,
}

impl<S, F, C> RunGuard<S, F, C> {
    fn disarm(mut self) {
        self.shared = Weak::new();
    }
}

impl<S, F, C> Drop for RunGuard<S, F, C> {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let (attempt, in_attempt) = (self.attempt, self.in_attempt);
        let stopped = shared.update_if_current(self.run, |slot| {
            slot.state = RecoverState::Failed {
                attempts: attempt,
                last_error: Arc::from(RUN_STOPPED),
            };
            slot.task = None;
            slot.next_attempt_at = None;
        });
        if stopped && in_attempt {
            shared.count_failure();
        }
    }
}

/// The text of a caught panic.
fn panicked(panic: &(dyn Any + Send)) -> Arc<str> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("the factory panicked: {message}").into()
}

pin_project! {
    /// Polls a future, catching a panic as an error (the future is not
    /// polled again after one).
    struct CatchUnwind<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut: Future> Future for CatchUnwind<Fut> {
    type Output = Result<Fut::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
