//! A breaker that waits for the end of an HTTP response's body when the
//! head does not decide: gRPC puts the status of a streaming response in
//! its trailers.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_breaker::{CircuitBreakerLayer, CircuitState, SlidingWindow};
//! use tower_hardening_core::GrpcErrors;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .sliding_window(SlidingWindow::count(2))
//!     .minimum_calls(2)
//!     .classifier(GrpcErrors::default())
//!     .build()
//!     .unwrap()
//!     .at_end_of_stream();
//! let handle = layer.handle();
//! let mut svc = layer.layer(service_fn(|_: ()| async {
//!     // A head without `grpc-status`: the verdict waits for the trailers.
//!     Ok::<_, std::io::Error>(http::Response::new(String::from("streamed")))
//! }));
//! let response = svc.ready().await.unwrap().call(()).await.unwrap();
//! assert_eq!(handle.snapshot().calls, 0, "not decided before the body ends");
//! drop(response); // dropped unread: a cancellation, not evidence
//! assert_eq!(handle.state(), CircuitState::Closed);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify, ClassifyEos, Outcome};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::is_not_evidence;
use crate::handle::BreakerHandle;
use crate::permit::Permit;
use crate::service::{CircuitBreaker, Reservation};
use tower_hardening_core::stripe::PerStripe;

use crate::state::BreakerState;

fn verdict(outcome: Outcome) -> Option<bool> {
    match outcome {
        Outcome::Success => Some(false),
        Outcome::Failure => Some(true),
        Outcome::Ignored => None,
    }
}

/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) for HTTP responses
/// whose verdict may come at the end of the body, made by
/// [`at_end_of_stream`](crate::CircuitBreakerLayer::at_end_of_stream). The
/// classifier decides from the head when it can (any HTTP status, a
/// trailers-only gRPC error); otherwise the response's body carries the
/// call's permit and records the verdict from its trailers when it ends
/// (an error reading it is a failure, dropping it unread a cancellation).
#[derive(Debug, Clone)]
pub struct EosCircuitBreakerLayer<C> {
    pub(crate) state: Arc<PerStripe<Arc<BreakerState>>>,
    pub(crate) classifier: C,
}

impl<C> EosCircuitBreakerLayer<C> {
    /// The handle of this layer's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.state.local().clone())
    }
}

impl<S, C: Clone> Layer<S> for EosCircuitBreakerLayer<C> {
    type Service = EosCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        EosCircuitBreaker {
            inner: CircuitBreaker::new(inner, self.state.clone(), self.classifier.clone()),
        }
    }
}

/// The service [`EosCircuitBreakerLayer`] builds.
#[derive(Debug)]
pub struct EosCircuitBreaker<S, C> {
    inner: CircuitBreaker<S, C>,
}

impl<S: Clone, C: Clone> Clone for EosCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        EosCircuitBreaker {
            inner: self.inner.clone(),
        }
    }
}

impl<S, C> EosCircuitBreaker<S, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, C, Req, B: Body> Service<Req> for EosCircuitBreaker<S, C>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    C: Classify<http::Response<B>, BoxError> + ClassifyEos<B>,
{
    type Response = http::Response<EosBody<B, C>>;
    type Error = BoxError;
    type Future = EosFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        let classifier = self.inner.classifier().clone();
        match self.inner.take_reservation() {
            Reservation::Admitted(mut permit) => {
                permit.start();
                let deadline = permit.probe_deadline();
                let mut slot = Some(permit);
                let inner = self.inner.get_mut();
                let future = on_unwind(&mut slot, Permit::panicked, || inner.call(request));
                EosFuture {
                    kind: EosKind::Called {
                        future,
                        permit: slot,
                        classifier,
                        deadline,
                    },
                }
            }
            Reservation::Rejected(rejection) => EosFuture {
                kind: EosKind::Rejected {
                    rejection: Some(rejection),
                },
            },
            Reservation::Empty => {
                panic!("EosCircuitBreaker::call without poll_ready returning Ready(Ok) first")
            }
        }
    }
}

pin_project! {
    /// The response future of [`EosCircuitBreaker`].
    #[derive(Debug)]
    pub struct EosFuture<F, C> {
        #[pin]
        kind: EosKind<F, C>,
    }
}

pin_project! {
    #[project = EosKindProj]
    #[derive(Debug)]
    enum EosKind<F, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classifier: C,
            // A half-open probe's deadline, to its verdict; none otherwise.
            deadline: Option<Pin<Box<Sleep>>>,
        },
        Rejected {
            rejection: Option<BoxError>,
        },
    }
}

impl<F, C, B: Body, E> Future for EosFuture<F, C>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify<http::Response<B>, BoxError> + ClassifyEos<B>,
{
    type Output = Result<http::Response<EosBody<B, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            EosKindProj::Rejected { rejection } => Poll::Ready(Err(rejection
                .take()
                .expect("EosFuture polled after completion"))),
            EosKindProj::Called {
                future,
                permit,
                classifier,
                deadline,
            } => {
                let polled = on_unwind(permit, Permit::panicked, || future.poll(cx));
                let Poll::Ready(result) = polled else {
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
                match result {
                    Err(error) => {
                        let failed: Result<http::Response<B>, BoxError> = Err(error);
                        if let Some(permit) = permit.take() {
                            permit.finish(match &failed {
                                Err(error) if is_not_evidence(&**error) => None,
                                _ => verdict(classifier.classify(&failed)),
                            });
                        }
                        Poll::Ready(failed.map(|_| unreachable!("an error")))
                    }
                    Ok(response) => {
                        let mut waiting = None;
                        if let Some(mut permit) = permit.take() {
                            permit.head_arrived();
                            match ClassifyEos::<B>::classify_head(&*classifier, &response) {
                                Some(outcome) => permit.finish(verdict(outcome)),
                                // A body that already says it has ended is
                                // dropped unpolled by hyper: decide now.
                                None if response.body().is_end_stream() => {
                                    permit.finish(verdict(ClassifyEos::<B>::classify_end(
                                        &*classifier,
                                        None,
                                    )));
                                }
                                // A half-open probe waits for its real
                                // verdict too, within its deadline.
                                None => waiting = Some((permit, classifier.clone())),
                            }
                        }
                        let deadline = if waiting.is_some() {
                            deadline.take()
                        } else {
                            None
                        };
                        Poll::Ready(Ok(response.map(|inner| EosBody {
                            inner,
                            waiting,
                            deadline,
                        })))
                    }
                }
            }
        }
    }
}

fn inner_is_end<B: Body>(inner: Pin<&B>) -> bool {
    inner.get_ref().is_end_stream()
}

pin_project! {
    /// A response body that records its call's verdict when it ends:
    /// from its trailers, a failure if reading it fails, nothing (a
    /// cancellation, the probe permit handed back) if it is dropped
    /// unread.
    #[derive(Debug)]
    pub struct EosBody<B, C> {
        #[pin]
        inner: B,
        waiting: Option<(Permit, C)>,
        // A probe's deadline, carried over from its call.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<B, C> EosBody<B, C> {
    fn finish(waiting: &mut Option<(Permit, C)>, verdict_of: impl FnOnce(&C) -> Option<bool>) {
        if let Some((permit, classifier)) = waiting.take() {
            permit.finish(verdict_of(&classifier));
        }
    }
}

impl<B, C> Body for EosBody<B, C>
where
    B: Body,
    C: ClassifyEos<B>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        // A stream that outlives its probe's deadline failed the probe,
        // whether or not it has data ready; the stream itself goes on.
        if let Some(sleep) = this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            *this.deadline = None;
            Self::finish(this.waiting, |_| Some(true));
        }
        let mut inner = this.inner;
        let mut permit_slot = this.waiting.take().map(|(permit, c)| (Some(permit), c));
        // A panic in the body's own code is the dependency's failure.
        let polled = match &mut permit_slot {
            Some((permit, _)) => {
                on_unwind(permit, Permit::panicked, || inner.as_mut().poll_frame(cx))
            }
            None => inner.as_mut().poll_frame(cx),
        };
        if let Some((Some(permit), classifier)) = permit_slot {
            *this.waiting = Some((permit, classifier));
        }
        let Poll::Ready(frame) = polled else {
            return Poll::Pending;
        };
        let inner_ended = inner_is_end(inner.as_ref());
        match &frame {
            Some(Ok(frame)) if frame.is_trailers() => {
                let trailers = frame.trailers_ref();
                Self::finish(this.waiting, |c| verdict(c.classify_end(trailers)));
            }
            // hyper stops polling a body that says it has ended.
            Some(Ok(_)) if inner_ended => {
                Self::finish(this.waiting, |c| verdict(c.classify_end(None)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => Self::finish(this.waiting, |_| Some(true)),
            None => Self::finish(this.waiting, |c| verdict(c.classify_end(None))),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
