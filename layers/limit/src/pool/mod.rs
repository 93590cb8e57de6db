//! Resource pools: the seed's Resource Manager.
//!
//! ```
//! use tower_hardening_limit::{Acquire, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let lease = pool.acquire(Acquire::new("a")).await.unwrap();
//! assert_eq!(pool.stats().available, 0);
//! drop(lease); // comes back on drop
//! assert_eq!(pool.stats().available, 1);
//! # }
//! ```

mod builder;
mod dispatch;
mod error;
mod handle;
mod lease;
mod order;
mod queue;
mod reclaim;
mod resource;
mod slots;
mod state;
mod stats;
mod units;
mod waiting;

pub use builder::PoolBuilder;
pub use error::{PoolClosed, ReleaseError, Unsatisfiable};
pub use handle::ResourcePool;
pub use lease::Lease;
pub use resource::{Acquire, AttrValue, Resource};
pub(crate) use state::{Grant, PoolInner};
pub use stats::PoolStats;
pub(crate) use waiting::Waiting;
