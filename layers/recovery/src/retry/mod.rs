//! Retries: a `tower::retry::Policy` with backoff, jitter, a shared budget
//! and one classifier, plus replayable HTTP request bodies.

mod layer;
mod policy;
mod replay;
mod shared;

pub use layer::{Builder, HttpRetryLayer, RetryBudget, RetryLayer};
pub use policy::{AnyRequest, RetryPolicy, RetryPredicate};
pub use replay::{
    BufferBodies, BufferBodiesFuture, CloneRequests, ReplayBody, ReplayHttp, ReplayRequest,
};
pub use shared::{RetryHandle, RetryStats};
