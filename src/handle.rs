//! The handle the application reads and steers everything through.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast;
use tower_hardening_core::sync::lock;
use tower_hardening_core::{BoxError, CircuitState, Event, HealthState, Priority};

use crate::breaker::BreakerHandle;
use crate::health::{HealthStatus, Readiness, ServiceHealth};
use crate::limit::{Acquire, AttrValue, Lease, PoolStats, ReleaseError};
use crate::metrics::MetricsCollector;
use crate::performance::PerformanceSnapshot;
use crate::shared::{Command, Shared};
use crate::fault::FaultHandle;
use crate::stack::{Grpc, Http, HttpServiceLayer, ServiceLayer};

/// Reads and steers a running [`SystemHardening`](crate::SystemHardening):
/// the latest health and performance snapshots (lock-free reads), the
/// resource pools, the event stream, the metrics collector, and shutdown.
///
/// Cheap to clone; every clone is the same hardening.
#[derive(Clone)]
pub struct HardeningHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for HardeningHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardeningHandle")
            .field("shared", &self.shared)
            .finish()
    }
}

/// What a resource request asks for, beyond its owner and priority: a
/// number of units (1 unless set) and attributes the resource must have.
///
/// ```
/// use tower_hardening::Requirements;
///
/// let needs = Requirements::new().units(2).require("gpu", "a100");
/// # let _ = needs;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Requirements {
    units: Option<u64>,
    attributes: Vec<(Arc<str>, AttrValue)>,
}

impl Requirements {
    /// One unit, no attribute.
    pub fn new() -> Self {
        Requirements::default()
    }

    /// This many units (of a pool of interchangeable units) or resources.
    pub fn units(mut self, units: u64) -> Self {
        self.units = Some(units);
        self
    }

    /// Only resources whose attribute `key` is `value`.
    pub fn require(mut self, key: impl Into<Arc<str>>, value: impl Into<AttrValue>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }
}

/// A name the hardening does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownName {
    /// No service of this name was registered or configured.
    Service(String),
    /// No pool of this name was given to the builder.
    Pool(String),
    /// No `[upstreams.<name>]` section of this name.
    Upstream(String),
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownName::Service(name) => write!(
                f,
                "no service `{name}`: register it with `.service(..)` or give it a `[services.{name}]` section"
            ),
            UnknownName::Upstream(name) => write!(
                f,
                "no upstream `{name}`: give it an `[upstreams.{name}]` section with its endpoints"
            ),
            UnknownName::Pool(name) => {
                write!(
                    f,
                    "no resource pool `{name}`: give it to the builder with `.pool(..)`"
                )
            }
        }
    }
}

impl std::error::Error for UnknownName {}

/// Every resource pool's figures, each pool on its own, from
/// [`HardeningHandle::resource_stats`].
///
/// Pools count different things (bytes of the memory pool, cores of a
/// CPU pool, plain units), so their units are never added together: read
/// a pool's figures from [`pools`](Self::pools), with the kind of unit it
/// counts. The totals here count leases and requests, the same thing in
/// every pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceStats {
    /// Each pool's figures and unit, by name.
    pub pools: BTreeMap<String, PoolFigures>,
    /// Leases held now, over every pool (the seed's `activeAllocations`).
    pub active_allocations: usize,
    /// Requests waiting now, over every pool.
    pub queued: usize,
    /// Requests refused so far, over every pool.
    pub rejected_total: u64,
    /// Leases taken back so far, over every pool.
    pub reclaimed_total: u64,
}

/// One pool's figures in [`ResourceStats`], and what its units are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolFigures {
    /// What one unit of the pool is.
    pub unit: PoolUnit,
    /// Its counters (`available` is the seed's `ready`).
    pub stats: PoolStats,
}

/// What one unit of a pool counts, so figures of different pools are
/// never added as if they were the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PoolUnit {
    /// Bytes: the memory pool the hardening makes from
    /// `max_resource_memory`.
    Bytes,
    /// Named resources (a pool built with `resources(..)`, e.g. CPU
    /// cores): one unit is one resource.
    Resources,
    /// Plain units whose meaning is the application's (a pool built with
    /// `capacity(..)`).
    Units,
}

impl HardeningHandle {
    /// The latest health status (one atomic load and a reference count).
    pub fn health(&self) -> Arc<HealthStatus> {
        self.shared.health.load_full()
    }

    /// One service's health, with its breaker's state, rates and calls
    /// read live (one snapshot of the breaker), and an upstream's
    /// endpoints (an endpoint out makes the status at least what the
    /// health rules say of it); the status and the rest are the monitor's
    /// latest. `None` for a name the hardening does not
    /// know.
    pub fn service_health(&self, name: &str) -> Option<ServiceHealth> {
        let health = self.shared.health.load();
        let mut service = health.services.get(name)?.clone();
        if let Some(parts) = self.shared.services.get(name).and_then(|e| e.stack.get()) {
            let snapshot = parts.breaker.snapshot();
            service.circuit_state = Some(snapshot.state);
            service.failure_rate = snapshot.failure_rate;
            service.slow_call_rate = snapshot.slow_call_rate;
            service.calls = snapshot.calls;
        }
        if let Some(view) = self.shared.services.get(name).and_then(|e| e.endpoints.get()) {
            service.endpoints = view.endpoints();
            // The endpoints' part of the health rules, live as they are.
            if let Some((verdict, _)) = crate::health::endpoints_verdict(&service.endpoints) {
                service.status = service.status.max(verdict);
            }
        }
        Some(service)
    }

    /// The latest performance reading; `None` ("not measured yet") before
    /// the monitor's first one, and always with
    /// `enable_performance_monitoring = false`.
    pub fn performance(&self) -> Option<Arc<PerformanceSnapshot>> {
        self.shared.performance.load_full()
    }

    /// Asks the pool `pool` for a lease (the seed's `requestResource`):
    /// granted at once, queued by priority, or refused (`Overloaded`,
    /// `QueueTimeout`, `Unsatisfiable`, `PoolClosed`, or [`UnknownName`]).
    /// The lease is released when dropped; [`Lease::detach`] keeps it
    /// until [`release_resource`](Self::release_resource).
    pub async fn request_resource(
        &self,
        pool: &str,
        owner: &str,
        priority: Priority,
        requirements: Requirements,
    ) -> Result<Lease, BoxError> {
        let Some(found) = self.shared.pools.get(pool) else {
            return Err(UnknownName::Pool(pool.to_owned()).into());
        };
        let mut request = Acquire::new(owner).priority(priority);
        if let Some(units) = requirements.units {
            request = request.units(units);
        }
        for (key, value) in requirements.attributes {
            request = request.require(key, value);
        }
        found.acquire(request).await
    }

    /// Releases the detached lease `lease_id` of `pool` if `owner` holds
    /// it (the seed's `releaseResource`); a wrong owner releases nothing.
    pub fn release_resource(&self, pool: &str, lease_id: u64, owner: &str) -> Result<(), BoxError> {
        let Some(found) = self.shared.pools.get(pool) else {
            return Err(UnknownName::Pool(pool.to_owned()).into());
        };
        found
            .release(lease_id, owner)
            .map_err(|err: ReleaseError| err.into())
    }

    /// Every resource pool's figures, each with its unit, and the totals
    /// of leases and requests (the seed's `getResourceStats`). Units of
    /// different pools are never added: the memory pool counts bytes, a
    /// CPU pool cores.
    pub fn resource_stats(&self) -> ResourceStats {
        let mut stats = ResourceStats::default();
        for (name, pool) in &self.shared.pools {
            let unit = if pool.has_named_resources() {
                PoolUnit::Resources
            } else if self.shared.memory_pool_made && &**name == crate::config::MEMORY_POOL {
                PoolUnit::Bytes
            } else {
                PoolUnit::Units
            };
            let pool = pool.stats();
            stats.active_allocations += pool.active_leases;
            stats.queued += pool.queued;
            stats.rejected_total += pool.rejected_total;
            stats.reclaimed_total += pool.reclaimed_total;
            stats
                .pools
                .insert(name.to_string(), PoolFigures { unit, stats: pool });
        }
        stats
    }

    /// Whether this instance can serve (what `/health/ready` answers):
    /// the monitor started and has run every registered service's
    /// `initialize`, it has not died, `shutdown()` was not called, memory
    /// is under `memory_critical`, and no service that opted in with
    /// `readiness = true` has its breaker open (or forced open) or is
    /// unhealthy.
    ///
    /// Nothing else fails it: an open breaker of any other service, even
    /// a critical one, makes [`health`](Self::health) degraded or
    /// unhealthy for alerts, and leaves readiness alone. A dependency every
    /// replica shares fails on every replica at once; failing readiness
    /// for it would take every replica out of the load balancer (in
    /// Kubernetes, every pod out of its Service's endpoints), turning a
    /// partial outage into a total one.
    pub fn ready(&self) -> bool {
        self.readiness().ready
    }

    /// [`ready`](Self::ready), with the reasons when not.
    pub fn readiness(&self) -> Readiness {
        let shared = &self.shared;
        let mut reasons = Vec::new();
        if shared.is_shutting_down() {
            reasons.push("shutting down".to_owned());
        }
        if shared.monitor_died.load(Ordering::SeqCst) {
            reasons.push(crate::monitor::MONITOR_DIED.to_owned());
        } else if !shared.initialized.load(Ordering::Acquire) {
            reasons.push("starting: the monitor has not initialized the services yet".to_owned());
        }
        let health = shared.health.load();
        let memory = health.memory;
        if memory.limit > 0 && memory.percentage / 100.0 >= shared.config.memory_critical {
            reasons.push(format!(
                "memory: {:.1}% of the limit, above the critical mark",
                memory.percentage
            ));
        }
        for entry in shared.services.values().filter(|e| e.config.readiness) {
            let state = entry.stack.get().map(|parts| parts.breaker.state());
            if let Some(state @ (CircuitState::Open | CircuitState::ForcedOpen)) = state {
                reasons.push(format!(
                    "service `{}` (readiness = true): circuit {state}",
                    entry.name
                ));
            } else if let Some(service) = health
                .services
                .get(&entry.name)
                .filter(|s| s.status == HealthState::Unhealthy)
            {
                reasons.push(format!(
                    "service `{}` (readiness = true): {}",
                    entry.name,
                    service.reason.as_deref().unwrap_or("unhealthy")
                ));
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// The in-process metrics collector every stack records into (window
    /// queries, Prometheus text).
    pub fn metrics(&self) -> &MetricsCollector {
        &self.shared.collector
    }

    /// Every event from now on: breaker transitions, health changes,
    /// recovery steps, memory pressure and shedding, performance alerts,
    /// lease reclaims.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The breaker of `service`, once a stack of it was built.
    pub fn breaker(&self, service: &str) -> Option<BreakerHandle> {
        let entry = self.shared.services.get(service)?;
        entry.stack.get().map(|parts| parts.breaker.clone())
    }

    /// The stack of `service` (see [`SystemHardening::layer`](crate::SystemHardening::layer)).
    pub fn layer(&self, service: &str) -> Result<ServiceLayer, BoxError> {
        crate::hardening::parts(&self.shared, service).and_then(ServiceLayer::new)
    }

    /// The HTTP stack of `service` (see
    /// [`SystemHardening::http_layer`](crate::SystemHardening::http_layer)).
    pub fn http_layer(&self, service: &str) -> Result<HttpServiceLayer<Http>, BoxError> {
        crate::hardening::parts(&self.shared, service)
            .map(|parts| HttpServiceLayer::new(parts, Http))
    }

    /// The gRPC stack of `service` (see
    /// [`SystemHardening::grpc_layer`](crate::SystemHardening::grpc_layer)).
    pub fn grpc_layer(&self, service: &str) -> Result<HttpServiceLayer<Grpc>, BoxError> {
        crate::hardening::parts(&self.shared, service)
            .map(|parts| HttpServiceLayer::new(parts, Grpc))
    }

    /// The rate limiter of `service` (its figures: refused, keys tracked,
    /// overflowed), once a stack of it was built with a `rate_limit`
    /// section.
    pub fn rate_limit(&self, service: &str) -> Option<crate::ratelimit::RateLimitHandle> {
        let entry = self.shared.services.get(service)?;
        entry.stack.get().and_then(|parts| parts.rate_limit.handle())
    }

    /// How often the fallback of `service` answered, and failed to, once a
    /// stack of it was built.
    pub fn fallback_stats(&self, service: &str) -> Option<crate::recovery::FallbackStats> {
        let entry = self.shared.services.get(service)?;
        entry.stack.get().map(|parts| parts.fallback_counts.stats())
    }

    /// The fault injection of `service`, once a stack of it was built.
    pub fn faults(&self, service: &str) -> Option<FaultHandle> {
        let entry = self.shared.services.get(service)?;
        entry.stack.get().map(|parts| parts.fault.handle())
    }

    /// Starts a recovery of `service` now: after one gave up, or on an
    /// operator's word. It must be a registered service.
    pub fn trigger_recovery(&self, service: &str) -> Result<(), BoxError> {
        let entry = self
            .shared
            .services
            .get(service)
            .filter(|e| e.managed.is_some())
            .ok_or_else(|| UnknownName::Service(service.to_owned()))?;
        let _ = self
            .shared
            .commands
            .send(Command::TriggerRecovery(entry.name.clone()));
        Ok(())
    }

    /// Forces `service`'s breaker open (drains the service) until a person
    /// changes it again: the recovery manager rebuilds the service if it
    /// must, but never lets traffic in while this stands.
    pub fn force_open(&self, service: &str) -> Result<(), UnknownName> {
        self.operator_sets(service, CircuitState::ForcedOpen)
    }

    /// Switches `service`'s breaker off (every call let through, nothing
    /// recorded) until a person changes it again; no recovery holds it
    /// open meanwhile.
    pub fn disable(&self, service: &str) -> Result<(), UnknownName> {
        self.operator_sets(service, CircuitState::Disabled)
    }

    /// Closes `service`'s breaker with an empty window. A recovery under
    /// way finishes its rebuild but leaves the breaker closed; the breaker
    /// trips again by its own rules.
    pub fn reset(&self, service: &str) -> Result<(), UnknownName> {
        self.operator_sets(service, CircuitState::Closed)
    }

    fn operator_sets(&self, service: &str, state: CircuitState) -> Result<(), UnknownName> {
        let unknown = || UnknownName::Service(service.to_owned());
        let entry = self.shared.services.get(service).ok_or_else(unknown)?;
        // Made now if no stack was built yet: every stack built later
        // shares this breaker, so the choice holds for them too.
        let parts = crate::hardening::parts(&self.shared, service).map_err(|_| unknown())?;
        entry.steering.operator_sets(&parts.breaker, state);
        Ok(())
    }

    /// Whether the monitor runs (what `/health/live` answers): false
    /// before it started, after `shutdown()`, and once it died.
    pub fn alive(&self) -> bool {
        self.shared.monitor_started.load(Ordering::Acquire) && !*self.shared.stopped.borrow()
    }

    /// Whether `shutdown()` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// Stops the monitor and any recovery in progress, shuts every
    /// registered service down, closes every pool (its leases released,
    /// later requests refused with `PoolClosed`). Idempotent: a second
    /// call waits for the first to finish, then returns at once.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutdown.send_replace(true);
        let task = lock(&shared.task).take();
        if let Some(task) = task {
            // The monitor stops itself; if it died instead, the steps are
            // run below.
            let _ = task.await;
        }
        if shared.monitor_started.load(Ordering::SeqCst) {
            let mut stopped = shared.stopped.subscribe();
            let _ = stopped.wait_for(|stopped| *stopped).await;
            return;
        }
        crate::monitor::run_shutdown_steps(shared).await;
    }
}
