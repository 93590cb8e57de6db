use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::{CircuitState, HealthState, Priority, RejectionKind};

/// Something worth telling operators happened in a layer or the monitor.
///
/// ```
/// use tower_hardening_core::{CircuitState, Event, EventKind};
///
/// let event = Event::new(
///     "model-inference",
///     EventKind::CircuitTransition { from: CircuitState::Closed, to: CircuitState::Open },
/// );
/// assert_eq!(event.service(), "model-inference");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    service: Arc<str>,
    at: SystemTime,
    kind: EventKind,
}

impl Event {
    /// An event about `service` (a service, breaker or pool name), stamped
    /// with the wall-clock time now.
    pub fn new(service: impl Into<Arc<str>>, kind: EventKind) -> Self {
        Event {
            service: service.into(),
            at: SystemTime::now(),
            kind,
        }
    }

    /// The service, breaker or pool the event is about.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// When it happened (wall clock, for logs and dashboards).
    pub fn at(&self) -> SystemTime {
        self.at
    }

    /// What happened.
    pub fn kind(&self) -> &EventKind {
        &self.kind
    }
}

/// What an [`Event`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A circuit breaker changed state.
    CircuitTransition {
        /// The state before.
        from: CircuitState,
        /// The state after.
        to: CircuitState,
    },
    /// A layer turned a call away without calling the inner service.
    CallRejected {
        /// Which rejection.
        rejection: RejectionKind,
    },
    /// A request failed on its last allowed attempt, or the retry budget
    /// ran out.
    RetryExhausted {
        /// Attempts made, the first included.
        attempts: u32,
        /// Whether the budget (not the attempt limit) stopped it.
        budget_exhausted: bool,
    },
    /// A lease was taken back from its holder (its TTL passed, or the pool
    /// shut down).
    LeaseReclaimed {
        /// The lease's id.
        lease_id: u64,
        /// Who held it.
        owner: Arc<str>,
    },
    /// Work of a priority was refused to protect the process.
    Shed {
        /// The refused work's priority.
        priority: Priority,
    },
    /// A step of rebuilding a service.
    RecoveryStep {
        /// The attempt number, from 1.
        attempt: u32,
        /// What happened at this step.
        step: RecoveryStep,
    },
    /// Memory use crossed the pressure threshold (or fell back below it).
    MemoryPressure {
        /// Whether pressure is now on.
        active: bool,
        /// Bytes in use when measured.
        used_bytes: u64,
        /// The configured limit in bytes.
        limit_bytes: u64,
    },
    /// A performance threshold was crossed (or the figure fell back below
    /// it, with hysteresis).
    PerformanceAlert {
        /// Which figure: `process_cpu_percent`, `memory_percent` or
        /// `event_loop_p99_seconds`.
        metric: &'static str,
        /// Whether the alert is now on.
        active: bool,
        /// The figure when measured.
        value: f64,
        /// The threshold.
        threshold: f64,
    },
    /// A service's (or the process's) health changed.
    HealthChanged {
        /// The state before.
        from: HealthState,
        /// The state after.
        to: HealthState,
    },
    /// An upstream took an endpoint out of rotation (outlier ejection).
    EndpointEjected {
        /// The endpoint, as configured (its URI).
        endpoint: Arc<str>,
        /// How long it stays out: the base ejection time times `ejections`.
        duration: Duration,
        /// How many times it has been ejected, this one included.
        ejections: u32,
        /// What ejected it: `consecutive_failures` or `failure_rate`.
        reason: &'static str,
    },
    /// An ejected endpoint's ejection time ended: it is in rotation again.
    EndpointReturned {
        /// The endpoint, as configured (its URI).
        endpoint: Arc<str>,
    },
}

/// One step of a service rebuild, reported in [`EventKind::RecoveryStep`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecoveryStep {
    /// A rebuild attempt began.
    Started,
    /// The attempt succeeded; the service is back.
    Succeeded,
    /// The attempt failed; the next one waits `retry_in`, if any is left.
    Failed {
        /// Why it failed.
        error: Arc<str>,
        /// The wait before the next attempt, `None` when none is left.
        retry_in: Option<Duration>,
    },
    /// Every attempt failed; the service stays down until triggered again.
    GaveUp,
}

/// A cheap, cloneable sender of [`Event`]s that every layer can hold.
///
/// It never blocks and never fails the request path: with nobody
/// subscribed an event is dropped, and a subscriber that falls behind
/// loses the oldest events (tokio's `broadcast` semantics) rather than
/// slowing anyone down.
///
/// ```
/// use tower_hardening_core::{Event, EventKind, EventSink, Priority};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = EventSink::new(64);
/// sink.emit(Event::new("cpu", EventKind::Shed { priority: Priority::LOW })); // nobody listens: dropped
///
/// let mut events = sink.subscribe();
/// sink.emit(Event::new("cpu", EventKind::Shed { priority: Priority::LOW }));
/// let event = events.recv().await.unwrap();
/// assert_eq!(event.kind(), &EventKind::Shed { priority: Priority::LOW });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EventSink {
    sender: broadcast::Sender<Event>,
}

impl EventSink {
    /// A sink whose subscribers each buffer up to `capacity` events
    /// (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventSink { sender }
    }

    /// A new receiver of every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Whether anyone is subscribed; lets a caller skip building an event
    /// nobody will read.
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Sends `event` to every subscriber; does nothing when there is none.
    pub fn emit(&self, event: Event) {
        // An error only means nobody is subscribed, which is fine.
        let _ = self.sender.send(event);
    }

    /// Builds and sends an event only when someone is subscribed.
    pub fn emit_with(&self, event: impl FnOnce() -> Event) {
        if self.has_subscribers() {
            self.emit(event());
        }
    }
}

impl Default for EventSink {
    /// A sink with room for 1,024 events per subscriber.
    fn default() -> Self {
        EventSink::new(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_without_subscribers_is_silent() {
        let sink = EventSink::new(1);
        assert!(!sink.has_subscribers());
        let mut built = false;
        sink.emit_with(|| {
            built = true;
            Event::new(
                "x",
                EventKind::Shed {
                    priority: Priority::LOW,
                },
            )
        });
        assert!(!built, "no event is built when nobody listens");
    }

    #[test]
    fn a_slow_subscriber_loses_old_events_not_the_sender() {
        let sink = EventSink::new(2);
        let mut rx = sink.subscribe();
        for i in 0..5u64 {
            sink.emit(Event::new(
                "pool",
                EventKind::LeaseReclaimed {
                    lease_id: i,
                    owner: "o".into(),
                },
            ));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
        let next = rx.try_recv().unwrap();
        assert_eq!(
            next.kind(),
            &EventKind::LeaseReclaimed {
                lease_id: 3,
                owner: "o".into()
            }
        );
    }
}
