//! The future of a queued request: waits for its answer up to the queue
//! timeout, and leaves the queue when dropped.
//!
//! ```
//! use tower_hardening_limit::{Acquire, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let holder = pool.acquire(Acquire::new("holder")).await.unwrap();
//! let mut queued = Box::pin(pool.acquire(Acquire::new("queued")));
//! assert!(futures_util::FutureExt::now_or_never(&mut queued).is_none());
//! assert_eq!(pool.stats().queued, 1);
//! drop(queued); // cancelled: it leaves the queue
//! assert_eq!(pool.stats().queued, 0);
//! drop(holder);
//! assert_eq!(pool.stats().available, 1);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_hardening_core::{BoxError, QueueTimeout};

use super::resource::Acquire;
use super::state::{Grant, PoolInner};

pin_project! {
    /// Waits in a pool's queue for a grant, up to the queue timeout.
    /// Dropped while waiting, it leaves the queue; a grant made to it at
    /// that moment goes back to the pool.
    pub(crate) struct Waiting {
        pool: Arc<PoolInner>,
        id: Option<u64>,
        // Boxed: only queued requests pay for it, and it keeps the
        // admission future small for the fast path that never waits.
        // (`sleep` saturates a timeout the clock cannot represent.)
        timeout: Pin<Box<Sleep>>,
    }

    impl PinnedDrop for Waiting {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(id) = this.id.take() {
                this.pool.abandon(id, false);
            }
        }
    }
}

impl Waiting {
    /// Queues `request`; `Err` at once when the queue is full.
    pub(crate) fn enqueue(
        pool: Arc<PoolInner>,
        request: Acquire,
        tracked: bool,
    ) -> Result<Self, BoxError> {
        let id = pool.enqueue(request, tracked)?;
        let timeout = Box::pin(tokio::time::sleep(pool.settings.queue_timeout));
        Ok(Waiting {
            pool,
            id: Some(id),
            timeout,
        })
    }
}

impl Waiting {
    /// The pool it waits in.
    pub(crate) fn pool(&self) -> &Arc<PoolInner> {
        &self.pool
    }
}

impl Future for Waiting {
    type Output = Result<Grant, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let id = this.id.expect("Waiting polled after completion");
        if let Some(result) = this.pool.poll_waiter(id, cx.waker()) {
            *this.id = None;
            return Poll::Ready(result);
        }
        if this.timeout.as_mut().poll(cx).is_ready() {
            *this.id = None;
            this.pool.abandon(id, true);
            let error =
                QueueTimeout::new(this.pool.name().clone(), this.pool.settings.queue_timeout)
                    .with_retry_after(this.pool.retry_hint());
            return Poll::Ready(Err(Box::new(error)));
        }
        Poll::Pending
    }
}
