//! Retries: a `tower::retry::Policy` with backoff, jitter, a shared budget
//! and one classifier, plus replayable HTTP request bodies.
//!
//! ```
//! use tower_hardening_recovery::{RetryBudget, RetryLayer};
//!
//! let retry = RetryLayer::builder()
//!     .max_attempts(4)
//!     .budget(RetryBudget::default())
//!     .build()
//!     .unwrap();
//! assert_eq!(retry.handle().stats().attempts, 0);
//! ```

mod budget;
mod layer;
mod policy;
mod replay;
mod service;
mod shared;

pub use layer::{HttpRetryLayer, RetryBudget, RetryBuilder, RetryLayer};
pub use policy::{AnyRequest, IdempotentHttp, RetryPolicy, RetryPredicate};
pub use replay::{
    BufferBodies, BufferBodiesFuture, CloneRequests, DEFAULT_BODY_TIMEOUT, NeverReplay, ReplayBody,
    ReplayHttp, ReplayRequest, UploadProgress, UploadState,
};
pub use service::{RetryFuture, RetryService};
pub use shared::{RetryHandle, RetryStats};
