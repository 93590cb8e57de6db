//! The admission layer: its configuration, and building the service.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_hardening_limit::{
//!     ContentLengthCost, HeaderPriority, Priority, ResourceLimitLayer, ResourcePool,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Request bodies in memory: at most 64 MiB at once, in KiB.
//! let bodies = ResourcePool::builder("request-bodies")
//!     .capacity(64 * 1_024)
//!     .queue_timeout(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//! let layer = ResourceLimitLayer::new(bodies)
//!     .priority(HeaderPriority::new("x-priority").ceiling(Priority::HIGH))
//!     .cost(ContentLengthCost::new().bytes_per_unit(1_024));
//! let _stack = ServiceBuilder::new().layer(layer).service_fn(|_: http::Request<()>| async {
//!     Ok::<_, std::io::Error>(http::Response::new(()))
//! });
//! # }
//! ```

use std::sync::Arc;

use tower_hardening_core::{ConfigError, ErrorsAsFailures};
use tower_layer::Layer;

use crate::adaptive::{AdaptiveLimit, Controller};
use tower_hardening_core::stripe::PerStripe;

use crate::pool::{PoolInner, ResourcePool};
use crate::priority::{ExtensionPriority, OneUnit};
use crate::release::{OnBodyEnd, OnResponse};
use crate::service::ResourceLimit;

/// Admission control through a [`ResourcePool`]: each request takes
/// `cost` units at its priority before reaching the inner service, waiting
/// in the pool's priority queue if need be, and gives them back when its
/// response future completes or is dropped.
///
/// Rejections come from the response future, never from `poll_ready`:
/// `Overloaded` for a full queue or a shed priority and `QueueTimeout`,
/// both with a `Retry-After` hint (the queue timeout, at most a minute);
/// `Unsatisfiable` for a cost the pool can never grant; `PoolClosed` after
/// shutdown. With free capacity and nobody waiting, admission is a
/// compare-and-swap on an atomic counter: no lock, no allocation.
///
/// The service's `poll_ready` is always ready: the inner service's
/// readiness is awaited by the response future, after admission, so a
/// queued request holds nothing of the layers below it.
///
/// The priority defaults to a [`Priority`](crate::Priority) in an
/// `http::Request`'s extensions, else `NORMAL`
/// ([`ExtensionPriority`]); other request types set
/// [`priority`](Self::priority). The cost defaults to one unit.
#[derive(Debug, Clone)]
pub struct ResourceLimitLayer<
    P = ExtensionPriority,
    K = OneUnit,
    R = OnResponse,
    C = ErrorsAsFailures,
> {
    pool: ResourcePool,
    /// The pool, one reference per stripe, made once for every service the
    /// layer builds.
    stripes: Arc<PerStripe<Arc<PoolInner>>>,
    priority: P,
    cost: K,
    release: R,
    classify: C,
    adaptive: Option<Arc<Controller>>,
}

impl ResourceLimitLayer {
    /// Admission through `pool` (shared with whatever else uses it).
    pub fn new(pool: ResourcePool) -> Self {
        ResourceLimitLayer {
            stripes: Arc::new(PerStripe::new(pool.inner.clone())),
            pool,
            priority: ExtensionPriority,
            cost: OneUnit,
            release: OnResponse,
            classify: ErrorsAsFailures,
            adaptive: None,
        }
    }

    /// Admission through a pool of its own whose capacity follows `limit`,
    /// measured from the latency and outcome (see
    /// [`classify`](Self::classify)) of the requests it admits.
    pub fn adaptive(limit: AdaptiveLimit) -> Result<Self, ConfigError> {
        let initial = limit.validate()?;
        let pool = ResourcePool::builder("adaptive")
            .capacity(initial)
            .build()?;
        Ok(ResourceLimitLayer {
            stripes: Arc::new(PerStripe::new(pool.inner.clone())),
            pool,
            priority: ExtensionPriority,
            cost: OneUnit,
            release: OnResponse,
            classify: ErrorsAsFailures,
            adaptive: Some(Arc::new(limit.controller())),
        })
    }
}

impl<P, K, R, C> ResourceLimitLayer<P, K, R, C> {
    /// Where each request's priority comes from: any
    /// [`PriorityOf`](crate::PriorityOf), such as a closure or
    /// [`HeaderPriority`](crate::HeaderPriority).
    #[must_use]
    pub fn priority<P2>(self, priority: P2) -> ResourceLimitLayer<P2, K, R, C> {
        ResourceLimitLayer {
            pool: self.pool,
            stripes: self.stripes,
            priority,
            cost: self.cost,
            release: self.release,
            classify: self.classify,
            adaptive: self.adaptive,
        }
    }

    /// How many units each request costs: any [`CostOf`](crate::CostOf),
    /// such as [`ContentLengthCost`](crate::ContentLengthCost) for a pool
    /// of bytes (clamped to the pool's capacity, since the client declares
    /// it) or a closure of your own.
    #[must_use]
    pub fn cost<K2>(self, cost: K2) -> ResourceLimitLayer<P, K2, R, C> {
        ResourceLimitLayer {
            pool: self.pool,
            stripes: self.stripes,
            priority: self.priority,
            cost,
            release: self.release,
            classify: self.classify,
            adaptive: self.adaptive,
        }
    }

    /// For `http::Response`s: hold the units until the response body has
    /// been read to its end (or dropped), not just until the response
    /// head arrives, so streaming responses count for their whole life.
    #[must_use]
    pub fn release_on_body_end(self) -> ResourceLimitLayer<P, K, OnBodyEnd, C> {
        self.release_on(OnBodyEnd)
    }

    /// When units come back, by a [`ReleaseOn`](crate::ReleaseOn) of your
    /// own (at the response, at the end of its body, or with a deadline).
    #[must_use]
    pub fn release_on<R2>(self, release: R2) -> ResourceLimitLayer<P, K, R2, C> {
        ResourceLimitLayer {
            pool: self.pool,
            stripes: self.stripes,
            priority: self.priority,
            cost: self.cost,
            release,
            classify: self.classify,
            adaptive: self.adaptive,
        }
    }

    /// What counts as a success for an [adaptive](Self::adaptive) limit,
    /// which grows on successes only (default: every `Ok` is a success,
    /// every `Err` a failure; for HTTP, core's `HttpServerErrors` makes
    /// 5xx responses failures). Ignored without an adaptive limit.
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> ResourceLimitLayer<P, K, R, C2> {
        ResourceLimitLayer {
            pool: self.pool,
            stripes: self.stripes,
            priority: self.priority,
            cost: self.cost,
            release: self.release,
            classify,
            adaptive: self.adaptive,
        }
    }

    /// The pool requests are admitted through.
    pub fn pool(&self) -> &ResourcePool {
        &self.pool
    }

    /// The adaptive limit now, for an adaptive layer.
    pub fn adaptive_limit(&self) -> Option<u64> {
        self.adaptive.as_ref().map(|c| c.limit())
    }
}

impl<S: Clone, P: Clone, K: Clone, R: Clone, C: Clone> Layer<S> for ResourceLimitLayer<P, K, R, C> {
    type Service = ResourceLimit<S, P, K, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ResourceLimit::new(
            inner,
            self.stripes.clone(),
            self.priority.clone(),
            self.cost.clone(),
            self.release.clone(),
            self.classify.clone(),
            self.adaptive.clone(),
        )
    }
}
