//! Helpers the limit crate's integration tests share.

#![allow(dead_code, reason = "each test file uses a part")]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::service_fn;
use tower_hardening_core::BoxError;
use tower_hardening_limit::{Priority, ResourcePool};

/// Lets spawned tasks run (paused clock: no time passes).
pub(crate) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A capacity pool named `slots` with a 30 s queue timeout.
pub(crate) fn pool(capacity: u64) -> ResourcePool {
    ResourcePool::builder("slots")
        .capacity(capacity)
        .queue_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Every request at NORMAL priority.
pub(crate) fn normal(_: &u32) -> Priority {
    Priority::NORMAL
}

/// A service whose calls each wait for one permit of `gate`.
pub(crate) fn gated(
    gate: Arc<Semaphore>,
) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |x: u32| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            Ok::<_, BoxError>(x)
        }
    })
}
