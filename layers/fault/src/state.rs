//! The rates every clone of a fault layer shares, and the handle that
//! changes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Rates are kept in parts per million: one atomic load each, exact
/// enough for any test.
const MILLION: f64 = 1_000_000.0;

fn to_ppm(rate: f64) -> u32 {
    (rate.clamp(0.0, 1.0) * MILLION).round() as u32
}

/// What one roll decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Call,
    Error,
    Respond,
    Hang,
}

#[derive(Debug)]
pub(crate) struct FaultState {
    pub(crate) name: Arc<str>,
    enabled: AtomicBool,
    error_ppm: AtomicU32,
    respond_ppm: AtomicU32,
    hang_ppm: AtomicU32,
    latency_ppm: AtomicU32,
    latency_nanos: AtomicU64,
    pub(crate) status: AtomicU16,
    calls: AtomicU64,
    errors: AtomicU64,
    responses: AtomicU64,
    hangs: AtomicU64,
    latencies: AtomicU64,
}

/// The settings a builder gives the state.
#[derive(Debug, Clone)]
pub(crate) struct Rates {
    pub(crate) error: f64,
    pub(crate) respond: f64,
    pub(crate) hang: f64,
    pub(crate) latency: f64,
    pub(crate) latency_by: Duration,
    pub(crate) status: u16,
    pub(crate) enabled: bool,
}

impl FaultState {
    pub(crate) fn new(name: Arc<str>, rates: &Rates) -> Self {
        FaultState {
            name,
            enabled: AtomicBool::new(rates.enabled),
            error_ppm: AtomicU32::new(to_ppm(rates.error)),
            respond_ppm: AtomicU32::new(to_ppm(rates.respond)),
            hang_ppm: AtomicU32::new(to_ppm(rates.hang)),
            latency_ppm: AtomicU32::new(to_ppm(rates.latency)),
            latency_nanos: AtomicU64::new(
                u64::try_from(rates.latency_by.as_nanos()).unwrap_or(u64::MAX),
            ),
            status: AtomicU16::new(rates.status),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
            latencies: AtomicU64::new(0),
        }
    }

    /// Counts a response the layer made.
    pub(crate) fn responded(&self) {
        self.responses.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Rolls for one call: what to do, and the latency to add.
    pub(crate) fn roll(&self) -> (Decision, Option<Duration>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let roll = fastrand::u32(0..1_000_000);
        let hang = self.hang_ppm.load(Ordering::Relaxed);
        let error = hang.saturating_add(self.error_ppm.load(Ordering::Relaxed));
        let respond = error.saturating_add(self.respond_ppm.load(Ordering::Relaxed));
        let decision = if roll < hang {
            self.hangs.fetch_add(1, Ordering::Relaxed);
            Decision::Hang
        } else if roll < error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            Decision::Error
        } else if roll < respond {
            Decision::Respond
        } else {
            Decision::Call
        };
        let latency_ppm = self.latency_ppm.load(Ordering::Relaxed);
        let latency = (latency_ppm > 0 && fastrand::u32(0..1_000_000) < latency_ppm).then(|| {
            self.latencies.fetch_add(1, Ordering::Relaxed);
            Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
        });
        (decision, latency)
    }
}

/// Changes a fault layer's rates at run time; every clone of the layer
/// and every service it made see the change on their next call.
#[derive(Debug, Clone)]
pub struct FaultHandle {
    pub(crate) state: Arc<FaultState>,
}

/// What a fault layer injected so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FaultStats {
    /// Calls that rolled while injection was on.
    pub calls: u64,
    /// Calls failed with `InjectedFault`.
    pub errors: u64,
    /// Calls answered with the configured status.
    pub responses: u64,
    /// Calls left hanging.
    pub hangs: u64,
    /// Calls given added latency.
    pub latencies: u64,
}

impl FaultHandle {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Injects again, at the rates set.
    pub fn enable(&self) {
        self.state.enabled.store(true, Ordering::Relaxed);
    }

    /// Injects nothing until [`enable`](Self::enable): calls go straight
    /// through.
    pub fn disable(&self) {
        self.state.enabled.store(false, Ordering::Relaxed);
    }

    /// Whether injection is on.
    pub fn is_enabled(&self) -> bool {
        self.state.is_enabled()
    }

    /// Fails this share of calls with `InjectedFault` (clamped to [0, 1]).
    pub fn set_error_rate(&self, rate: f64) {
        self.state.error_ppm.store(to_ppm(rate), Ordering::Relaxed);
    }

    /// Answers this share of calls with the configured status (the
    /// configuration's `status_rate`).
    pub fn set_status_rate(&self, rate: f64) {
        self.state
            .respond_ppm
            .store(to_ppm(rate), Ordering::Relaxed);
    }

    /// The old name of [`set_status_rate`](Self::set_status_rate).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `set_status_rate`, after the configuration key `status_rate`"
    )]
    pub fn set_response_rate(&self, rate: f64) {
        self.set_status_rate(rate);
    }

    /// The HTTP status (or gRPC code) injected responses carry.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// Leaves this share of calls hanging: only a timeout above the layer
    /// (or the caller going away) ends them, and until then they hold
    /// whatever the layers above reserved (an admission slot, an
    /// in-flight count). Use with a timeout.
    pub fn set_hang_rate(&self, rate: f64) {
        self.state.hang_ppm.store(to_ppm(rate), Ordering::Relaxed);
    }

    /// Adds `by` of latency to this share of calls.
    pub fn set_latency(&self, rate: f64, by: Duration) {
        self.state.latency_nanos.store(
            u64::try_from(by.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.state
            .latency_ppm
            .store(to_ppm(rate), Ordering::Relaxed);
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FaultStats {
            calls: load(&self.state.calls),
            errors: load(&self.state.errors),
            responses: load(&self.state.responses),
            hangs: load(&self.state.hangs),
            latencies: load(&self.state.latencies),
        }
    }
}
