//! The admission service: takes units in `call`, never in `poll_ready`.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_limit::{ResourceLimitLayer, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let mut svc = ResourceLimitLayer::new(pool)
//!     .priority(|_: &u32| Default::default())
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x * 2) }));
//! assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
//! let _inner = svc.get_ref(); // the wrapped service
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_hardening_core::{BoxError, Classify};
use tower_service::Service;

use crate::adaptive::Controller;
use crate::future::LimitFuture;
use crate::permit::Permit;
use crate::pool::{Acquire, PoolInner, Waiting};
use crate::priority::{CostOf, PriorityOf};
use crate::release::ReleaseOn;
use tower_hardening_core::stripe::{Held, PerStripe};

/// The service [`ResourceLimitLayer`](crate::ResourceLimitLayer) builds.
///
/// Its `poll_ready` is always ready and reserves nothing, here or below:
/// a request is admitted in `call` (at once when units are free and
/// nobody waits, else in the pool's queue), and only then does its
/// response future drive `ready()` on a clone of the inner service and
/// call it. So a queued request holds nothing of the layers below it (a
/// breaker's half-open probe, a `ConcurrencyLimit` permit, a `Buffer`
/// slot), and the units it took come back when its future completes,
/// fails (the inner readiness included), panics or is dropped.
#[derive(Debug, Clone)]
pub struct ResourceLimit<S, P, K, R, C> {
    inner: S,
    /// The pool, reached through the calling thread's stripe.
    pool: Arc<PerStripe<Arc<PoolInner>>>,
    priority: P,
    cost: K,
    release: R,
    classify: C,
    adaptive: Option<Arc<Controller>>,
    /// The owner named on queued requests; made once, not per request.
    owner: Arc<str>,
}

impl<S, P, K, R, C> ResourceLimit<S, P, K, R, C> {
    pub(crate) fn new(
        inner: S,
        pool: Arc<PerStripe<Arc<PoolInner>>>,
        priority: P,
        cost: K,
        release: R,
        classify: C,
        adaptive: Option<Arc<Controller>>,
    ) -> Self {
        ResourceLimit {
            inner,
            pool,
            priority,
            cost,
            release,
            classify,
            adaptive,
            owner: Arc::from("request"),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, K, R, C, Req> Service<Req> for ResourceLimit<S, P, K, R, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: PriorityOf<Req>,
    K: CostOf<Req>,
    R: ReleaseOn<S::Response>,
    C: Classify<S::Response, S::Error>,
{
    type Response = R::Response;
    type Error = BoxError;
    type Future = LimitFuture<S, Req, R, C>;

    /// Always ready: admission happens in `call` and its future, and the
    /// inner service's readiness is awaited only once admitted.
    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let stripe = self.pool.stripe();
        let pool = &stripe.0;
        let units = self.cost.bounded_cost(&request, pool.capacity());
        // Fast path: free units and nobody waiting.
        if !pool.is_named() && pool.admits_now(units) && pool.try_take_units(units) {
            let held = Held::Striped(Arc::clone(stripe));
            let permit = Permit::units(held, units).measured(self.adaptive.as_ref());
            // Admitted at once, so nothing waits: ask the inner service
            // whether it is ready now, and call it if so (the common case:
            // no clone of the stack below, whose reference counts would
            // otherwise be written on every call). If not, the service
            // that was asked (and may have reserved something, or kept a
            // waker) goes with this request, whose future drives `ready()`
            // with the task's waker, and a fresh clone takes its place:
            // a readiness it reserves is spent by this request alone.
            let mut noop = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(Ok(())) = self.inner.poll_ready(&mut noop) {
                let future = self.inner.call(request);
                return LimitFuture::calling(
                    future,
                    permit,
                    self.release.clone(),
                    self.classify.clone(),
                );
            }
            let fresh = self.inner.clone();
            let asked = std::mem::replace(&mut self.inner, fresh);
            return LimitFuture::admitted(
                asked,
                request,
                permit,
                self.release.clone(),
                self.classify.clone(),
            );
        }
        let priority = self.priority.priority_of(&request);
        let ask = Acquire::new(self.owner.clone())
            .priority(priority)
            .units(units);
        let pool = self.pool.local();
        if let Err(error) = pool.precheck(&ask) {
            return LimitFuture::failed(error, self.release.clone(), self.classify.clone());
        }
        if let Some(grant) = pool.try_grant_now(&ask, false) {
            let permit = Permit::grant(self.pool.held(), grant).measured(self.adaptive.as_ref());
            return LimitFuture::admitted(
                self.inner.clone(),
                request,
                permit,
                self.release.clone(),
                self.classify.clone(),
            );
        }
        match Waiting::enqueue(pool.clone(), ask, false) {
            // The clone is never polled until admitted: it holds nothing.
            Ok(waiting) => LimitFuture::waiting(
                waiting,
                self.inner.clone(),
                request,
                self.adaptive.clone(),
                self.release.clone(),
                self.classify.clone(),
            ),
            Err(error) => LimitFuture::failed(error, self.release.clone(), self.classify.clone()),
        }
    }
}
