use std::fmt;
use std::sync::Arc;

/// A request the pool can never grant: more units than it has, or no
/// resource matching its requirements. Returned at once, never queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsatisfiable {
    pub(crate) pool: Arc<str>,
    pub(crate) reason: String,
}

impl fmt::Display for Unsatisfiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool `{}` can never grant this request: {}",
            self.pool, self.reason
        )
    }
}

impl std::error::Error for Unsatisfiable {}

/// The pool was shut down; nothing more is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolClosed {
    pub(crate) pool: Arc<str>,
}

impl fmt::Display for PoolClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool `{}` is shut down", self.pool)
    }
}

impl std::error::Error for PoolClosed {}

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
