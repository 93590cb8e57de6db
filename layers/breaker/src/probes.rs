//! Half-open probe permits: one word, `generation tag << 16 | free permits`.
//!
//! The tag is the low 48 bits of the half-open state's generation, so a
//! permit handed back after its half-open period ended (the breaker
//! reopened or closed meanwhile) finds another tag and is dropped; 48 bits
//! do not wrap in any real breaker's life. The word is cleared whenever
//! half-open is left, so no free permit outlives its period.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::{CircuitOpen, CircuitState};

use crate::state::BreakerState;

const FREE_BITS: u32 = 16;
const FREE_MASK: u64 = (1 << FREE_BITS) - 1;
const TAG_MASK: u64 = (1 << (64 - FREE_BITS)) - 1;

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn tag_of(generation: u64) -> u64 {
    generation & TAG_MASK
}

impl BreakerState {
    /// Opens a half-open period of `generation` with every permit free.
    pub(crate) fn fill_probes(&self, generation: u64) {
        let permits = u64::from(self.settings.half_open_permits) & FREE_MASK;
        // Swaps, not stores, here and below: the same on hardware, and
        // loom then orders them exactly against a racing hand-back (it
        // lets a plain store fall before a compare-and-swap that read
        // the value it replaced).
        self.probes.swap(
            (tag_of(generation) << FREE_BITS) | permits,
            Ordering::AcqRel,
        );
    }

    /// Ends the half-open period: no permit can be taken or handed back.
    pub(crate) fn clear_probes(&self) {
        self.probes.swap(0, Ordering::AcqRel);
    }

    /// Probe permits taken and not finished, while half-open.
    pub(crate) fn probes_in_flight(&self, generation: u64) -> u32 {
        let probes = self.probes.load(Ordering::Acquire);
        if probes >> FREE_BITS != tag_of(generation) {
            return 0;
        }
        self.settings
            .half_open_permits
            .saturating_sub((probes & FREE_MASK) as u32)
    }

    /// Takes a probe permit of `generation`: `Ok(true)` taken, `Ok(false)`
    /// the generation moved on, `Err` none left.
    pub(crate) fn take_probe(&self, generation: u64) -> Result<bool, CircuitOpen> {
        let tag = tag_of(generation);
        let mut probes = self.probes.load(Ordering::Acquire);
        loop {
            if probes >> FREE_BITS != tag {
                return Ok(false);
            }
            if probes & FREE_MASK == 0 {
                // Every probe is out. One that outlived its deadline is a
                // failed probe even if nothing polls it any more (a stream
                // its client stopped reading): whoever finds it so reopens.
                let now = self.nanos_since_base(Instant::now());
                let overdue = self
                    .last_probe_at
                    .load(Ordering::Acquire)
                    .saturating_add(duration_nanos(self.settings.probe_timeout));
                if now >= overdue {
                    self.probes_overdue(generation);
                    return Ok(false);
                }
                // Each is decided within the probe deadline at the latest.
                return Err(self
                    .reject(generation, self.settings.probe_timeout)
                    .in_state(CircuitState::HalfOpen));
            }
            // Noted before the permit is taken: whoever sees every permit
            // out sees this time or a later one.
            self.last_probe_at
                .fetch_max(self.nanos_since_base(Instant::now()), Ordering::AcqRel);
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

    /// Hands back a probe permit of `generation` whose call proved nothing
    /// (cancelled or ignored); dropped if that half-open period is over.
    pub(crate) fn give_back_probe(&self, generation: u64) {
        let tag = tag_of(generation);
        let mut probes = self.probes.load(Ordering::Acquire);
        while probes >> FREE_BITS == tag
            && (probes & FREE_MASK) < u64::from(self.settings.half_open_permits)
        {
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
}
