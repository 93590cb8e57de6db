//! The breaker's shared state: the state word, admission and recording.
//! No tower types: it is driven by `try_acquire` and `Permit::finish`, so
//! it is tested without a runtime. Transitions are in `transitions.rs`,
//! probe permits in `probes.rs`, the permit itself in `permit.rs`.
//!
//! Hot path (closed, count window, no slow-call detection): one load of
//! the state word to admit; at completion one more load, then one load
//! of the window's counts when every slot holds a success (a healthy
//! service), else a load and a store of its cursor and a load of the
//! slot (plus three atomics only when the slot's value changes). No
//! lock, no allocation, no clock. Transitions take a mutex that the
//! closed path never touches.

// Loom's atomics under `--cfg loom`: the state word and the probe
// permits are model-checked (see `loom_models` below).
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tower_hardening_core::stripe::Held;

use tokio::time::Instant;
use tower_hardening_core::sync::lock;
use tower_hardening_core::{CircuitOpen, CircuitState, Event, EventKind, EventSink, names};

use crate::permit::{CallEnd, Permit, PermitKind};
use crate::transitions::Transitions;
use crate::window::{CachePadded, CallRecord, Window, WindowCounts};

/// Settings fixed at build time (validated by the builder).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The breaker's own name, in errors and events (`"{name}/{key}"` for
    /// a keyed breaker).
    pub(crate) name: Arc<str>,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) minimum_calls: u32,
    pub(crate) wait_in_open: Duration,
    pub(crate) max_wait_in_open: Duration,
    pub(crate) half_open_permits: u32,
    /// How long a half-open probe may take before it counts as failed.
    pub(crate) probe_timeout: Duration,
    pub(crate) events: Option<EventSink>,
}

/// The metric handles a breaker writes, registered once: under an outage
/// every call is a rejection, and a registry lookup per call would cost
/// more than the rest of it.
#[derive(Debug, Clone)]
pub(crate) struct BreakerMetrics {
    pub(crate) rejected: metrics::Counter,
    /// The state gauge; none for the breakers of a keyed layer, whose
    /// states are read from its handle.
    pub(crate) state: Option<metrics::Gauge>,
    /// One transition counter per (from, to) pair that can happen (see
    /// [`possible_transition`]), indexed `from * STATES + to`; `None` for
    /// a pair that cannot. Registered here, with the recorder in force at
    /// build, since a transition happens on whatever thread finishes a
    /// call (or in a recovery task), outside any local recorder.
    transitions: Arc<[Option<metrics::Counter>]>,
}

/// How many `CircuitState`s there are.
const STATES: u8 = 6;

/// Whether a breaker can move from `from` to `to`: the automatic moves
/// (closed -> open, open -> half-open, half-open -> open or closed) and
/// every manual one (`set_manual`: from any other state to closed,
/// half-open, forced-open, disabled or metrics-only). Nothing but a trip
/// enters `open`, and no state moves to itself.
pub(crate) fn possible_transition(from: CircuitState, to: CircuitState) -> bool {
    use CircuitState::{Closed, HalfOpen, Open};
    if from == to {
        return false;
    }
    match to {
        Open => matches!(from, Closed | HalfOpen),
        _ => true,
    }
}

impl BreakerMetrics {
    /// Registers the handles of a breaker labelled `label`: the layer's
    /// name, never a key of a keyed breaker (request data must not make
    /// metric series).
    pub(crate) fn register(label: Arc<str>, with_state_gauge: bool) -> Self {
        let transitions = (0..STATES * STATES)
            .map(|index| {
                let from = CircuitState::from_index(index / STATES)?;
                let to = CircuitState::from_index(index % STATES)?;
                possible_transition(from, to).then(|| {
                    metrics::counter!(
                        names::CIRCUIT_TRANSITIONS_TOTAL,
                        names::LABEL_BREAKER => label.clone(),
                        names::LABEL_FROM => from.as_str(),
                        names::LABEL_TO => to.as_str()
                    )
                })
            })
            .collect();
        BreakerMetrics {
            rejected: metrics::counter!(names::CIRCUIT_REJECTED_TOTAL, names::LABEL_BREAKER => label.clone()),
            state: with_state_gauge.then(
                || metrics::gauge!(names::CIRCUIT_STATE, names::LABEL_BREAKER => label.clone()),
            ),
            transitions,
        }
    }

    pub(crate) fn transition(&self, from: CircuitState, to: CircuitState) {
        let index = usize::from(from.as_index() * STATES + to.as_index());
        debug_assert!(possible_transition(from, to), "{from} -> {to}");
        if let Some(Some(counter)) = self.transitions.get(index) {
            counter.increment(1);
        }
    }
}

/// The state word: `generation << 8 | state index`. Every transition bumps
/// the generation, so a call admitted under one state never counts towards
/// another.
pub(crate) fn pack(generation: u64, state: CircuitState) -> u64 {
    (generation << 8) | u64::from(state.as_index())
}

pub(crate) fn unpack(word: u64) -> (u64, CircuitState) {
    let state = CircuitState::from_index((word & 0xff) as u8).unwrap_or(CircuitState::Closed);
    (word >> 8, state)
}

/// The state every clone of a breaker layer and its services shares.
#[derive(Debug)]
pub(crate) struct BreakerState {
    pub(crate) settings: Settings,
    /// Read by every call; padded away from the `Arc` counts that every
    /// call writes.
    pub(crate) word: CachePadded<AtomicU64>,
    /// Half-open probe permits (see `probes.rs`).
    pub(crate) probes: AtomicU64,
    /// Nanoseconds after `base` when an open breaker lets probes through.
    pub(crate) open_until: AtomicU64,
    /// Nanoseconds after `base` when a probe permit was last asked for.
    pub(crate) last_probe_at: AtomicU64,
    rejected: AtomicU64,
    /// The state generation whose first rejection was published.
    last_rejection_event: AtomicU64,
    pub(crate) metrics: BreakerMetrics,
    pub(crate) window: Window,
    base: Instant,
    pub(crate) transitions: Mutex<Transitions>,
}

impl BreakerState {
    pub(crate) fn new(settings: Settings, window: Window, metrics: BreakerMetrics) -> Self {
        let now = Instant::now();
        if let Some(gauge) = &metrics.state {
            gauge.set(f64::from(CircuitState::Closed.as_index()));
        }
        BreakerState {
            settings,
            word: CachePadded(AtomicU64::new(pack(0, CircuitState::Closed))),
            probes: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            last_probe_at: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_rejection_event: AtomicU64::new(u64::MAX),
            metrics,
            window,
            base: now,
            transitions: Mutex::new(Transitions::new(now)),
        }
    }

    pub(crate) fn nanos_since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a permitted call must note its start time.
    pub(crate) fn times_calls(&self) -> bool {
        self.settings.slow_call_duration.is_some()
    }

    pub(crate) fn state(&self) -> CircuitState {
        unpack(self.word.load(Ordering::Acquire)).1
    }

    /// Admits or rejects one call; its permit holds this state's own `Arc`.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<Permit, CircuitOpen> {
        self.try_acquire_via(|| Held::Direct(Arc::clone(self)))
    }

    /// Admits or rejects one call; its permit holds what `hold` gives (a
    /// stripe's reference, from a service).
    #[inline]
    pub(crate) fn try_acquire_via(
        &self,
        hold: impl Fn() -> Held<BreakerState>,
    ) -> Result<Permit, CircuitOpen> {
        let word = self.word.load(Ordering::Acquire);
        if word & 0xff == u64::from(CircuitState::Closed.as_index()) {
            return Ok(Permit::new(hold(), word >> 8, PermitKind::Windowed));
        }
        self.try_acquire_slow(&hold)
    }

    #[cold]
    fn try_acquire_slow(
        &self,
        hold: &dyn Fn() -> Held<BreakerState>,
    ) -> Result<Permit, CircuitOpen> {
        let permit = |generation, kind| Permit::new(hold(), generation, kind);
        loop {
            let word = self.word.load(Ordering::Acquire);
            let (generation, state) = unpack(word);
            match state {
                CircuitState::Closed | CircuitState::MetricsOnly => {
                    return Ok(permit(generation, PermitKind::Windowed));
                }
                CircuitState::Disabled => {
                    return Ok(permit(generation, PermitKind::Untracked));
                }
                // No end is known: the open wait is the hint.
                CircuitState::ForcedOpen => {
                    return Err(self
                        .reject(generation, self.settings.wait_in_open)
                        .in_state(CircuitState::ForcedOpen));
                }
                CircuitState::Open => {
                    let now = self.nanos_since_base(Instant::now());
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(generation, Duration::from_nanos(until - now)));
                    }
                    self.open_to_half_open(word);
                }
                CircuitState::HalfOpen => {
                    if self.take_probe(generation)? {
                        return Ok(permit(generation, PermitKind::Probe));
                    }
                    // The half-open period this word described is over; look again.
                }
            }
        }
    }

    /// Counts a rejection. The event is published for the first rejection
    /// of each state period only: under an outage every call is rejected,
    /// and a flood of identical events would push the transitions out of
    /// slow subscribers' buffers. The counters carry the totals.
    pub(crate) fn reject(&self, generation: u64, retry_after: Duration) -> CircuitOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
        if self.last_rejection_event.load(Ordering::Relaxed) != generation
            && self
                .last_rejection_event
                .swap(generation, Ordering::Relaxed)
                != generation
        {
            tower_hardening_core::publish(self.settings.events.as_ref(), || {
                Event::new(
                    self.settings.name.clone(),
                    EventKind::CallRejected {
                        rejection: tower_hardening_core::RejectionKind::CircuitOpen,
                    },
                )
            });
        }
        CircuitOpen::new(self.settings.name.clone()).with_retry_after(retry_after)
    }

    /// Records how a permitted call ended, and trips or settles the breaker.
    #[inline]
    pub(crate) fn complete(&self, generation: u64, kind: PermitKind, end: CallEnd) {
        match kind {
            PermitKind::Untracked => {}
            PermitKind::Windowed => {
                let CallEnd::Finished { failure, slow } = end else {
                    return;
                };
                let word = self.word.load(Ordering::Acquire);
                if word >> 8 != generation {
                    return;
                }
                let now = if self.window.needs_clock() {
                    self.nanos_since_base(Instant::now())
                } else {
                    0
                };
                let look = self
                    .window
                    .record(CallRecord { failure, slow }, now, generation);
                if look && unpack(word).1 == CircuitState::Closed {
                    self.check_trip(word, now);
                }
            }
            PermitKind::Probe => match end {
                CallEnd::Cancelled | CallEnd::Ignored => self.give_back_probe(generation),
                CallEnd::Finished { failure, slow } => {
                    self.probe_finished(generation, failure, slow);
                }
            },
        }
    }

    /// Opens the breaker if the window's rates call for it. Counts torn
    /// by a writer caught mid-update are not acted on: the window asks
    /// that writer (or the next) to look again once its update landed.
    #[cold]
    fn check_trip(&self, word: u64, now: u64) {
        let Some(counts) = self.window.counts_for_trip(now) else {
            return;
        };
        // Failures below the minimum: every call looks until one reaches
        // it, so that call decides whatever its outcome.
        self.window.set_below_minimum(
            counts.calls < u64::from(self.settings.minimum_calls)
                && (counts.failures > 0 || counts.slow > 0),
        );
        if self.should_trip(counts) {
            self.closed_to_open(word);
        }
    }

    pub(crate) fn exceeds(count: u64, of: u64, threshold: f64) -> bool {
        // Exact for counts up to 2^53; beyond, off by a rounding step.
        of > 0 && count as f64 / of as f64 >= threshold
    }

    fn should_trip(&self, counts: WindowCounts) -> bool {
        counts.is_consistent(self.window.capacity())
            && counts.calls >= u64::from(self.settings.minimum_calls)
            && (Self::exceeds(
                counts.failures,
                counts.calls,
                self.settings.failure_rate_threshold,
            ) || Self::exceeds(
                counts.slow,
                counts.calls,
                self.settings.slow_call_rate_threshold,
            ))
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let (generation, state) = unpack(self.word.load(Ordering::Acquire));
        let counts = self.window.settled_counts(self.nanos_since_base(now));
        let last_transition = lock(&self.transitions).last_transition;
        let until_probe = match state {
            CircuitState::Open => {
                let until = self.open_until.load(Ordering::Acquire);
                Some(Duration::from_nanos(
                    until.saturating_sub(self.nanos_since_base(now)),
                ))
            }
            _ => None,
        };
        let probes_in_flight = match state {
            CircuitState::HalfOpen => self.probes_in_flight(generation),
            _ => 0,
        };
        Snapshot {
            state,
            generation,
            counts,
            probes_in_flight,
            rejected: self.rejected.load(Ordering::Relaxed),
            last_transition,
            until_probe,
        }
    }
}

/// A reading of the state for `BreakerHandle::snapshot`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) state: CircuitState,
    pub(crate) generation: u64,
    pub(crate) counts: WindowCounts,
    pub(crate) probes_in_flight: u32,
    pub(crate) rejected: u64,
    pub(crate) last_transition: Instant,
    pub(crate) until_probe: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{BreakerBuilder, SlidingWindow};

    fn state_of(builder: BreakerBuilder) -> Arc<BreakerState> {
        let metrics = BreakerMetrics::register("test".into(), true);
        builder.new_state("test".into(), metrics)
    }

    fn call(state: &Arc<BreakerState>, failure: bool) -> bool {
        match state.try_acquire() {
            Ok(permit) => {
                permit.finish(Some(failure));
                true
            }
            Err(_) => false,
        }
    }

    /// 2.2 million successes in a 60 s window used to overflow the packed
    /// counts, and the capacity check then kept the breaker from ever
    /// opening: with a 1% threshold, it must open on the failure that
    /// reaches 1%.
    #[tokio::test(start_paused = true)]
    async fn a_time_window_trips_at_volume() {
        let state = state_of(
            BreakerBuilder::default()
                .sliding_window(SlidingWindow::time(Duration::from_secs(60)))
                .minimum_calls(1)
                .failure_rate_threshold(0.01),
        );
        for _ in 0..2_200_000 {
            call(&state, false);
        }
        let counts = state.snapshot().counts;
        assert_eq!((counts.calls, counts.failures), (2_200_000, 0));
        // 22,223 failures is the first count at or above 1% of the calls
        // (22,223 / 2,222,223).
        for _ in 0..22_222 {
            assert!(call(&state, true));
        }
        assert_eq!(state.state(), CircuitState::Closed);
        assert!(call(&state, true));
        assert_eq!(state.state(), CircuitState::Open);
    }

    /// The rates are checked when the window reaches its minimum number
    /// of calls, whatever that call's outcome: failures recorded while
    /// the window was below it are not forgotten because the calls after
    /// them succeeded.
    #[tokio::test(start_paused = true)]
    async fn the_call_that_reaches_the_minimum_checks_the_rates() {
        let state = state_of(
            BreakerBuilder::default()
                .sliding_window(SlidingWindow::count(20))
                .minimum_calls(20)
                .failure_rate_threshold(0.25),
        );
        // Six failures among the first 13 calls, then successes.
        for i in 0..19 {
            assert!(call(&state, [0, 1, 2, 10, 11, 12].contains(&i)));
        }
        assert_eq!(state.state(), CircuitState::Closed);
        // The 20th call, a success, brings the window to its minimum with
        // a failure rate of 0.3.
        assert!(call(&state, false));
        assert_eq!(state.state(), CircuitState::Open);
    }

    /// Leaving half-open clears the probe word: no free permit of an ended
    /// period is left for a later one to find.
    #[tokio::test(start_paused = true)]
    async fn leaving_half_open_clears_the_probes() {
        let state = state_of(
            BreakerBuilder::default()
                .sliding_window(SlidingWindow::count(2))
                .minimum_calls(2)
                .half_open_permits(3)
                .failure_rate_threshold(0.3)
                .wait_in_open(Duration::from_secs(1)),
        );
        call(&state, true);
        call(&state, true);
        assert_eq!(state.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = state.try_acquire().expect("a probe");
        assert_eq!(state.state(), CircuitState::HalfOpen);
        probe.finish(Some(true));
        assert_eq!(state.state(), CircuitState::Open);
        assert_eq!(state.probes.load(Ordering::Acquire), 0);
        // The same after closing.
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            let probe = state.try_acquire().expect("a probe");
            probe.finish(Some(false));
        }
        assert_eq!(state.state(), CircuitState::Closed);
        assert_eq!(state.probes.load(Ordering::Acquire), 0);
    }

    /// A failing call admitted right after a reset is counted, however
    /// large the window: the window is emptied before the new generation
    /// is published, so no clearing still under way can erase it. (Before,
    /// with a million slots and the cursor half-way, the clearing erased
    /// it in every round.)
    #[test]
    fn a_failure_right_after_a_reset_is_never_erased() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        for round in 0..3 {
            let state = state_of(
                BreakerBuilder::default()
                    .sliding_window(SlidingWindow::count(1_000_000))
                    .minimum_calls(1_000_000),
            );
            for i in 0..500_000 {
                call(&state, i % 2 == 0);
            }
            let before = state.word.load(Ordering::Acquire) >> 8;
            std::thread::scope(|s| {
                s.spawn(|| state.set_manual(CircuitState::Closed));
                // The first call admitted under the new generation fails.
                let permit = loop {
                    let permit = state.try_acquire().unwrap();
                    if permit.generation() != before {
                        break permit;
                    }
                    permit.finish(None);
                    std::hint::spin_loop();
                };
                permit.finish(Some(true));
            });
            let counts = state.snapshot().counts;
            assert_eq!(
                (counts.calls, counts.failures),
                (1, 1),
                "round {round}: the failure after the reset is in the window"
            );
        }
    }

    /// A call admitted before a reset is never counted after it, however
    /// its `finish` interleaves with the reset: count and time windows.
    #[test]
    fn a_call_admitted_before_a_reset_never_lands_after_it() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        for window in [
            SlidingWindow::count(10),
            SlidingWindow::time(Duration::from_secs(60)),
        ] {
            let state = state_of(
                BreakerBuilder::default()
                    .sliding_window(window)
                    .minimum_calls(100),
            );
            let start = std::sync::Barrier::new(2);
            let rounds = 20_000;
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..rounds {
                        start.wait();
                        state.set_manual(CircuitState::Closed);
                        start.wait();
                    }
                });
                let mut landed = 0;
                for _ in 0..rounds {
                    let stale = state.try_acquire().unwrap();
                    start.wait();
                    stale.finish(Some(true));
                    start.wait();
                    landed += state.snapshot().counts.failures;
                }
                // Asserted once both threads are done with the barrier.
                assert_eq!(landed, 0, "{window:?}: stale failures counted");
            });
        }
    }

    /// A call admitted before a reset and finishing after it is not
    /// recorded into the fresh window (the serial case of the race above).
    #[tokio::test(start_paused = true)]
    async fn a_call_from_before_a_reset_is_not_recorded_after_it() {
        let state = state_of(
            BreakerBuilder::default()
                .sliding_window(SlidingWindow::count(10))
                .minimum_calls(10),
        );
        let stale = state.try_acquire().unwrap();
        state.set_manual(CircuitState::Closed);
        stale.finish(Some(true));
        assert_eq!(state.snapshot().counts, WindowCounts::default());
    }
}

/// Model checks of the half-open probe permits with loom (`RUSTFLAGS="--cfg
/// loom" cargo test -p tower-hardening-breaker --lib --release loom_`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::layer::BreakerBuilder;
    use loom::thread;

    fn half_open(permits: u32) -> Arc<BreakerState> {
        let metrics = BreakerMetrics::register("model".into(), false);
        let state = BreakerBuilder::default()
            .half_open_permits(permits)
            .new_state("model".into(), metrics);
        state.set_manual(CircuitState::HalfOpen);
        state
    }

    /// Three callers race for two probe permits: at most two are let
    /// through, and a permit handed back (a cancelled probe) is taken by
    /// exactly one later caller.
    #[test]
    fn loom_half_open_admits_at_most_its_permits() {
        loom::model(|| {
            let state = half_open(2);
            let callers: Vec<_> = (0..3)
                .map(|_| {
                    let state = state.clone();
                    thread::spawn(move || state.try_acquire().ok())
                })
                .collect();
            let mut probes: Vec<Permit> = callers
                .into_iter()
                .filter_map(|caller| caller.join().unwrap())
                .collect();
            assert_eq!(probes.len(), 2, "two permits, three callers");
            assert_eq!(
                state.probes_in_flight(unpack(state.word.load(Ordering::Acquire)).0),
                2
            );
            // A cancelled probe hands its permit back: one more caller
            // gets it, the next does not.
            probes.pop().unwrap().finish(None);
            let again = state.try_acquire();
            assert!(again.is_ok());
            assert!(state.try_acquire().is_err());
            drop(again);
            drop(probes);
        });
    }

    /// A probe handed back while an operator closes the breaker: no free
    /// permit outlives its half-open period, whichever comes first.
    #[test]
    fn loom_a_permit_handed_back_never_outlives_its_period() {
        loom::model(|| {
            let state = half_open(1);
            let probe = state.try_acquire().unwrap();
            let cancel = thread::spawn(move || probe.finish(None));
            state.set_manual(CircuitState::Closed);
            cancel.join().unwrap();
            assert_eq!(state.state(), CircuitState::Closed);
            assert_eq!(
                state.probes.load(Ordering::Acquire),
                0,
                "no permit left over"
            );
        });
    }
}
