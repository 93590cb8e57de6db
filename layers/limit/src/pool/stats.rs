//! A pool's counters: capacity, what is free, held and waiting, and what
//! was granted, refused, timed out and reclaimed, by priority.
//!
//! ```
//! use tower_hardening_limit::{Acquire, Priority, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(4).build().unwrap();
//! let _lease = pool.acquire(Acquire::new("a").priority(Priority::HIGH)).await.unwrap();
//! let stats = pool.stats();
//! assert_eq!((stats.capacity, stats.available, stats.in_use), (4, 3, 1));
//! assert_eq!((stats.active_leases, stats.granted_total), (1, 1));
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tower_hardening_core::Priority;

use super::state::PoolInner;

/// A read of a pool's counters, from [`ResourcePool::stats`](crate::ResourcePool::stats).
///
/// With the `serde` feature it serializes with these field names (snake
/// case), the per-priority maps keyed by priority name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolStats {
    /// Units (or resources) the pool has.
    pub capacity: u64,
    /// Units free now (the seed's "ready"); 0 when a shrunk pool is still
    /// over its new capacity.
    pub available: u64,
    /// Units held now.
    pub in_use: u64,
    /// Tracked leases held now (per-request permits of the layer are not
    /// leases; they show in `in_use`).
    pub active_leases: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Requests waiting, by priority.
    pub queued_by_priority: BTreeMap<Priority, usize>,
    /// Grants so far.
    pub granted_total: u64,
    /// Requests refused (full queue, shedding) so far.
    pub rejected_total: u64,
    /// Refusals by priority.
    pub rejected_by_priority: BTreeMap<Priority, u64>,
    /// Requests that waited past the queue timeout so far.
    pub timed_out_total: u64,
    /// Timeouts by priority.
    pub timed_out_by_priority: BTreeMap<Priority, u64>,
    /// Leases taken back (TTL passed, or pool shut down) so far.
    pub reclaimed_total: u64,
    /// Names of resources marked unhealthy.
    pub unhealthy: Vec<String>,
}

impl PoolInner {
    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.lock();
        let capacity = self.capacity();
        let free = self.available.load(Ordering::Acquire);
        let available = if self.named {
            state.free_healthy() as u64
        } else {
            u64::try_from(free).unwrap_or(0)
        };
        let in_use = if self.named {
            state.held() as u64
        } else {
            // Free units go below zero when the pool shrank under units
            // in use: those are in use too.
            u64::try_from((i128::from(capacity) - i128::from(free)).max(0)).unwrap_or(u64::MAX)
        };
        let queued_by_priority: BTreeMap<Priority, usize> =
            state.queue.waiting_by_priority().collect();
        PoolStats {
            capacity,
            available,
            in_use,
            active_leases: state.leases.len(),
            queued: state.queue.waiting(),
            queued_by_priority,
            granted_total: self.granted_total.sum(),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
            rejected_by_priority: state.rejected.clone(),
            timed_out_total: self.timed_out_total.load(Ordering::Relaxed),
            timed_out_by_priority: state.timed_out.clone(),
            reclaimed_total: self.reclaimed_total.load(Ordering::Relaxed),
            unhealthy: state.unhealthy(),
        }
    }
}
