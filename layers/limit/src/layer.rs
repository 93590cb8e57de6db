use std::sync::Arc;

use tower_hardening_core::ConfigError;
use tower_layer::Layer;

use crate::adaptive::{AdaptiveLimit, Controller};
use crate::pool::ResourcePool;
use crate::priority::{ExtensionPriority, OneUnit};
use crate::release::{OnBodyEnd, OnResponse};
use crate::service::ResourceLimit;

/// Admission control through a [`ResourcePool`]: each request takes
/// `cost` units at its priority before reaching the inner service, waiting
/// in the pool's priority queue if need be, and gives them back when its
/// response future completes or is dropped.
///
/// Rejections (`Overloaded` for a full queue or shed priority,
/// `QueueTimeout`) come from the response future, never from
/// `poll_ready`. With free capacity and nobody waiting, admission is a
/// compare-and-swap on an atomic counter: no lock, no allocation.
///
/// The priority defaults to a [`Priority`](crate::Priority) in an
/// `http::Request`'s extensions, else `NORMAL`
/// ([`ExtensionPriority`]); other request types set
/// [`priority`](Self::priority). The cost defaults to one unit.
#[derive(Debug, Clone)]
pub struct ResourceLimitLayer<P = ExtensionPriority, K = OneUnit, R = OnResponse> {
    pool: ResourcePool,
    priority: P,
    cost: K,
    release: R,
    adaptive: Option<Arc<Controller>>,
}

impl ResourceLimitLayer {
    /// Admission through `pool` (shared with whatever else uses it).
    pub fn new(pool: ResourcePool) -> Self {
        ResourceLimitLayer {
            pool,
            priority: ExtensionPriority,
            cost: OneUnit,
            release: OnResponse,
            adaptive: None,
        }
    }

    /// Admission through a pool of its own whose capacity follows `limit`,
    /// measured from the latency of the requests it admits.
    pub fn adaptive(limit: AdaptiveLimit) -> Result<Self, ConfigError> {
        let initial = limit.validate()?;
        let pool = ResourcePool::builder("adaptive")
            .capacity(initial)
            .build()?;
        Ok(ResourceLimitLayer {
            pool,
            priority: ExtensionPriority,
            cost: OneUnit,
            release: OnResponse,
            adaptive: Some(Arc::new(limit.controller())),
        })
    }
}

impl<P, K, R> ResourceLimitLayer<P, K, R> {
    /// Where each request's priority comes from: any
    /// [`PriorityOf`](crate::PriorityOf), such as a closure or
    /// [`HeaderPriority`](crate::HeaderPriority).
    pub fn priority<P2>(self, priority: P2) -> ResourceLimitLayer<P2, K, R> {
        ResourceLimitLayer {
            pool: self.pool,
            priority,
            cost: self.cost,
            release: self.release,
            adaptive: self.adaptive,
        }
    }

    /// How many units each request costs: any [`CostOf`](crate::CostOf),
    /// such as `|req| content_length(req)` for a bytes pool.
    pub fn cost<K2>(self, cost: K2) -> ResourceLimitLayer<P, K2, R> {
        ResourceLimitLayer {
            pool: self.pool,
            priority: self.priority,
            cost,
            release: self.release,
            adaptive: self.adaptive,
        }
    }

    /// For `http::Response`s: hold the units until the response body has
    /// been read to its end (or dropped), not just until the response
    /// head arrives, so streaming responses count for their whole life.
    pub fn release_on_body_end(self) -> ResourceLimitLayer<P, K, OnBodyEnd> {
        ResourceLimitLayer {
            pool: self.pool,
            priority: self.priority,
            cost: self.cost,
            release: OnBodyEnd,
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

impl<S: Clone, P: Clone, K: Clone, R: Clone> Layer<S> for ResourceLimitLayer<P, K, R> {
    type Service = ResourceLimit<S, P, K, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ResourceLimit::new(
            inner,
            self.pool.inner.clone(),
            self.priority.clone(),
            self.cost.clone(),
            self.release.clone(),
            self.adaptive.clone(),
        )
    }
}
