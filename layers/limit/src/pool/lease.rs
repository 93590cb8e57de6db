//! A granted share of a pool, released on drop, or detached and released
//! later by id and owner.
//!
//! ```
//! use tower_hardening_limit::{Acquire, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let id = pool.acquire(Acquire::new("task-1")).await.unwrap().detach();
//! assert_eq!(pool.stats().active_leases, 1); // kept past its scope
//! pool.release(id, "task-1").unwrap();
//! assert_eq!(pool.stats().active_leases, 0);
//! # }
//! ```

use std::sync::Arc;

use super::resource::Resource;
use super::state::{Grant, PoolInner};

/// A granted share of a pool. Dropping it releases it; [`detach`](Self::detach)
/// keeps it past its scope, to be released later by id and owner.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<PoolInner>,
    grant: Grant,
    owner: Arc<str>,
    released: bool,
}

impl Lease {
    pub(crate) fn new(pool: Arc<PoolInner>, grant: Grant, owner: Arc<str>) -> Self {
        Lease {
            pool,
            grant,
            owner,
            released: false,
        }
    }

    /// The lease's id, for [`ResourcePool::release`](crate::ResourcePool::release).
    pub fn id(&self) -> u64 {
        self.grant.lease
    }

    /// How many units it holds.
    pub fn units(&self) -> u64 {
        self.grant.units
    }

    /// Who holds it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The named resources it holds (none for a capacity pool).
    pub fn resources(&self) -> Vec<Resource> {
        self.grant
            .resources
            .iter()
            .map(|&i| self.pool.resource(i))
            .collect()
    }

    /// Names of the resources it holds that were marked unhealthy since.
    pub fn unhealthy_resources(&self) -> Vec<String> {
        self.pool.unhealthy_among(&self.grant.resources)
    }

    /// Whether the pool took it back (its TTL passed or the pool shut
    /// down): its units may already be someone else's.
    pub fn is_reclaimed(&self) -> bool {
        !self.pool.lease_is_active(self.grant.lease)
    }

    /// Keeps the lease active after this value is dropped; release it with
    /// `pool.release(id, owner)` (or let its TTL reclaim it).
    #[must_use = "the id is the only way to release a detached lease"]
    pub fn detach(mut self) -> u64 {
        self.released = true;
        self.grant.lease
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            // Already reclaimed leases release nothing.
            self.pool.release_grant(&self.grant, true);
        }
    }
}
