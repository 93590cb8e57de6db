//! State transitions: the rare path, under one mutex the closed path never
//! touches.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tower_hardening_core::sync::lock;
use tower_hardening_core::{CircuitState, Event, EventKind};

use crate::state::{BreakerState, pack, unpack};

/// What the transition mutex guards: the rare-path bookkeeping.
#[derive(Debug)]
pub(crate) struct Transitions {
    consecutive_opens: u32,
    pub(crate) last_transition: Instant,
    probe_successes: u32,
    probe_failures: u32,
    probe_slow: u32,
}

impl Transitions {
    pub(crate) fn new(now: Instant) -> Self {
        Transitions {
            consecutive_opens: 0,
            last_transition: now,
            probe_successes: 0,
            probe_failures: 0,
            probe_slow: 0,
        }
    }
}

/// The transition lock, and the event to announce once it is released:
/// subscribers and tracing are never called with the lock held (a slow
/// subscriber or log sink would stall every call that finishes).
pub(crate) struct TransitionGuard<'a> {
    state: &'a BreakerState,
    held: Option<MutexGuard<'a, Transitions>>,
    announce: Option<Event>,
}

impl std::ops::Deref for TransitionGuard<'_> {
    type Target = Transitions;

    fn deref(&self) -> &Transitions {
        self.held.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for TransitionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Transitions {
        self.held.as_mut().expect("held until dropped")
    }
}

impl Drop for TransitionGuard<'_> {
    fn drop(&mut self) {
        self.held = None;
        if let Some(event) = self.announce.take() {
            tower_hardening_core::publish(self.state.settings.events.as_ref(), || event);
        }
    }
}

impl BreakerState {
    fn lock_transitions(&self) -> TransitionGuard<'_> {
        TransitionGuard {
            state: self,
            held: Some(lock(&self.transitions)),
            announce: None,
        }
    }

    pub(crate) fn closed_to_open(&self, seen: u64) {
        let mut transitions = self.lock_transitions();
        if self.word.load(Ordering::Acquire) != seen {
            return;
        }
        self.open(&mut transitions, seen, CircuitState::Closed);
    }

    pub(crate) fn open_to_half_open(&self, seen: u64) {
        let mut transitions = self.lock_transitions();
        if self.word.load(Ordering::Acquire) != seen {
            return;
        }
        let generation = (seen >> 8) + 1;
        transitions.probe_successes = 0;
        transitions.probe_failures = 0;
        transitions.probe_slow = 0;
        self.fill_probes(generation);
        self.publish(
            &mut transitions,
            generation,
            CircuitState::Open,
            CircuitState::HalfOpen,
        );
    }

    /// Every probe of `generation` outlived the probe deadline: they are
    /// failed probes, and the breaker opens again (their calls, when they
    /// finish, find another generation and are not counted).
    pub(crate) fn probes_overdue(&self, generation: u64) {
        let mut transitions = self.lock_transitions();
        let word = self.word.load(Ordering::Acquire);
        if word != pack(generation, CircuitState::HalfOpen) {
            return;
        }
        self.open(&mut transitions, word, CircuitState::HalfOpen);
    }

    pub(crate) fn probe_finished(&self, generation: u64, failure: bool, slow: bool) {
        let mut transitions = self.lock_transitions();
        let word = self.word.load(Ordering::Acquire);
        if word != pack(generation, CircuitState::HalfOpen) {
            return;
        }
        if failure {
            transitions.probe_failures += 1;
        } else {
            transitions.probe_successes += 1;
        }
        if slow {
            transitions.probe_slow += 1;
        }
        let permits = self.settings.half_open_permits;
        // Decide as soon as the outcome is certain: enough failures (or
        // slow calls) that the remaining probes cannot bring the rate under
        // the threshold reopen at once; otherwise wait for every probe.
        if Self::exceeds(
            u64::from(transitions.probe_failures),
            u64::from(permits),
            self.settings.failure_rate_threshold,
        ) || Self::exceeds(
            u64::from(transitions.probe_slow),
            u64::from(permits),
            self.settings.slow_call_rate_threshold,
        ) {
            self.open(&mut transitions, word, CircuitState::HalfOpen);
        } else if transitions.probe_failures + transitions.probe_successes >= permits {
            transitions.consecutive_opens = 0;
            // Emptied before the new generation is published: no call of
            // it exists yet to be erased, and no older call is counted in it.
            self.window.reset(generation + 1);
            self.publish(
                &mut transitions,
                generation + 1,
                CircuitState::HalfOpen,
                CircuitState::Closed,
            );
        }
    }

    /// Opens the breaker for the next wait: `wait_in_open`, doubled for
    /// each consecutive trip, capped at `max_wait_in_open`. A wait past
    /// what the clock can represent means "until reset".
    fn open(&self, transitions: &mut TransitionGuard<'_>, seen: u64, from: CircuitState) {
        transitions.consecutive_opens = transitions.consecutive_opens.saturating_add(1);
        let doublings = transitions.consecutive_opens.saturating_sub(1).min(31);
        let wait = self
            .settings
            .wait_in_open
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.settings.max_wait_in_open)
            .min(self.settings.max_wait_in_open);
        let until = Instant::now()
            .checked_add(wait)
            .map_or(u64::MAX, |until| self.nanos_since_base(until));
        self.open_until.store(until, Ordering::Release);
        self.publish(transitions, (seen >> 8) + 1, from, CircuitState::Open);
    }

    /// Publishes a new state word; the world is told once the lock is
    /// released.
    fn publish(
        &self,
        transitions: &mut TransitionGuard<'_>,
        generation: u64,
        from: CircuitState,
        to: CircuitState,
    ) {
        self.word.store(pack(generation, to), Ordering::Release);
        if from == CircuitState::HalfOpen && to != CircuitState::HalfOpen {
            self.clear_probes();
        }
        if from == to {
            // A reset of a closed breaker (say) empties the window and
            // starts a new generation, but is no transition to report.
            return;
        }
        transitions.last_transition = Instant::now();
        let name = &self.settings.name;
        if let Some(gauge) = &self.metrics.state {
            gauge.set(f64::from(to.as_index()));
        }
        self.metrics.transition(from, to);
        // Announced when the lock is released; one transition per lock.
        transitions.announce = Some(Event::new(
            name.clone(),
            EventKind::CircuitTransition { from, to },
        ));
    }

    /// Moves to a manual state (`ForcedOpen`, `Disabled`, `MetricsOnly`),
    /// back to an empty `Closed`, or to a fresh `HalfOpen` whose probes
    /// decide as after an open wait.
    pub(crate) fn set_manual(&self, to: CircuitState) {
        let mut transitions = self.lock_transitions();
        let (generation, from) = unpack(self.word.load(Ordering::Acquire));
        self.move_to(&mut transitions, generation, from, to);
    }

    /// [`set_manual`](Self::set_manual) if the breaker is still in the
    /// period `expected`; the new period's generation if it moved.
    pub(crate) fn set_manual_if(&self, expected: u64, to: CircuitState) -> Option<u64> {
        let mut transitions = self.lock_transitions();
        let (generation, from) = unpack(self.word.load(Ordering::Acquire));
        if generation != expected {
            return None;
        }
        self.move_to(&mut transitions, generation, from, to);
        Some(generation + 1)
    }

    fn move_to(
        &self,
        transitions: &mut TransitionGuard<'_>,
        generation: u64,
        from: CircuitState,
        to: CircuitState,
    ) {
        if to == CircuitState::Closed {
            transitions.consecutive_opens = 0;
        }
        if to == CircuitState::HalfOpen {
            transitions.probe_successes = 0;
            transitions.probe_failures = 0;
            transitions.probe_slow = 0;
            self.fill_probes(generation + 1);
        }
        if matches!(to, CircuitState::Closed | CircuitState::MetricsOnly) {
            // Before publishing, as when closing after probes.
            self.window.reset(generation + 1);
        }
        self.publish(transitions, generation + 1, from, to);
    }
}
