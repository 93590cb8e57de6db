//! The breaker's shared state machine. No tower types: it is driven by
//! `try_acquire` and `Permit::complete`, so it is tested without a runtime.
//!
//! Hot path (closed, count window, no slow-call detection): one load of
//! the state word to admit; at completion one more load, then the window's
//! `fetch_add` (plus three more atomics only when the slot's value
//! changes). No lock, no allocation, no clock. Transitions take a mutex
//! that the closed path never touches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::{CircuitOpen, CircuitState, Event, EventKind, EventSink, names};

use crate::window::{CachePadded, CallRecord, Window, WindowCounts};

/// Settings fixed at build time (validated by the builder).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) minimum_calls: u32,
    pub(crate) wait_in_open: Duration,
    pub(crate) max_wait_in_open: Duration,
    pub(crate) half_open_permits: u32,
    pub(crate) events: Option<EventSink>,
}

/// The state word: `generation << 8 | state index`. Every transition bumps
/// the generation, so a call admitted under one state never counts towards
/// another.
fn pack(generation: u64, state: CircuitState) -> u64 {
    (generation << 8) | u64::from(state.as_index())
}

fn unpack(word: u64) -> (u64, CircuitState) {
    let state = CircuitState::from_index((word & 0xff) as u8).unwrap_or(CircuitState::Closed);
    (word >> 8, state)
}

/// What the transition mutex guards: the rare-path bookkeeping.
#[derive(Debug)]
struct Transitions {
    consecutive_opens: u32,
    last_transition: Instant,
    probe_successes: u32,
    probe_failures: u32,
    probe_slow: u32,
}

/// The state every clone of a breaker layer and its services shares.
#[derive(Debug)]
pub(crate) struct BreakerState {
    pub(crate) settings: Settings,
    /// Read by every call; padded away from the `Arc` counts that every
    /// call writes.
    word: CachePadded<AtomicU64>,
    /// `generation (low 32 bits) << 32 | free probe permits`, valid while
    /// half-open.
    probes: AtomicU64,
    /// Nanoseconds after `base` when an open breaker lets probes through.
    open_until: AtomicU64,
    rejected: AtomicU64,
    /// The state generation whose first rejection was published.
    last_rejection_event: AtomicU64,
    /// Registered once: under an outage every call is a rejection, and a
    /// registry lookup per call would cost more than the rest of it.
    rejected_counter: metrics::Counter,
    state_gauge: metrics::Gauge,
    window: Window,
    base: Instant,
    transitions: Mutex<Transitions>,
}

/// A call the breaker let through. It must end in [`Permit::finish`];
/// dropped unfinished, it counts as cancelled (nothing recorded, a probe
/// permit handed back), or as a failure if dropped during a panic.
///
/// Kept small and made of plain integers: it is moved through
/// `poll_ready`, `call` and the response future on every request.
#[derive(Debug)]
pub(crate) struct Permit {
    state: Arc<BreakerState>,
    generation: u64,
    /// Nanoseconds after the breaker's base instant, plus one, when the
    /// call started; 0 when calls are not timed.
    started: u64,
    /// `PermitKind` in the low byte, bit 8 set once finished. One word
    /// rather than two bytes: the permit is copied through every layer of
    /// future, and odd-sized fields there cost store-forwarding stalls.
    flags: u64,
}

const FINISHED: u64 = 1 << 8;

impl Permit {
    fn new(state: &Arc<BreakerState>, generation: u64, kind: PermitKind) -> Self {
        Permit {
            state: Arc::clone(state),
            generation,
            started: 0,
            flags: kind as u64,
        }
    }

    fn kind(&self) -> PermitKind {
        PermitKind::from_flags(self.flags)
    }

    /// Notes the start of the call, if slow calls are detected.
    #[inline]
    pub(crate) fn start(&mut self) {
        if self.state.times_calls() {
            self.started = self
                .state
                .nanos_since_base(Instant::now())
                .saturating_add(1);
        }
    }

    /// Records how the call ended: `None` for `Outcome::Ignored`.
    #[inline]
    pub(crate) fn finish(mut self, failure: Option<bool>) {
        self.flags |= FINISHED;
        let end = match failure {
            None => CallEnd::Ignored,
            Some(failure) => CallEnd::Finished {
                failure,
                slow: self.started != 0 && self.is_slow(),
            },
        };
        self.state.complete(self.generation, self.kind(), end);
    }

    fn is_slow(&self) -> bool {
        match self.state.settings.slow_call_duration {
            Some(limit) if self.started != 0 => {
                let elapsed = self
                    .state
                    .nanos_since_base(Instant::now())
                    .saturating_sub(self.started - 1);
                u128::from(elapsed) > limit.as_nanos()
            }
            _ => false,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.flags & FINISHED != 0 {
            return;
        }
        let end = if std::thread::panicking() {
            CallEnd::Finished {
                failure: true,
                slow: self.is_slow(),
            }
        } else {
            CallEnd::Cancelled
        };
        self.state.complete(self.generation, self.kind(), end);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum PermitKind {
    /// Closed or metrics-only: record into the window.
    Windowed,
    /// Half-open: one of the probe permits.
    Probe,
    /// Disabled: record nothing.
    Untracked,
}

impl PermitKind {
    fn from_flags(flags: u64) -> Self {
        match flags & 0xff {
            0 => PermitKind::Windowed,
            1 => PermitKind::Probe,
            _ => PermitKind::Untracked,
        }
    }
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallEnd {
    /// Finished and classified; `slow` if it took longer than the slow-call
    /// duration.
    Finished { failure: bool, slow: bool },
    /// Finished but classified `Ignored`: not evidence either way.
    Ignored,
    /// Dropped before finishing: not evidence either way.
    Cancelled,
}

impl BreakerState {
    pub(crate) fn new(settings: Settings, window: Window) -> Self {
        let now = Instant::now();
        let settings_name = settings.name.clone();
        let state = BreakerState {
            settings,
            word: CachePadded(AtomicU64::new(pack(0, CircuitState::Closed))),
            probes: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_rejection_event: AtomicU64::new(u64::MAX),
            rejected_counter: metrics::counter!(names::CIRCUIT_REJECTED_TOTAL, names::LABEL_BREAKER => settings_name.clone()),
            state_gauge: metrics::gauge!(names::CIRCUIT_STATE, names::LABEL_BREAKER => settings_name.clone()),
            window,
            base: now,
            transitions: Mutex::new(Transitions {
                consecutive_opens: 0,
                last_transition: now,
                probe_successes: 0,
                probe_failures: 0,
                probe_slow: 0,
            }),
        };
        state
            .state_gauge
            .set(f64::from(CircuitState::Closed.as_index()));
        state
    }

    fn nanos_since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a permitted call must note its start time.
    pub(crate) fn times_calls(&self) -> bool {
        self.settings.slow_call_duration.is_some()
    }

    pub(crate) fn state(&self) -> CircuitState {
        unpack(self.word.load(Ordering::Acquire)).1
    }

    /// Admits or rejects one call.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<Permit, CircuitOpen> {
        let word = self.word.load(Ordering::Acquire);
        if word & 0xff == u64::from(CircuitState::Closed.as_index()) {
            return Ok(Permit::new(self, word >> 8, PermitKind::Windowed));
        }
        self.try_acquire_slow()
    }

    #[cold]
    fn try_acquire_slow(self: &Arc<Self>) -> Result<Permit, CircuitOpen> {
        let permit = |generation, kind| Permit::new(self, generation, kind);
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
                CircuitState::ForcedOpen => return Err(self.reject(generation, Duration::ZERO)),
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

    /// Takes a probe permit of `generation`: `Ok(true)` taken, `Ok(false)`
    /// the generation moved on, `Err` none left.
    fn take_probe(&self, generation: u64) -> Result<bool, CircuitOpen> {
        let tag = generation & 0xffff_ffff;
        let mut probes = self.probes.load(Ordering::Acquire);
        loop {
            if probes >> 32 != tag {
                return Ok(false);
            }
            if probes & 0xffff_ffff == 0 {
                return Err(self.reject(generation, Duration::ZERO));
            }
            match self.probes.compare_exchange_weak(
                probes,
                probes - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(true),
                Err(actual) => probes = actual,
            }
        }
    }

    fn give_back_probe(&self, generation: u64) {
        let tag = generation & 0xffff_ffff;
        let mut probes = self.probes.load(Ordering::Acquire);
        while probes >> 32 == tag {
            match self.probes.compare_exchange_weak(
                probes,
                probes + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => probes = actual,
            }
        }
    }

    /// Counts a rejection. The event is published for the first rejection
    /// of each state period only: under an outage every call is rejected,
    /// and a flood of identical events would push the transitions out of
    /// slow subscribers' buffers. The counters carry the totals.
    fn reject(&self, generation: u64, retry_after: Duration) -> CircuitOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_counter.increment(1);
        if let Some(events) = &self.settings.events
            && self
                .last_rejection_event
                .swap(generation, Ordering::Relaxed)
                != generation
        {
            events.emit_with(|| {
                Event::new(
                    self.settings.name.clone(),
                    EventKind::CallRejected {
                        rejection: tower_hardening_core::RejectionKind::CircuitOpen,
                    },
                )
            });
        }
        CircuitOpen::new(self.settings.name.clone(), retry_after)
    }

    /// Records how a permitted call ended, and trips or settles the breaker.
    #[inline]
    fn complete(&self, generation: u64, kind: PermitKind, end: CallEnd) {
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
                self.window.record(CallRecord { failure, slow }, now);
                if (failure || slow) && unpack(word).1 == CircuitState::Closed {
                    let counts = self.window.counts(now);
                    if self.should_trip(counts) {
                        self.closed_to_open(word);
                    }
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

    fn exceeds(count: u32, of: u32, threshold: f64) -> bool {
        of > 0 && f64::from(count) / f64::from(of) >= threshold
    }

    fn should_trip(&self, counts: WindowCounts) -> bool {
        counts.is_consistent(self.window.capacity())
            && counts.calls >= self.settings.minimum_calls
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

    fn lock(&self) -> MutexGuard<'_, Transitions> {
        // The guarded data stays consistent even if a holder panicked.
        self.transitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn closed_to_open(&self, seen: u64) {
        let mut transitions = self.lock();
        if self.word.load(Ordering::Acquire) != seen {
            return;
        }
        self.open(&mut transitions, seen, CircuitState::Closed);
    }

    fn open_to_half_open(&self, seen: u64) {
        let mut transitions = self.lock();
        if self.word.load(Ordering::Acquire) != seen {
            return;
        }
        let generation = (seen >> 8) + 1;
        transitions.probe_successes = 0;
        transitions.probe_failures = 0;
        transitions.probe_slow = 0;
        self.probes.store(
            ((generation & 0xffff_ffff) << 32) | u64::from(self.settings.half_open_permits),
            Ordering::Release,
        );
        self.publish(
            &mut transitions,
            generation,
            CircuitState::Open,
            CircuitState::HalfOpen,
        );
    }

    fn probe_finished(&self, generation: u64, failure: bool, slow: bool) {
        let mut transitions = self.lock();
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
            transitions.probe_failures,
            permits,
            self.settings.failure_rate_threshold,
        ) || Self::exceeds(
            transitions.probe_slow,
            permits,
            self.settings.slow_call_rate_threshold,
        ) {
            self.open(&mut transitions, word, CircuitState::HalfOpen);
        } else if transitions.probe_failures + transitions.probe_successes >= permits {
            transitions.consecutive_opens = 0;
            self.window.reset();
            self.publish(
                &mut transitions,
                generation + 1,
                CircuitState::HalfOpen,
                CircuitState::Closed,
            );
        }
    }

    /// Opens the breaker for the next wait: `wait_in_open`, doubled for
    /// each consecutive trip, capped at `max_wait_in_open`.
    fn open(&self, transitions: &mut Transitions, seen: u64, from: CircuitState) {
        transitions.consecutive_opens = transitions.consecutive_opens.saturating_add(1);
        let doublings = transitions.consecutive_opens.saturating_sub(1).min(32);
        let wait = self
            .settings
            .wait_in_open
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.settings.max_wait_in_open)
            .min(self.settings.max_wait_in_open);
        let until = self.nanos_since_base(Instant::now() + wait);
        self.open_until.store(until, Ordering::Release);
        self.publish(transitions, (seen >> 8) + 1, from, CircuitState::Open);
    }

    /// Publishes a new state word and tells the world.
    fn publish(
        &self,
        transitions: &mut Transitions,
        generation: u64,
        from: CircuitState,
        to: CircuitState,
    ) {
        self.word.store(pack(generation, to), Ordering::Release);
        if from == to {
            // A reset of a closed breaker (say) empties the window and
            // starts a new generation, but is no transition to report.
            return;
        }
        transitions.last_transition = Instant::now();
        let name = &self.settings.name;
        self.state_gauge.set(f64::from(to.as_index()));
        metrics::counter!(
            names::CIRCUIT_TRANSITIONS_TOTAL,
            names::LABEL_BREAKER => name.clone(),
            names::LABEL_FROM => from.as_str(),
            names::LABEL_TO => to.as_str()
        )
        .increment(1);
        if let Some(events) = &self.settings.events {
            events.emit(Event::new(
                name.clone(),
                EventKind::CircuitTransition { from, to },
            ));
        }
    }

    /// Moves to a manual state (`ForcedOpen`, `Disabled`, `MetricsOnly`) or
    /// back to an empty `Closed`.
    pub(crate) fn set_manual(&self, to: CircuitState) {
        let mut transitions = self.lock();
        let (generation, from) = unpack(self.word.load(Ordering::Acquire));
        if matches!(to, CircuitState::Closed | CircuitState::MetricsOnly) {
            self.window.reset();
        }
        if to == CircuitState::Closed {
            transitions.consecutive_opens = 0;
        }
        self.publish(&mut transitions, generation + 1, from, to);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let (_, state) = unpack(self.word.load(Ordering::Acquire));
        let counts = self.window.counts(self.nanos_since_base(now));
        let last_transition = self.lock().last_transition;
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
            CircuitState::HalfOpen => {
                let probes = self.probes.load(Ordering::Acquire);
                self.settings
                    .half_open_permits
                    .saturating_sub((probes & 0xffff_ffff) as u32)
            }
            _ => 0,
        };
        Snapshot {
            state,
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
    pub(crate) counts: WindowCounts,
    pub(crate) probes_in_flight: u32,
    pub(crate) rejected: u64,
    pub(crate) last_transition: Instant,
    pub(crate) until_probe: Option<Duration>,
}
