//! Resource pools: the seed's Resource Manager.

mod acquire;
mod error;
mod lease;
mod resource;
mod state;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tower_hardening_core::{BoxError, ConfigError, EventSink, Priority};

pub(crate) use acquire::Waiting;
pub use error::{PoolClosed, ReleaseError, Unsatisfiable};
pub use lease::Lease;
pub use resource::{Acquire, AttrValue, Resource};
pub use state::PoolStats;
use state::Settings;
pub(crate) use state::{Grant as GrantRef, PoolInner};

/// Builds a [`ResourcePool`]: either named resources
/// ([`resources`](Self::resources)) or interchangeable units
/// ([`capacity`](Self::capacity)).
///
/// | setting | default |
/// | --- | --- |
/// | `max_queue` | 1,000 waiters |
/// | `queue_timeout` | 5 s |
/// | `lease_ttl` | none: leases last until released |
/// | `aging` | none: priorities never rise while waiting |
#[derive(Debug, Clone)]
pub struct Builder {
    name: Arc<str>,
    resources: Option<Vec<Resource>>,
    capacity: Option<u64>,
    max_queue: usize,
    queue_timeout: Duration,
    lease_ttl: Option<Duration>,
    aging: Option<Duration>,
    events: Option<EventSink>,
}

impl Builder {
    /// The pool's units are these named resources.
    pub fn resources(mut self, resources: impl IntoIterator<Item = Resource>) -> Self {
        self.resources = Some(resources.into_iter().collect());
        self
    }

    /// The pool's units are `capacity` interchangeable units (slots,
    /// bytes, tokens).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The most requests that may wait; beyond it they fail at once with
    /// `Overloaded`.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// How long a request may wait before it fails with `QueueTimeout`.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Leases older than this are reclaimed (the holder sees it through
    /// [`Lease::is_reclaimed`], and an event is published).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// A waiter gains one priority level per `interval` waited, so low
    /// priorities are not starved by a stream of high ones.
    pub fn aging(mut self, interval: Duration) -> Self {
        self.aging = Some(interval);
        self
    }

    /// Publishes sheds and lease reclaims to `sink`.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// Checks the settings and builds the pool. With a lease TTL, the task
    /// that reclaims expired leases is spawned on the current tokio runtime
    /// (an error outside one).
    pub fn build(self) -> Result<ResourcePool, ConfigError> {
        let invalid = |field, value: String, allowed| {
            ConfigError::new("resource pool", field, value, allowed)
        };
        if self.name.trim().is_empty() {
            return Err(invalid(
                "name",
                format!("{:?}", self.name),
                "a non-empty name",
            ));
        }
        match (&self.resources, self.capacity) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "capacity",
                    "set with resources".to_owned(),
                    "either resources or a capacity, not both",
                ));
            }
            (None, None) | (None, Some(0)) => {
                return Err(invalid(
                    "capacity",
                    format!("{:?}", self.capacity),
                    "a capacity of at least 1, or named resources",
                ));
            }
            (Some(resources), None) => {
                if resources.is_empty() {
                    return Err(invalid(
                        "resources",
                        "[]".to_owned(),
                        "at least one resource",
                    ));
                }
                let mut names: Vec<&str> = resources.iter().map(Resource::name).collect();
                names.sort_unstable();
                if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
                    return Err(invalid(
                        "resources",
                        format!("{:?} twice", pair[0]),
                        "unique resource names",
                    ));
                }
            }
            _ => {}
        }
        if self.queue_timeout.is_zero() {
            return Err(invalid(
                "queue_timeout",
                "0s".to_owned(),
                "a duration above zero",
            ));
        }
        if self.lease_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(invalid(
                "lease_ttl",
                "0s".to_owned(),
                "a duration above zero",
            ));
        }
        if self.aging.is_some_and(|aging| aging.is_zero()) {
            return Err(invalid("aging", "0s".to_owned(), "a duration above zero"));
        }
        let runtime = match self.lease_ttl {
            Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|_| {
                invalid(
                    "lease_ttl",
                    format!("{:?}", self.lease_ttl),
                    "a tokio runtime to reclaim leases on (build the pool inside one)",
                )
            })?),
            None => None,
        };
        let inner = Arc::new(PoolInner::new(
            Settings {
                name: self.name,
                max_queue: self.max_queue,
                queue_timeout: self.queue_timeout,
                lease_ttl: self.lease_ttl,
                aging: self.aging,
                events: self.events,
            },
            self.resources,
            self.capacity.unwrap_or(0),
        ));
        if let Some(runtime) = runtime {
            runtime.spawn(reclaim_expired(
                Arc::downgrade(&inner),
                inner.lease_added.clone(),
            ));
        }
        Ok(ResourcePool { inner })
    }
}

/// Sleeps until the next lease expiry, reclaims, repeats. Holds the pool
/// only weakly: when the pool is dropped its `Drop` wakes this task, which
/// then ends.
async fn reclaim_expired(pool: Weak<PoolInner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        // Registered before looking, so a lease added meanwhile is not missed.
        let woken = wake.notified();
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            pool.reclaim_expired()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

/// Units or named resources shared by priority, with leases that come
/// back on drop, on TTL, and on shutdown: the seed's Resource Manager
/// (`requestResource` is [`acquire`](Self::acquire), `releaseResource` is
/// [`release`](Self::release), `getResourceStats` is [`stats`](Self::stats)).
///
/// Cheap to clone; every clone is the same pool.
#[derive(Debug, Clone)]
pub struct ResourcePool {
    pub(crate) inner: Arc<PoolInner>,
}

impl ResourcePool {
    /// A builder for a pool called `name`.
    pub fn builder(name: impl Into<Arc<str>>) -> Builder {
        Builder {
            name: name.into(),
            resources: None,
            capacity: None,
            max_queue: 1_000,
            queue_timeout: Duration::from_secs(5),
            lease_ttl: None,
            aging: None,
            events: None,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Waits (highest priority first, FIFO within a priority, up to the
    /// queue timeout) for what `request` asks, and returns it as a lease.
    ///
    /// Fails at once with [`Unsatisfiable`] if the pool can never grant it,
    /// with `Overloaded` if its priority is being shed or the queue is
    /// full, with [`PoolClosed`] after shutdown; fails with `QueueTimeout`
    /// after waiting too long.
    pub async fn acquire(&self, request: Acquire) -> Result<Lease, BoxError> {
        self.inner.precheck(&request)?;
        let owner = request.owner.clone();
        if let Some(grant) = self.inner.try_grant_now(&request, true) {
            return Ok(Lease::new(self.inner.clone(), grant, owner));
        }
        let grant = Waiting::enqueue(self.inner.clone(), request, true)?.await?;
        Ok(Lease::new(self.inner.clone(), grant, owner))
    }

    /// Releases a detached lease held by `owner`. A wrong owner or an id
    /// that is not active (released twice, reclaimed) is an error and
    /// releases nothing.
    pub fn release(&self, lease: u64, owner: &str) -> Result<(), ReleaseError> {
        self.inner.release_by_id(lease, owner)
    }

    /// The pool's counters now.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// Changes a capacity pool's size (a named pool ignores it). Shrinking
    /// below what is in use takes effect as units come back.
    pub fn set_capacity(&self, capacity: u64) {
        self.inner.set_capacity(capacity);
    }

    /// Stops granting the named resource; its holders see it in
    /// [`Lease::unhealthy_resources`]. `false` if no resource has the name.
    pub fn mark_unhealthy(&self, resource: &str) -> bool {
        self.inner.set_healthy(resource, false)
    }

    /// Grants the named resource again.
    pub fn mark_healthy(&self, resource: &str) -> bool {
        self.inner.set_healthy(resource, true)
    }

    /// Refuses requests below `priority` with `Overloaded`, waiting ones
    /// included, until [`stop_shedding`](Self::stop_shedding).
    pub fn shed_below(&self, priority: Priority) {
        self.inner.shed_below(priority);
    }

    /// Admits every priority again.
    pub fn stop_shedding(&self) {
        self.inner.stop_shedding();
    }

    /// Reclaims every lease and refuses every waiter and every later
    /// request with [`PoolClosed`]. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}
