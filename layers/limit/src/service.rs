use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_hardening_core::BoxError;
use tower_service::Service;

use crate::adaptive::Controller;
use crate::future::LimitFuture;
use crate::permit::Permit;
use crate::pool::{Acquire, PoolInner, Waiting};
use crate::priority::{CostOf, PriorityOf};
use crate::release::ReleaseOn;

/// The service [`ResourceLimitLayer`](crate::ResourceLimitLayer) builds.
#[derive(Debug, Clone)]
pub struct ResourceLimit<S, P, K, R> {
    inner: S,
    pool: Arc<PoolInner>,
    priority: P,
    cost: K,
    release: R,
    adaptive: Option<Arc<Controller>>,
    /// The owner named on queued requests; made once, not per request.
    owner: Arc<str>,
}

impl<S, P, K, R> ResourceLimit<S, P, K, R> {
    pub(crate) fn new(
        inner: S,
        pool: Arc<PoolInner>,
        priority: P,
        cost: K,
        release: R,
        adaptive: Option<Arc<Controller>>,
    ) -> Self {
        ResourceLimit {
            inner,
            pool,
            priority,
            cost,
            release,
            adaptive,
            owner: Arc::from("request"),
        }
    }
}

impl<S, P, K, R, Req> Service<Req> for ResourceLimit<S, P, K, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: PriorityOf<Req>,
    K: CostOf<Req>,
    R: ReleaseOn<S::Response>,
{
    type Response = R::Response;
    type Error = BoxError;
    type Future = LimitFuture<S, Req, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let units = self.cost.cost_of(&request);
        // Fast path: free units and nobody waiting.
        if !self.pool.is_named() && self.pool.admits_now(units) && self.pool.try_take_units(units) {
            let permit = Permit::units(self.pool.clone(), units).measured(self.adaptive.as_ref());
            return LimitFuture::calling(self.inner.call(request), permit, self.release.clone());
        }
        let priority = self.priority.priority_of(&request);
        let ask = Acquire::new(self.owner.clone())
            .priority(priority)
            .units(units);
        if let Err(error) = self.pool.precheck(&ask) {
            return LimitFuture::failed(error, self.release.clone());
        }
        // The ready service goes with the future, which calls it once
        // admitted; this one keeps a clone.
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        if let Some(grant) = self.pool.try_grant_now(&ask, false) {
            let permit = Permit::grant(self.pool.clone(), grant).measured(self.adaptive.as_ref());
            let mut ready = ready;
            return LimitFuture::calling(ready.call(request), permit, self.release.clone());
        }
        match Waiting::enqueue(self.pool.clone(), ask, false) {
            Ok(waiting) => LimitFuture::waiting(
                waiting,
                ready,
                request,
                self.pool.clone(),
                self.adaptive.clone(),
                self.release.clone(),
            ),
            Err(error) => LimitFuture::failed(error, self.release.clone()),
        }
    }
}
