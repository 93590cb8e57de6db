//! What an admitted request holds: its units (or named resources) and,
//! for an adaptive limit, when it started.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_limit::{ResourceLimitLayer, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let mut svc = ResourceLimitLayer::new(pool.clone())
//!     .priority(|_: &u32| Default::default())
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! let future = svc.ready().await.unwrap().call(1);
//! assert_eq!(pool.stats().in_use, 1); // admitted: the permit holds the unit
//! drop(future); // cancelled before it ran: the unit comes back
//! assert_eq!(pool.stats().in_use, 0);
//! # }
//! ```

use std::sync::Arc;

use tokio::time::Instant;
use tower_hardening_core::Outcome;
use tower_hardening_core::stripe;

use crate::adaptive::Controller;
use crate::pool::{Grant, PoolInner};

/// Units a request holds while it runs; returned on drop (completion,
/// cancellation or panic).
#[derive(Debug)]
pub(crate) struct Permit {
    /// Through the admitting thread's stripe on the fast path, so the
    /// reference count is not one line every core writes.
    pool: stripe::Held<PoolInner>,
    held: Held,
    adaptive: Option<(Arc<Controller>, Instant)>,
}

#[derive(Debug)]
enum Held {
    /// Interchangeable units: given back without the lock unless someone
    /// waits.
    Units(u64),
    /// Named resources (boxed: the fast path's permits, which hold units,
    /// stay small, and so does every response future that carries one).
    Grant(Box<Grant>),
}

impl Permit {
    #[inline]
    pub(crate) fn units(pool: stripe::Held<PoolInner>, units: u64) -> Self {
        Permit {
            pool,
            held: Held::Units(units),
            adaptive: None,
        }
    }

    pub(crate) fn grant(pool: stripe::Held<PoolInner>, grant: Grant) -> Self {
        let held = if pool.is_named() {
            Held::Grant(Box::new(grant))
        } else {
            Held::Units(grant.units)
        };
        Permit {
            pool,
            held,
            adaptive: None,
        }
    }

    /// Starts the clock of an adaptive limit, if any.
    #[inline]
    pub(crate) fn measured(mut self, controller: Option<&Arc<Controller>>) -> Self {
        self.adaptive = controller.map(|c| (c.clone(), Instant::now()));
        self
    }

    /// Whether the request's outcome feeds an adaptive limit.
    #[inline]
    pub(crate) fn is_measured(&self) -> bool {
        self.adaptive.is_some()
    }

    /// The request finished (not cancelled, not panicked): feed its
    /// latency and outcome to the adaptive limit, if any.
    #[inline]
    pub(crate) fn finished(&mut self, outcome: Outcome) {
        if let Some((controller, started)) = self.adaptive.take() {
            controller.sample(started, outcome, &self.pool);
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        match &self.held {
            Held::Units(units) => self.pool.return_units(*units),
            Held::Grant(grant) => {
                self.pool.release_grant(grant, false);
            }
        }
    }
}
