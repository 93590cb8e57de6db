//! The admission layer's response future.
//!
//! It waits for admission (if the request was queued), then drives the
//! inner service's readiness and calls it, holding the request's units
//! from admission until the response (or, with
//! [`release_on_body_end`](crate::ResourceLimitLayer::release_on_body_end),
//! its body) is done. Dropped at any point, or unwound by a panic in the
//! inner service, it gives the units back.
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
use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify};
use tower_service::Service;

use crate::adaptive::Controller;
use crate::permit::Permit;
use crate::pool::Waiting;
use crate::release::{Held, ReleaseOn};

pin_project! {
    /// Waits for admission, then for the inner service's readiness, then
    /// runs the inner call, holding the request's units throughout.
    ///
    /// `F` is the inner service's future. It is a parameter of its own,
    /// not `S::Future`, so that whether this future is `Send` is read from
    /// its fields alone: a projection would make the compiler prove `S`'s
    /// `Service` bounds again inside an `async` block, where it cannot for
    /// an error type with a lifetime (`BoxError`).
    pub struct LimitFuture<S, Req, R, C, F> {
        #[pin]
        state: State<S, Req, F>,
        release: R,
        classify: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        // Queued: holds its place in the pool's queue, a clone of the inner
        // service that was never polled, and the request.
        Waiting {
            #[pin]
            waiting: Waiting,
            service: Option<S>,
            request: Option<Req>,
            adaptive: Option<Arc<Controller>>,
        },
        // Admitted: holds its units while the inner service gets ready.
        Readying {
            service: S,
            request: Option<Req>,
            permit: Option<Permit>,
        },
        Calling {
            #[pin]
            future: F,
            permit: Option<Permit>,
        },
        Failed {
            error: Option<BoxError>,
        },
        Done,
    }
}

impl<S, Req, R, C, F> std::fmt::Debug for LimitFuture<S, Req, R, C, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitFuture").finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req, R, C> LimitFuture<S, Req, R, C, S::Future> {
    /// Admitted already: next, the inner service's readiness.
    #[inline]
    pub(crate) fn admitted(
        service: S,
        request: Req,
        permit: Permit,
        release: R,
        classify: C,
    ) -> Self {
        LimitFuture {
            state: State::Readying {
                service,
                request: Some(request),
                permit: Some(permit),
            },
            release,
            classify,
        }
    }

    /// Admitted, the service ready and called already.
    #[inline]
    pub(crate) fn calling(future: S::Future, permit: Permit, release: R, classify: C) -> Self {
        LimitFuture {
            state: State::Calling {
                future,
                permit: Some(permit),
            },
            release,
            classify,
        }
    }

    pub(crate) fn waiting(
        waiting: Waiting,
        service: S,
        request: Req,
        adaptive: Option<Arc<Controller>>,
        release: R,
        classify: C,
    ) -> Self {
        LimitFuture {
            state: State::Waiting {
                waiting,
                service: Some(service),
                request: Some(request),
                adaptive,
            },
            release,
            classify,
        }
    }

    pub(crate) fn failed(error: BoxError, release: R, classify: C) -> Self {
        LimitFuture {
            state: State::Failed { error: Some(error) },
            release,
            classify,
        }
    }
}

impl<S, Req, R, C> Future for LimitFuture<S, Req, R, C, S::Future>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: ReleaseOn<S::Response>,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<R::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    mut waiting,
                    service,
                    request,
                    adaptive,
                } => {
                    let grant = match ready!(waiting.as_mut().poll(cx)) {
                        Ok(grant) => grant,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    };
                    let permit = Permit::grant(waiting.pool().clone().into(), grant)
                        .measured(adaptive.as_ref());
                    let next = State::Readying {
                        service: service.take().expect("admitted once"),
                        request: request.take(),
                        permit: Some(permit),
                    };
                    this.state.set(next);
                }
                StateProj::Readying {
                    service,
                    request,
                    permit,
                } => {
                    // A panic in the inner service gives the units back
                    // where it happens, not when the future is dropped.
                    match on_unwind(permit, drop, || service.poll_ready(cx)) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(error)) => {
                            // The inner service is broken, not slow: the
                            // units come back, nothing is measured.
                            permit.take();
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                        Poll::Ready(Ok(())) => {
                            let request = request.take().expect("called once");
                            let future = on_unwind(permit, drop, || service.call(request));
                            let permit = permit.take();
                            this.state.set(State::Calling { future, permit });
                        }
                    }
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(on_unwind(permit, drop, || future.poll(cx)));
                    let mut permit = permit.take().expect("polled after completion");
                    if permit.is_measured() {
                        permit.finished(this.classify.classify(&result));
                    }
                    // The inner future goes before its units come back.
                    this.state.set(State::Done);
                    return Poll::Ready(match result {
                        Ok(response) => Ok(this.release.attach(response, Held::new(permit))),
                        Err(error) => Err(error.into()),
                    });
                }
                StateProj::Failed { error } => {
                    let error = error.take().expect("polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("LimitFuture polled after completion"),
            }
        }
    }
}
