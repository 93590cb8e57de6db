//! A call the breaker let through, and how it ended.

use tokio::time::Instant;

use tower_hardening_core::stripe::Held;

use crate::state::BreakerState;

/// A call the breaker let through. It must end in [`Permit::finish`];
/// dropped unfinished, it counts as cancelled: nothing recorded, a probe
/// permit handed back. A panic in the inner service is recorded as a
/// failure by the response future's unwind guard, where the panic passes
/// (see `tower_hardening_core::sync::on_unwind`), not here: under
/// `CatchPanic` the future is dropped after the unwind has ended.
///
/// Kept small and made of plain integers: it is moved through
/// `poll_ready`, `call` and the response future on every request.
#[derive(Debug)]
pub(crate) struct Permit {
    /// Through the admitting thread's stripe when the service has one, so
    /// its reference count is not one line every core writes.
    state: Held<BreakerState>,
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
/// Set by [`Permit::head_arrived`] when the call was slow to its head.
const SLOW_AT_HEAD: u64 = 1 << 9;

impl Permit {
    pub(crate) fn new(state: Held<BreakerState>, generation: u64, kind: PermitKind) -> Self {
        Permit {
            state,
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
                slow: self.flags & SLOW_AT_HEAD != 0 || (self.started != 0 && self.is_slow()),
            },
        };
        self.state.complete(self.generation, self.kind(), end);
    }

    /// The response head arrived: the call's duration (for slow-call
    /// detection) ends here, not when its body has been read, which also
    /// measures the client.
    pub(crate) fn head_arrived(&mut self) {
        if self.started != 0 {
            if self.is_slow() {
                self.flags |= SLOW_AT_HEAD;
            }
            self.started = 0;
        }
    }

    /// The breaker generation the call was admitted under.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this is a half-open probe permit.
    #[inline]
    pub(crate) fn is_probe(&self) -> bool {
        self.kind() == PermitKind::Probe
    }

    /// The deadline of a half-open probe, from now; `None` for any other
    /// call (no timer on the closed path).
    #[inline]
    pub(crate) fn probe_deadline(&self) -> Option<std::pin::Pin<Box<tokio::time::Sleep>>> {
        if self.is_probe() {
            Some(self.start_probe_deadline())
        } else {
            None
        }
    }

    #[cold]
    fn start_probe_deadline(&self) -> std::pin::Pin<Box<tokio::time::Sleep>> {
        Box::pin(tokio::time::sleep(self.state.settings.probe_timeout))
    }

    /// The error of a probe that missed its deadline.
    pub(crate) fn probe_timed_out(&self) -> crate::ProbeTimedOut {
        crate::ProbeTimedOut::new(self.state.settings.name.clone())
    }

    /// Records a panic in the inner service: a failure.
    pub(crate) fn panicked(self) {
        self.finish(Some(true));
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
        if self.flags & FINISHED == 0 {
            self.state
                .complete(self.generation, self.kind(), CallEnd::Cancelled);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PermitKind {
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
pub(crate) enum CallEnd {
    /// Finished and classified; `slow` if it took longer than the slow-call
    /// duration.
    Finished { failure: bool, slow: bool },
    /// Finished but classified `Ignored`: not evidence either way.
    Ignored,
    /// Dropped before finishing: not evidence either way.
    Cancelled,
}
