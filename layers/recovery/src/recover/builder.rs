//! The builder of a recoverable service.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_recovery::Recover;
//!
//! # #[derive(Clone)] struct Model;
//! let err = Recover::builder()
//!     .attempt_timeout(Duration::ZERO)
//!     .build(|| async { Ok::<_, std::io::Error>(Model) })
//!     .unwrap_err();
//! assert_eq!(err.field(), "attempt_timeout");
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tower_hardening_core::{BoxError, ErrorsAsFailures, EventSink};

use super::handle::RecoverHandle;
use super::service::Recover;
use super::state::{Settings, Shared};
use crate::backoff::Backoff;
use crate::error::{ConfigError, invalid_recover};

/// Builds a [`Recover`] service: `Recover::builder()`, the settings to
/// change, then [`build`](Self::build) with the factory, which checks them
/// all and returns the [`RecoverHandle`] and the service.
///
/// | setting | default |
/// | --- | --- |
/// | `name` | `"recover"` |
/// | `max_attempts` | 5 per recovery |
/// | `backoff` | exponential, 100 ms to 10 s |
/// | `attempt_timeout` | 30 s |
/// | `after_consecutive_failures` | off: failed calls never rebuild |
/// | `classifier` | [`ErrorsAsFailures`] |
///
/// Durations are not refused for being large (only a zero
/// `attempt_timeout` is): waits and sums saturate, and a timeout or wait
/// too long for the clock to reach never ends.
///
/// Its `hardening_recovery_attempts_total` counters are registered by
/// `build`, with the `metrics` recorder in force then: install the
/// recorder before building (or build inside `metrics::with_local_recorder`).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build(factory)` is called"]
pub struct RecoverBuilder<C = ErrorsAsFailures> {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    attempt_timeout: Duration,
    after_consecutive_failures: Option<u32>,
    events: Option<EventSink>,
    classifier: C,
}

impl Default for RecoverBuilder {
    fn default() -> Self {
        RecoverBuilder {
            name: Arc::from("recover"),
            max_attempts: 5,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)),
            attempt_timeout: Duration::from_secs(30),
            after_consecutive_failures: None,
            events: None,
            classifier: ErrorsAsFailures,
        }
    }
}

impl RecoverBuilder {
    /// A builder with the defaults listed above; the same as
    /// [`Recover::builder`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C> RecoverBuilder<C> {
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

    /// How long one attempt may take (above zero). An attempt that takes
    /// longer (a factory that hangs) is dropped and counts as failed; the
    /// backoff goes on. `Duration::MAX` means no limit.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Also rebuild after this many failed calls in a row (at least 1).
    /// A call fails when the classifier says so (or panics); rejections
    /// and `Ignored` results neither count nor reset the run.
    pub fn after_consecutive_failures(mut self, failures: u32) -> Self {
        self.after_consecutive_failures = Some(failures);
        self
    }

    /// Publishes every recovery step.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// What counts as a failed call for
    /// [`after_consecutive_failures`](Self::after_consecutive_failures).
    ///
    /// It classifies `Result<Res, BoxError>`, `Res` being the built
    /// service's response (its errors are boxed first): the shape every
    /// tower-hardening layer takes, so one classifier value serves breaker,
    /// retry, metrics and recover.
    pub fn classifier<C2>(self, classifier: C2) -> RecoverBuilder<C2> {
        RecoverBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            attempt_timeout: self.attempt_timeout,
            after_consecutive_failures: self.after_consecutive_failures,
            events: self.events,
            classifier,
        }
    }

    /// Checks the settings and returns the handle and the service that
    /// `factory` builds (lazily, at the first call); more services sharing
    /// the same state come from cloning it.
    pub fn build<S, F, Fut, E>(self, factory: F) -> Result<RecoverPair<S, F, C>, ConfigError>
    where
        S: Clone + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
        C: Clone + Send + Sync + 'static,
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
        if self.attempt_timeout.is_zero() {
            return Err(invalid_recover(
                "attempt_timeout",
                self.attempt_timeout,
                "a duration above zero",
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
                attempt_timeout: self.attempt_timeout,
                after_consecutive_failures: self.after_consecutive_failures,
                events: self.events,
            },
            factory,
            self.classifier,
        ));
        let handle = RecoverHandle {
            control: shared.clone(),
        };
        Ok((handle, Recover::new(shared)))
    }
}

/// What [`RecoverBuilder::build`] returns: the handle and the service
/// (tower's `(handle, worker)` convention, the service in place of a
/// worker).
pub type RecoverPair<S, F, C = ErrorsAsFailures> = (RecoverHandle, Recover<S, F, C>);
