//! The admission layer's response future.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_limit::{Priority, ResourceLimitLayer, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let mut svc = ResourceLimitLayer::new(pool.clone())
//!     .priority(|_: &u32| Priority::NORMAL)
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! let future = svc.ready().await.unwrap().call(7); // the unit is taken here...
//! assert_eq!(pool.stats().in_use, 1);
//! assert_eq!(future.await.unwrap(), 7); // ...and given back when it completes
//! assert_eq!(pool.stats().in_use, 0);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::BoxError;
use tower_service::Service;

use crate::adaptive::Controller;
use crate::permit::Permit;
use crate::pool::{PoolInner, Waiting};
use crate::release::{Held, ReleaseOn};

pin_project! {
    /// Waits for admission, then runs the inner call holding its units.
    pub struct LimitFuture<S, Req, R>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        release: R,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Waiting {
            #[pin]
            waiting: Waiting,
            service: Option<S>,
            request: Option<Req>,
            pool: Arc<PoolInner>,
            adaptive: Option<Arc<Controller>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<S: Service<Req>, Req, R> std::fmt::Debug for LimitFuture<S, Req, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitFuture").finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req, R> LimitFuture<S, Req, R> {
    #[inline]
    pub(crate) fn calling(future: S::Future, permit: Permit, release: R) -> Self {
        LimitFuture {
            state: State::Calling {
                future,
                permit: Some(permit),
            },
            release,
        }
    }

    pub(crate) fn waiting(
        waiting: Waiting,
        service: S,
        request: Req,
        pool: Arc<PoolInner>,
        adaptive: Option<Arc<Controller>>,
        release: R,
    ) -> Self {
        LimitFuture {
            state: State::Waiting {
                waiting,
                service: Some(service),
                request: Some(request),
                pool,
                adaptive,
            },
            release,
        }
    }

    pub(crate) fn failed(error: BoxError, release: R) -> Self {
        LimitFuture {
            state: State::Failed { error: Some(error) },
            release,
        }
    }
}

impl<S, Req, R> Future for LimitFuture<S, Req, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: ReleaseOn<S::Response>,
{
    type Output = Result<R::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    waiting,
                    service,
                    request,
                    pool,
                    adaptive,
                } => {
                    let grant = ready!(waiting.poll(cx))?;
                    let permit = Permit::grant(pool.clone(), grant).measured(adaptive.as_ref());
                    let mut service = service.take().expect("polled after completion");
                    let request = request.take().expect("polled after completion");
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        permit: Some(permit),
                    });
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(future.poll(cx));
                    let mut permit = permit.take().expect("polled after completion");
                    permit.finished();
                    return Poll::Ready(match result {
                        Ok(response) => Ok(this.release.attach(response, Held::new(permit))),
                        Err(error) => Err(error.into()),
                    });
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            }
        }
    }
}
