//! What the monitor publishes about health: the overall status, memory,
//! and each service.
//!
//! The rules, applied on every health tick and on every breaker
//! transition:
//!
//! | a service is | when |
//! | --- | --- |
//! | unhealthy | its breaker is open or forced open; or (an upstream) every endpoint is ejected; or `unhealthy_after_failed_checks` health checks failed in a row; or `initialize` failed (until a check passes); or recovery gave up |
//! | degraded | its breaker is half-open; or its last health check failed; or (an upstream) an endpoint is ejected, or every endpoint is ejected or pushing back |
//! | healthy | otherwise |
//!
//! A monitor that died (a panic, an abort) publishes the process unhealthy
//! with a reason naming it; nothing derives health after that.
//!
//! | the process is | when |
//! | --- | --- |
//! | unhealthy | a critical service (criticality `critical`) is unhealthy; or memory is above `memory_critical` of the limit |
//! | degraded | any other service is not healthy; or memory is above `memory_warning`; or a performance threshold is crossed; or the readings source failed (panicked) |
//! | healthy | otherwise |
//!
//! A monitor that died (a panic, an abort) publishes the process unhealthy
//! with a reason naming it; nothing derives health after that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tower_hardening_core::{CircuitState, HealthState, Priority};

/// The health of the whole process, from [`HardeningHandle::health`](crate::HardeningHandle::health).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthStatus {
    /// Healthy, degraded or unhealthy, by the rules of this module.
    #[serde(serialize_with = "ser::health_state")]
    pub status: HealthState,
    /// Memory in use against the limit.
    pub memory: MemoryStatus,
    /// Each known service (registered, configured, or with a layer built).
    pub services: BTreeMap<Arc<str>, ServiceHealth>,
    /// Work below this priority is refused because of memory pressure
    /// (`None`: nothing is shed). Never above `critical`.
    #[serde(serialize_with = "ser::optional_priority")]
    pub shedding_below: Option<Priority>,
    /// Why the status is not healthy, one line per cause.
    pub reasons: Vec<Arc<str>>,
    /// When this status was derived (wall clock).
    #[serde(serialize_with = "ser::time")]
    pub checked_at: SystemTime,
}

impl HealthStatus {
    /// Before the monitor's first reading: every known service healthy.
    pub(crate) fn starting(services: impl IntoIterator<Item = (Arc<str>, bool)>) -> Self {
        HealthStatus {
            status: HealthState::Healthy,
            memory: MemoryStatus::default(),
            services: services
                .into_iter()
                .map(|(name, critical)| (name, ServiceHealth::new(critical)))
                .collect(),
            shedding_below: None,
            reasons: Vec::new(),
            checked_at: SystemTime::now(),
        }
    }

    /// The same status with inner error texts removed (for answers to
    /// clients when `expose_details` is off): each service's reason reads
    /// [`HIDDEN_REASON`], which says how to show them.
    pub fn without_details(&self) -> HealthStatus {
        let mut status = self.clone();
        let hidden: Arc<str> = Arc::from(HIDDEN_REASON);
        for service in status.services.values_mut() {
            service.reason = service.reason.as_ref().map(|_| hidden.clone());
        }
        status.reasons = self
            .reasons
            .iter()
            .map(|reason| Arc::from(reason.split(':').next().unwrap_or_default()))
            .collect();
        status
    }
}

/// A service's reason in [`HealthStatus::without_details`]: the inner
/// error text is hidden, and nothing may be logged (without a tracing
/// subscriber nothing is), so it says what shows it.
pub const HIDDEN_REASON: &str =
    "hidden: set `expose_details = true` in the hardening config to show the inner error here";

/// Memory in use by the process against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct MemoryStatus {
    /// Resident memory of the process, in bytes.
    pub used: u64,
    /// The limit: `max_resource_memory`, else the cgroup's limit, else the
    /// machine's memory.
    pub limit: u64,
    /// `used` in percent of `limit`.
    pub percentage: f64,
}

/// One service's health, from [`HardeningHandle::service_health`](crate::HardeningHandle::service_health).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ServiceHealth {
    /// Healthy, degraded or unhealthy, by the rules of this module.
    #[serde(serialize_with = "ser::health_state")]
    pub status: HealthState,
    /// Whether the service is critical (criticality `critical`): its
    /// failure makes the whole process unhealthy (readiness follows only
    /// a service with `readiness = true`).
    pub critical: bool,
    /// Its breaker's state, read live; `None` when no breaker was built.
    #[serde(serialize_with = "ser::optional_circuit")]
    pub circuit_state: Option<CircuitState>,
    /// Failures over calls in the breaker's window (`None` before
    /// `minimum_calls`); read live by `service_health`, as of
    /// `checked_at` in `health()`.
    pub failure_rate: Option<f64>,
    /// Slow calls over calls in the breaker's window.
    pub slow_call_rate: Option<f64>,
    /// Calls in the breaker's window; read live by `service_health`, as
    /// of `checked_at` in `health()`.
    pub calls: u64,
    /// When a health check last failed or the breaker last opened.
    #[serde(serialize_with = "ser::optional_time")]
    pub last_failure: Option<SystemTime>,
    /// When the health check last ran.
    #[serde(serialize_with = "ser::optional_time")]
    pub last_check: Option<SystemTime>,
    /// Health checks failed in a row.
    pub failed_checks: u32,
    /// What the recovery manager is doing with it.
    pub recovery: RecoveryState,
    /// Rebuild attempts since the service was last healthy.
    pub recovery_attempts: u32,
    /// Why it is not healthy (inner error texts: see `expose_details`).
    pub reason: Option<Arc<str>>,
    /// For an upstream, each endpoint's state (read live by
    /// `service_health`); empty for a plain service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointHealth>,
}

/// One endpoint of an upstream, in [`ServiceHealth::endpoints`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EndpointHealth {
    /// The endpoint's URI.
    pub uri: Arc<str>,
    /// `healthy`, `ejected` (outlier ejection) or `pushed_back` (it asked
    /// callers to stay away).
    pub state: &'static str,
    /// How long until an ejected or pushing-back endpoint is called again.
    #[serde(serialize_with = "ser::optional_seconds")]
    pub out_for: Option<std::time::Duration>,
    /// Its failure rate over its last calls (0 to 1).
    pub failure_rate: f64,
    /// Calls that rate is over.
    pub calls: usize,
    /// Times it has been ejected.
    pub ejections: u32,
    /// Its mean attempt latency, once it has answered.
    #[serde(serialize_with = "ser::optional_seconds")]
    pub latency: Option<std::time::Duration>,
}

impl EndpointHealth {
    /// Whether it is out of rotation (ejected or pushing back).
    pub fn is_out(&self) -> bool {
        self.state != "healthy"
    }
}

/// The health rules for an upstream's endpoints, which the monitor and
/// `service_health()` (live) both apply: none left, or every one
/// ejected, is unhealthy; every one out with some only pushing back
/// (asking callers to wait), or any ejected, is degraded.
pub(crate) fn endpoints_verdict(endpoints: &[EndpointHealth]) -> Option<(HealthState, String)> {
    let ejected = endpoints.iter().filter(|e| e.state == "ejected").count();
    if endpoints.is_empty() {
        Some((
            HealthState::Unhealthy,
            "no endpoint (every one was removed)".to_owned(),
        ))
    } else if ejected == endpoints.len() {
        Some((HealthState::Unhealthy, "every endpoint is ejected".to_owned()))
    } else if endpoints.iter().all(EndpointHealth::is_out) {
        // A dependency asking callers to wait (429 / 503 with
        // `Retry-After`, gRPC pushback) is not failing: every replica
        // would turn unready at once on its word.
        Some((
            HealthState::Degraded,
            "every endpoint is ejected or pushing back".to_owned(),
        ))
    } else if ejected > 0 {
        Some((
            HealthState::Degraded,
            format!("{ejected} of {} endpoints ejected", endpoints.len()),
        ))
    } else {
        None
    }
}

/// What the monitor and the handle read of an upstream's endpoints,
/// whatever its service type.
pub(crate) trait EndpointView: Send + Sync {
    fn endpoints(&self) -> Vec<EndpointHealth>;
}

impl ServiceHealth {
    pub(crate) fn new(critical: bool) -> Self {
        ServiceHealth {
            status: HealthState::Healthy,
            critical,
            circuit_state: None,
            failure_rate: None,
            slow_call_rate: None,
            calls: 0,
            last_failure: None,
            last_check: None,
            failed_checks: 0,
            recovery: RecoveryState::Idle,
            recovery_attempts: 0,
            reason: None,
            endpoints: Vec::new(),
        }
    }
}

/// What the recovery manager is doing with a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryState {
    /// Nothing: the service is not recovering (or not recoverable).
    Idle,
    /// Rebuilding: `shutdown` then `initialize`, attempt `attempt`.
    Recovering {
        /// The attempt under way, from 1.
        attempt: u32,
    },
    /// Rebuilt; its breaker is probing (half-open) to confirm.
    Probing,
    /// Every attempt failed; the breaker stays forced open (unless a
    /// person owns it) until
    /// [`HardeningHandle::trigger_recovery`](crate::HardeningHandle::trigger_recovery)
    /// or a reset.
    GaveUp,
}

/// Whether this instance should receive traffic, and why not (see
/// [`HardeningHandle::ready`](crate::HardeningHandle::ready)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// True when ready.
    pub ready: bool,
    /// Why not, one line per cause; empty when ready.
    pub reasons: Vec<String>,
}

/// Serde helpers for core types that carry no serde dependency.
pub(crate) mod ser {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::Serializer;
    use tower_hardening_core::{CircuitState, HealthState, Priority};

    pub(crate) fn health_state<S: Serializer>(s: &HealthState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str())
    }

    pub(crate) fn optional_circuit<S: Serializer>(
        s: &Option<CircuitState>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match s {
            Some(state) => ser.serialize_str(state.as_str()),
            None => ser.serialize_none(),
        }
    }

    pub(crate) fn optional_priority<S: Serializer>(
        p: &Option<Priority>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match p {
            Some(priority) => ser.collect_str(priority),
            None => ser.serialize_none(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn time<S: Serializer>(t: &SystemTime, ser: S) -> Result<S::Ok, S::Error> {
        let millis = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        ser.serialize_u64(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    pub(crate) fn optional_seconds<S: Serializer>(
        d: &Option<std::time::Duration>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => ser.serialize_f64(d.as_secs_f64()),
            None => ser.serialize_none(),
        }
    }

    pub(crate) fn optional_time<S: Serializer>(
        t: &Option<SystemTime>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => time(t, ser),
            None => ser.serialize_none(),
        }
    }
}
