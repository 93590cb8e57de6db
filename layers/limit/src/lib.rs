//! Resource pools and admission control: the seed's Resource Manager
//! ("resource allocation, priority-based queuing, automatic cleanup,
//! resource health tracking") and the admission layer of every hardened
//! service.
//!
//! - [`ResourcePool`]: named resources with attributes, or
//!   interchangeable units (slots, bytes); waiters served highest priority
//!   first, FIFO within a priority, optionally aged so low priorities are
//!   not starved; leases that come back on drop, on TTL and on shutdown;
//!   unhealthy resources; shedding below a priority; counters by priority.
//! - [`ResourceLimitLayer`]: per-request admission through a pool, with a
//!   lock-free fast path when capacity is free, or with a capacity that
//!   follows latency ([`AdaptiveLimit`]: gradient or AIMD). Admission
//!   comes before the inner service's readiness, so a queued request holds
//!   nothing of the layers below it.
//!
//! Rejections are core's types, so retry, breaker and metrics layers
//! recognise them without depending on this crate: `Overloaded` (queue
//! full, priority shed) and `QueueTimeout`, each with a `Retry-After`
//! hint; [`Unsatisfiable`] (asks for more than the pool can ever grant);
//! [`PoolClosed`] (after shutdown).
//!
//! # The seed's flow in Rust
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_limit::{Acquire, Priority, Resource, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let cpu = ResourcePool::builder("cpu")
//!     .resources((0..8).map(|i| Resource::new(format!("core-{i}")).attr("core", i)))
//!     .max_queue(1_000)
//!     .queue_timeout(Duration::from_secs(5))
//!     .lease_ttl(Duration::from_secs(60))
//!     .build()?;
//!
//! // requestResource('cpu', 'task-123', 2, { core: 0 })
//! let lease = cpu
//!     .acquire(Acquire::new("task-123").priority(Priority(2)).units(1).require("core", 0))
//!     .await?;
//! assert_eq!(lease.resources()[0].name(), "core-0");
//! let id = lease.detach(); // keep it past this scope
//!
//! // getResourceStats()
//! let stats = cpu.stats();
//! assert_eq!((stats.available, stats.active_leases), (7, 1)); // the seed's `ready`, `activeAllocations`
//!
//! // releaseResource(resource.id, 'task-123')
//! assert!(cpu.release(id, "someone-else").is_err()); // wrong owner: nothing released
//! cpu.release(id, "task-123")?;
//! assert_eq!(cpu.stats().available, 8);
//! # Ok(())
//! # }
//! ```

mod adaptive;
mod layer;
mod permit;
mod pool;
mod priority;
mod release;
mod service;

pub mod future;

pub use adaptive::AdaptiveLimit;
pub use layer::ResourceLimitLayer;
pub use pool::{
    Acquire, AttrValue, Lease, PoolBuilder, PoolClosed, PoolStats, ReleaseError, Resource,
    ResourcePool, Unsatisfiable,
};
pub use priority::{
    ContentLengthCost, CostOf, ExtensionPriority, HeaderPriority, OneUnit, PriorityOf,
};
pub use release::{Held, HoldingBody, OnBodyEnd, OnResponse, ReleaseOn};
pub use service::ResourceLimit;
pub use tower_hardening_core::{Overloaded, Priority, QueueTimeout};

/// The pool builder's former name.
#[deprecated(since = "0.1.0", note = "renamed `PoolBuilder`")]
pub type Builder = PoolBuilder;
