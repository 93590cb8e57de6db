use std::sync::Arc;
use std::time::{Duration, Instant};

use tower_hardening_core::CircuitState;

use crate::state::BreakerState;

/// Reads and steers one breaker. Cheap to clone; every clone (and every
/// service of the layer it came from) sees the same breaker.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    state: Arc<BreakerState>,
}

impl BreakerHandle {
    pub(crate) fn new(state: Arc<BreakerState>) -> Self {
        BreakerHandle { state }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.state.settings.name
    }

    /// The current state (one atomic load).
    pub fn state(&self) -> CircuitState {
        self.state.state()
    }

    /// A reading of the state, the window and the counters.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let reading = self.state.snapshot();
        let counts = reading.counts;
        let decided =
            counts.calls >= u64::from(self.state.settings.minimum_calls) && counts.calls > 0;
        let rate = |n: u64| decided.then(|| n as f64 / counts.calls as f64);
        BreakerSnapshot {
            state: reading.state,
            generation: reading.generation,
            failure_rate: rate(counts.failures),
            slow_call_rate: rate(counts.slow),
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            probes_in_flight: reading.probes_in_flight,
            rejected_total: reading.rejected,
            last_transition: reading.last_transition.into_std(),
            until_probe: reading.until_probe,
        }
    }

    /// Moves to `to` as [`force_open`](Self::force_open),
    /// [`disable`](Self::disable), [`metrics_only`](Self::metrics_only),
    /// [`half_open`](Self::half_open) or [`reset`](Self::reset) (for
    /// `Closed`) would, but only if the breaker is still in the period
    /// `generation` (from a [`snapshot`](Self::snapshot)): nobody and
    /// nothing changed it since. Returns the new period's generation, or
    /// `None` (and changes nothing) if it had moved on. `Open` is not a
    /// manual state: it is refused the same way.
    ///
    /// For automation that must never undo a person's change: read, decide,
    /// then move only from what was read.
    pub fn transition_if(&self, generation: u64, to: CircuitState) -> Option<u64> {
        if to == CircuitState::Open {
            return None;
        }
        self.state.set_manual_if(generation, to)
    }

    /// Rejects every call until [`reset`](Self::reset) (or another manual
    /// state). For operators and the recovery manager.
    ///
    /// The window keeps the calls of the state before (a snapshot still
    /// shows their rates). A call admitted before the switch that finishes
    /// just after it may still be counted there, in the period it was
    /// admitted in; no call made afterwards is.
    pub fn force_open(&self) {
        self.state.set_manual(CircuitState::ForcedOpen);
    }

    /// Lets every call through and records none of the calls it lets
    /// through (a call admitted before the switch is counted as with
    /// [`force_open`](Self::force_open)).
    pub fn disable(&self) {
        self.state.set_manual(CircuitState::Disabled);
    }

    /// Lets every call through, records and reports rates, never opens
    /// (a dry run of the thresholds). Starts from an empty window.
    pub fn metrics_only(&self) {
        self.state.set_manual(CircuitState::MetricsOnly);
    }

    /// To `HalfOpen` now, whatever the state: the next `half_open_permits`
    /// calls are probes that close or reopen the breaker as after an open
    /// wait. For a recovery manager that has just rebuilt the dependency
    /// and wants traffic to confirm it.
    pub fn half_open(&self) {
        self.state.set_manual(CircuitState::HalfOpen);
    }

    /// Back to `Closed` with an empty window and the open wait back at
    /// `wait_in_open`.
    pub fn reset(&self) {
        self.state.set_manual(CircuitState::Closed);
    }
}

/// One reading of a breaker, from [`BreakerHandle::snapshot`].
///
/// With the `serde` feature it serializes with these field names (snake
/// case), `until_probe` in seconds as a float, and without
/// `last_transition` (a monotonic instant means nothing outside this
/// process).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state.
    pub state: CircuitState,
    /// Which period of that state: it changes with every change of state,
    /// a manual one to the same state included (a second `force_open`),
    /// so that whoever steers the breaker can tell whether anyone else
    /// did since it looked (see [`BreakerHandle::transition_if`]).
    pub generation: u64,
    /// Failures over calls in the window; `None` until the window holds
    /// `minimum_calls` calls.
    pub failure_rate: Option<f64>,
    /// Slow calls over calls in the window; `None` until the window holds
    /// `minimum_calls` calls.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window (ignored and cancelled calls are not recorded).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// While half-open: probe calls let through and not finished yet
    /// (never more than `half_open_permits`); 0 in any other state.
    pub probes_in_flight: u32,
    /// Calls rejected since the breaker was built.
    pub rejected_total: u64,
    /// When the state last changed (when it was built, if never).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub last_transition: Instant,
    /// While open: how long until the next call is let through as a probe.
    #[cfg_attr(feature = "serde", serde(serialize_with = "seconds"))]
    pub until_probe: Option<Duration>,
}

#[cfg(feature = "serde")]
fn seconds<S: serde::Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser.serialize_f64(d.as_secs_f64()),
        None => ser.serialize_none(),
    }
}
