//! The breaker's response future.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_breaker::{CircuitBreakerLayer, CircuitOpen};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder().build().unwrap();
//! layer.handle().force_open();
//! let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! // `poll_ready` succeeds even while open; the future carries the rejection.
//! let future = svc.ready().await.unwrap().call(7);
//! let err = future.await.unwrap_err();
//! assert!(err.downcast_ref::<CircuitOpen>().is_some());
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify, Outcome, client_body_error_of, rejection_of};

use crate::permit::Permit;

/// An error that says nothing about the dependency: a rejection by a
/// layer below, or the client's own body failing.
pub(crate) fn is_not_evidence(error: &(dyn std::error::Error + 'static)) -> bool {
    rejection_of(error).is_some() || client_body_error_of(error).is_some()
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker):
    /// the inner future, whose result is classified and recorded, or a
    /// rejection ready at once.
    ///
    /// Dropped before finishing, the call is recorded as neither success
    /// nor failure and a half-open probe permit is handed back; a panic in
    /// the inner future is recorded as a failure as it passes. A rejection
    /// by a layer below (anything `rejection_of` recognises) or a failure
    /// of the client's own body is recorded as neither: it says nothing
    /// about the dependency. A half-open probe that takes longer than the
    /// probe deadline fails with [`ProbeTimedOut`](crate::ProbeTimedOut)
    /// and is recorded as a failure.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classifier: C,
            // A half-open probe's deadline; none for any other call.
            deadline: Option<Pin<Box<Sleep>>>,
        },
        Rejected {
            rejection: Option<BoxError>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                deadline: permit.probe_deadline(),
                permit: Some(permit),
                classifier,
            },
        }
    }

    pub(crate) fn rejected(rejection: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
                deadline,
            } => {
                let polled = on_unwind(permit, Permit::panicked, || future.poll(cx));
                let Poll::Ready(result) = polled else {
                    // A late probe is a failed probe, and its permit is free.
                    if let Some(sleep) = deadline
                        && sleep.as_mut().poll(cx).is_ready()
                        && let Some(permit) = permit.take()
                    {
                        let error = permit.probe_timed_out();
                        permit.finish(Some(true));
                        return Poll::Ready(Err(error.into()));
                    }
                    return Poll::Pending;
                };
                let result = result.map_err(Into::into);
                if let Some(permit) = permit.take() {
                    permit.finish(match &result {
                        Err(error) if is_not_evidence(&**error) => None,
                        _ => match classifier.classify(&result) {
                            Outcome::Success => Some(false),
                            Outcome::Failure => Some(true),
                            Outcome::Ignored => None,
                        },
                    });
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { rejection } => Poll::Ready(Err(rejection
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
