//! Errors of a pool: the rejections (core's types, so every layer
//! recognises them) and why a release by id released nothing.
//!
//! ```
//! use tower_hardening_limit::{Acquire, ReleaseError, ResourcePool, Unsatisfiable};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(2).build().unwrap();
//! let err = pool.acquire(Acquire::new("greedy").units(3)).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<Unsatisfiable>().unwrap().pool(), "slots");
//! let err = pool.release(42, "nobody").unwrap_err();
//! assert!(matches!(err, ReleaseError::UnknownLease { lease: 42, .. }));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

pub use tower_hardening_core::{PoolClosed, Unsatisfiable};

/// Why [`ResourcePool::release`](crate::ResourcePool::release) released
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    /// No active lease has this id (never granted, already released, or
    /// reclaimed).
    UnknownLease {
        /// The pool.
        pool: Arc<str>,
        /// The id given.
        lease: u64,
    },
    /// The lease belongs to someone else; it stays active.
    WrongOwner {
        /// The pool.
        pool: Arc<str>,
        /// The id given.
        lease: u64,
        /// Who asked.
        given: Arc<str>,
    },
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::UnknownLease { pool, lease } => write!(
                f,
                "pool `{pool}` has no active lease {lease} (already released, reclaimed, or never granted)"
            ),
            ReleaseError::WrongOwner { pool, lease, given } => write!(
                f,
                "lease {lease} of pool `{pool}` is not held by `{given}`; nothing was released"
            ),
        }
    }
}

impl std::error::Error for ReleaseError {}
