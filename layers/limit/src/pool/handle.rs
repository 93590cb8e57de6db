//! The pool handle: the seed's Resource Manager API.
//!
//! ```
//! use tower_hardening_limit::{Acquire, Priority, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(2).build().unwrap();
//! pool.shed_below(Priority::HIGH);
//! assert!(pool.acquire(Acquire::new("batch").priority(Priority::LOW)).await.is_err());
//! pool.stop_shedding();
//! let lease = pool.acquire(Acquire::new("batch").priority(Priority::LOW)).await.unwrap();
//! assert_eq!(lease.units(), 1);
//! # }
//! ```

use std::sync::Arc;

use tower_hardening_core::{BoxError, Priority};

use super::builder::PoolBuilder;
use super::error::ReleaseError;
use super::lease::Lease;
use super::resource::Acquire;
use super::state::PoolInner;
use super::stats::PoolStats;
use super::waiting::Waiting;

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
    /// The most waiters a pool may be built with
    /// ([`PoolBuilder::max_queue`]): a bound on the memory and the lock
    /// time a queue can take under overload.
    pub const MAX_QUEUE: usize = 1_000_000;

    /// A builder for a pool called `name`.
    pub fn builder(name: impl Into<Arc<str>>) -> PoolBuilder {
        PoolBuilder::new(name.into())
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Waits (highest priority first, FIFO within a priority, up to the
    /// queue timeout) for what `request` asks, and returns it as a lease.
    ///
    /// Fails at once with [`Unsatisfiable`](crate::Unsatisfiable) if the pool can never grant it,
    /// with `Overloaded` if its priority is being shed or the queue is
    /// full, with [`PoolClosed`](crate::PoolClosed) after shutdown; fails with `QueueTimeout`
    /// after waiting too long.
    pub async fn acquire(&self, request: Acquire) -> Result<Lease, BoxError> {
        self.inner.precheck(&request)?;
        let owner = request.owner.clone();
        if let Some(grant) = self.inner.try_grant_now(&request, true) {
            return Ok(Lease::new(self.inner.clone(), grant?, owner));
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

    /// Whether the pool hands out named resources (one unit is one
    /// resource, e.g. a core) rather than a capacity of plain units.
    pub fn has_named_resources(&self) -> bool {
        self.inner.named
    }

    /// The pool's counters now.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// Changes a capacity pool's size (a named pool ignores it), at most
    /// `i64::MAX`. Shrinking below what is in use takes effect as units
    /// come back; waiters asking for more than the new capacity are
    /// refused with [`Unsatisfiable`](crate::Unsatisfiable) rather than
    /// left to block the queue.
    pub fn set_capacity(&self, capacity: u64) {
        self.inner
            .set_capacity(capacity.min(i64::MAX.unsigned_abs()));
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
    /// request with [`PoolClosed`](crate::PoolClosed). Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}
