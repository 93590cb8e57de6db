//! The shared state of a recoverable service: which phase it is in, the
//! service built last, and the rebuild task.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tower_hardening_core::{BoxError, Event, EventKind, EventSink, RecoveryStep, names};

use crate::backoff::Backoff;

/// Where a recoverable service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverState {
    /// Not built yet: the first call starts building it.
    Idle,
    /// Built and serving.
    Ready,
    /// Being built; calls fail fast with `Recovering`.
    Rebuilding {
        /// The build attempt under way, from 1.
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
    /// Attempts that failed.
    pub failures: u64,
    /// Rebuilds started after the service was ready (a failed
    /// `poll_ready`, too many failed calls, or `trigger()`).
    pub rebuilds: u64,
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) after_consecutive_failures: Option<u32>,
    pub(crate) events: Option<EventSink>,
}

#[derive(Debug)]
struct Slot<S> {
    state: RecoverState,
    service: Option<S>,
}

/// Shared by the layer, its handle and every service it made.
#[derive(Debug)]
pub(crate) struct Shared<S, F> {
    pub(crate) settings: Settings,
    factory: F,
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

impl<S, F, Fut, E> Shared<S, F>
where
    S: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    pub(crate) fn new(settings: Settings, factory: F) -> Self {
        Shared {
            settings,
            factory,
            slot: Mutex::new(Slot {
                state: RecoverState::Idle,
                service: None,
            }),
            generation: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            attempts: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<S>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn state(&self) -> RecoverState {
        self.lock().state.clone()
    }

    pub(crate) fn stats(&self) -> RecoverStats {
        RecoverStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Called by a service whose copy is of generation `have` (or none):
    /// hands out the current service, or the reason there is none.
    pub(crate) fn admit(self: &Arc<Self>, have: Option<u64>) -> Admission<S> {
        if have.is_some_and(|g| g == self.generation()) {
            return Admission::Unchanged;
        }
        let mut slot = self.lock();
        match &slot.state {
            RecoverState::Ready => {
                let service = slot.service.clone().expect("a ready slot holds a service");
                Admission::Serve(self.generation(), service)
            }
            RecoverState::Idle => {
                self.start(&mut slot, false);
                self.refusal(&slot.state)
            }
            state => self.refusal(state),
        }
    }

    fn refusal(&self, state: &RecoverState) -> Admission<S> {
        let name = self.settings.name.clone();
        match state {
            RecoverState::Failed {
                attempts,
                last_error,
            } => Admission::Refuse(Box::new(crate::error::RecoveryFailed::new(
                name,
                *attempts,
                last_error.clone(),
            ))),
            RecoverState::Rebuilding { attempt } => Admission::Refuse(Box::new(
                tower_hardening_core::Recovering::new(name, *attempt),
            )),
            RecoverState::Idle | RecoverState::Ready => {
                Admission::Refuse(Box::new(tower_hardening_core::Recovering::new(name, 1)))
            }
        }
    }

    /// The copy of generation `generation` failed `poll_ready`, or failed
    /// too many calls: drop it and rebuild, unless that already happened.
    pub(crate) fn broken(self: &Arc<Self>, generation: u64) {
        let mut slot = self.lock();
        if self.generation() == generation && slot.state == RecoverState::Ready {
            self.start(&mut slot, true);
        }
    }

    /// Rebuilds now, whatever the state (unless a build is under way).
    pub(crate) fn trigger(self: &Arc<Self>) {
        let mut slot = self.lock();
        if !matches!(slot.state, RecoverState::Rebuilding { .. }) {
            let rebuild = slot.state == RecoverState::Ready;
            self.start(&mut slot, rebuild);
        }
    }

    /// Counts a finished call; after `after_consecutive_failures` failures
    /// in a row, rebuilds.
    pub(crate) fn call_finished(self: &Arc<Self>, generation: u64, failed: bool) {
        let Some(limit) = self.settings.after_consecutive_failures else {
            return;
        };
        if !failed {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return;
        }
        if self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.broken(generation);
        }
    }

    fn start(self: &Arc<Self>, slot: &mut Slot<S>, rebuild: bool) {
        slot.service = None;
        slot.state = RecoverState::Rebuilding { attempt: 1 };
        self.generation.fetch_add(1, Ordering::AcqRel);
        if rebuild {
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(Arc::clone(self).rebuild());
            }
            Err(_) => {
                slot.state = RecoverState::Failed {
                    attempts: 0,
                    last_error: Arc::from("no tokio runtime to build the service on"),
                };
            }
        }
    }

    async fn rebuild(self: Arc<Self>) {
        let max = self.settings.max_attempts;
        for attempt in 1..=max {
            self.lock().state = RecoverState::Rebuilding { attempt };
            self.attempts.fetch_add(1, Ordering::Relaxed);
            self.emit(attempt, RecoveryStep::Started);
            // Box the error at once: `E` need not be `Send`.
            let built = (self.factory)().await.map_err(Into::<BoxError>::into);
            match built {
                Ok(service) => {
                    self.successes.fetch_add(1, Ordering::Relaxed);
                    self.count_attempt("success");
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    {
                        let mut slot = self.lock();
                        slot.service = Some(service);
                        slot.state = RecoverState::Ready;
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                    self.emit(attempt, RecoveryStep::Succeeded);
                    return;
                }
                Err(error) => {
                    let error: Arc<str> = error.to_string().into();
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    self.count_attempt("failure");
                    let retry_in = (attempt < max).then(|| self.settings.backoff.base(attempt));
                    self.emit(
                        attempt,
                        RecoveryStep::Failed {
                            error: error.clone(),
                            retry_in,
                        },
                    );
                    match retry_in {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => {
                            self.lock().state = RecoverState::Failed {
                                attempts: attempt,
                                last_error: error,
                            };
                            self.emit(attempt, RecoveryStep::GaveUp);
                        }
                    }
                }
            }
        }
    }

    fn count_attempt(&self, result: &'static str) {
        metrics::counter!(
            names::RECOVERY_ATTEMPTS_TOTAL,
            names::LABEL_SERVICE => self.settings.name.clone(),
            names::LABEL_RESULT => result
        )
        .increment(1);
    }

    fn emit(&self, attempt: u32, step: RecoveryStep) {
        if let Some(events) = &self.settings.events {
            events.emit(Event::new(
                self.settings.name.clone(),
                EventKind::RecoveryStep { attempt, step },
            ));
        }
    }
}
