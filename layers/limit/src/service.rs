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
use tower_hardening_core::ready::{CallNow, Pristine};
use tower_hardening_core::stripe::{self, Held, PerStripe};

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
    /// A never-polled copy of `inner`, to replace it after it was asked
    /// for readiness and was not ready or failed.
    pristine: Pristine<S>,
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

impl<S: Clone, P, K, R, C> ResourceLimit<S, P, K, R, C> {
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
            pristine: Pristine::new(&inner),
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
    type Future = LimitFuture<S, Req, R, C, S::Future>;

    /// Always ready: admission happens in `call` and its future, and the
    /// inner service's readiness is awaited only once admitted.
    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let thread = stripe::thread_number();
        let stripe = self.pool.stripe_at(thread);
        let pool = &stripe.0;
        let units = self.cost.bounded_cost(&request, pool.capacity());
        // Fast path: free units and nobody waiting (never for a pool of
        // named resources: `try_take_units_on` refuses).
        if pool.admits_now(units) && pool.try_take_units_on(units, thread) {
            let held = Held::Striped(Arc::clone(stripe));
            let permit = Permit::units(held, units).measured(self.adaptive.as_ref());
            // Admitted at once, so nothing waits: call the inner service
            // itself if it is ready now (no clone of the stack below);
            // see `tower_hardening_core::ready`.
            return match self.pristine.call_now(&mut self.inner, request) {
                CallNow::Called(future) => LimitFuture::calling(
                    future,
                    permit,
                    self.release.clone(),
                    self.classify.clone(),
                ),
                CallNow::NotReady(asked, request) => LimitFuture::admitted(
                    asked,
                    request,
                    permit,
                    self.release.clone(),
                    self.classify.clone(),
                ),
                CallNow::Failed(error, _request) => {
                    // The units come back now; the failed service is gone.
                    drop(permit);
                    LimitFuture::failed(error.into(), self.release.clone(), self.classify.clone())
                }
            };
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
            let grant = match grant {
                Ok(grant) => grant,
                Err(error) => {
                    return LimitFuture::failed(error, self.release.clone(), self.classify.clone());
                }
            };
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
