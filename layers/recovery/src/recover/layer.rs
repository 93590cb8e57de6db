use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tower_hardening_core::{BoxError, EventSink};

use super::service::Recover;
use super::state::{RecoverState, RecoverStats, Settings, Shared};
use crate::backoff::Backoff;
use crate::error::{ConfigError, invalid_recover};

/// Builds (and rebuilds) a service from a factory: lazily on the first
/// call; again, with backoff up to `max_attempts`, when the service fails
/// `poll_ready`, fails `after_consecutive_failures` calls in a row, or
/// [`RecoverHandle::trigger`] is called.
///
/// Unlike the other layers it makes its service from the factory rather
/// than wrapping one, so it goes innermost: `.service(recover.service()?)`.
/// Every service it makes (and their clones) shares the one built service,
/// which must be `Clone`.
pub struct RecoverLayer<F> {
    factory: F,
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    after_consecutive_failures: Option<u32>,
    events: Option<EventSink>,
}

impl<F> std::fmt::Debug for RecoverLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverLayer")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field(
                "after_consecutive_failures",
                &self.after_consecutive_failures,
            )
            .finish_non_exhaustive()
    }
}

impl<F> RecoverLayer<F> {
    /// Recovers the service `factory` builds. Defaults: 5 attempts,
    /// exponential backoff from 100 ms to 10 s, no rebuild on failed calls.
    pub fn new(factory: F) -> Self {
        RecoverLayer {
            factory,
            name: Arc::from("recover"),
            max_attempts: 5,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)),
            after_consecutive_failures: None,
            events: None,
        }
    }

    /// The name used in errors, events and metric labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Build attempts per recovery (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait after a failed attempt.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Also rebuild after this many failed calls in a row (at least 1).
    pub fn after_consecutive_failures(mut self, failures: u32) -> Self {
        self.after_consecutive_failures = Some(failures);
        self
    }

    /// Publishes every recovery step.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// Checks the settings and returns the handle and the service; more
    /// services sharing the same state come from cloning it.
    pub fn service<S, Fut, E>(self) -> Result<RecoverPair<S, F>, ConfigError>
    where
        S: Clone + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if self.max_attempts == 0 {
            return Err(invalid_recover("max_attempts", 0, "at least 1"));
        }
        if self.after_consecutive_failures == Some(0) {
            return Err(invalid_recover(
                "after_consecutive_failures",
                0,
                "at least 1",
            ));
        }
        self.backoff
            .validate()
            .map_err(|allowed| invalid_recover("backoff", self.backoff, allowed))?;
        let shared = Arc::new(Shared::new(
            Settings {
                name: self.name,
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                after_consecutive_failures: self.after_consecutive_failures,
                events: self.events,
            },
            self.factory,
        ));
        Ok((
            RecoverHandle {
                shared: shared.clone(),
            },
            Recover::new(shared),
        ))
    }
}

/// What [`RecoverLayer::service`] returns: the handle and the service
/// (tower's `(handle, worker)` convention, the service in place of a
/// worker).
pub type RecoverPair<S, F> = (RecoverHandle<S, F>, Recover<S, F>);

/// Reads and steers a recoverable service. Cheap to clone.
pub struct RecoverHandle<S, F> {
    shared: Arc<Shared<S, F>>,
}

impl<S, F> Clone for RecoverHandle<S, F> {
    fn clone(&self) -> Self {
        RecoverHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, F> std::fmt::Debug for RecoverHandle<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverHandle")
            .field("name", &self.shared.settings.name)
            .finish_non_exhaustive()
    }
}

impl<S, F, Fut, E> RecoverHandle<S, F>
where
    S: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    /// Where the service is now.
    pub fn state(&self) -> RecoverState {
        self.shared.state()
    }

    /// Build attempts, successes, failures and rebuilds so far.
    pub fn stats(&self) -> RecoverStats {
        self.shared.stats()
    }

    /// Drops the current service and builds a new one (from `Failed`, starts
    /// over with fresh attempts); does nothing while a build is under way.
    /// Needs a tokio runtime.
    pub fn trigger(&self) {
        self.shared.trigger();
    }
}
