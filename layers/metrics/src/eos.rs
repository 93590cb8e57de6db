//! Metrics for HTTP responses whose outcome may come at the end of the
//! body: gRPC puts the status of a streaming response in its trailers.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_core::GrpcErrors;
//! use tower_hardening_metrics::MetricsLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = MetricsLayer::new("streams")
//!     .classifier(GrpcErrors::default())
//!     .at_end_of_stream();
//! let mut svc = layer.layer(service_fn(|_: ()| async {
//!     Ok::<_, std::io::Error>(http::Response::new(String::from("streamed")))
//! }));
//! let response = svc.ready().await.unwrap().call(()).await.unwrap();
//! // Counted when its body ends (here: dropped unread, a cancellation).
//! drop(response);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_hardening_core::fallback;
use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{
    BoxError, Classify, ClassifyEos, Outcome, client_body_error_of, rejection_of,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::InFlight;
use crate::layer::{Handles, MetricsLayer, SharedHandles};

type Outcomes = fn(&Handles) -> &(metrics::Counter, metrics::Histogram);

fn outcome_of(outcome: Outcome) -> Outcomes {
    match outcome {
        Outcome::Failure => |h| &h.failure,
        Outcome::Success => |h| &h.success,
        Outcome::Ignored => |h| &h.ignored,
    }
}

/// [`MetricsLayer`] for HTTP responses whose outcome may come at the end
/// of the body, made by [`MetricsLayer::at_end_of_stream`]: decided at the
/// head when the classifier can; otherwise the request stays in flight
/// until its body ends, and is counted from the trailers (a failure if
/// reading the body fails; nothing but the in-flight gauge if it is
/// dropped unread). Durations then run to the end of the body.
#[derive(Debug, Clone)]
pub struct EosMetricsLayer<C> {
    pub(crate) handles: SharedHandles,
    pub(crate) classifier: C,
}

impl<C> MetricsLayer<C> {
    /// The same metrics (the same handles) for HTTP responses whose outcome
    /// may come in the trailers: see [`EosMetricsLayer`]. The classifier
    /// must also be a `ClassifyEos` (`GrpcErrors`, `HttpServerErrors`).
    #[must_use]
    pub fn at_end_of_stream(self) -> EosMetricsLayer<C> {
        let (handles, classifier) = self.into_parts();
        EosMetricsLayer {
            handles,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for EosMetricsLayer<C> {
    type Service = EosMetricsService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        EosMetricsService {
            inner,
            handles: self.handles.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service [`EosMetricsLayer`] builds.
#[derive(Debug, Clone)]
pub struct EosMetricsService<S, C> {
    inner: S,
    handles: SharedHandles,
    classifier: C,
}

impl<S, C> EosMetricsService<S, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req, B> Service<Req> for EosMetricsService<S, C>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    C: Classify<http::Response<B>, BoxError> + ClassifyEos<B>,
{
    type Response = http::Response<MetricsBody<B, C>>;
    type Error = BoxError;
    type Future = EosMetricsFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        // In flight from here: a panic in the inner `call` itself (not its
        // future) is a failure, and leaves the gauge as it found it.
        let mut in_flight = Some(InFlight::begin(&self.handles));
        let inner = &mut self.inner;
        let future = on_unwind(&mut in_flight, InFlight::panicked, || inner.call(request));
        EosMetricsFuture {
            future,
            in_flight,
            classifier: self.classifier.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`EosMetricsService`].
    #[derive(Debug)]
    pub struct EosMetricsFuture<F, C> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
        classifier: C,
    }
}

impl<F, C, B, E> Future for EosMetricsFuture<F, C>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    C: Classify<http::Response<B>, BoxError> + ClassifyEos<B>,
{
    type Output = Result<http::Response<MetricsBody<B, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = this.future;
        let held = this.in_flight;
        let watch = <C as Classify<http::Response<B>, BoxError>>::COUNTS_FALLBACKS;
        if watch {
            fallback::clear_mark();
        }
        let result =
            ready!(on_unwind(held, InFlight::panicked, || future.poll(cx))).map_err(Into::into);
        let fell_back = watch && fallback::take_mark();
        let Some(in_flight) = held.take() else {
            return Poll::Ready(result.map(|response| response.map(MetricsBody::decided)));
        };
        match result {
            Err(error) => {
                let failed: Result<http::Response<B>, BoxError> = Err(error);
                let outcome: Outcomes = match &failed {
                    Err(error) if rejection_of(&**error).is_some() => |h| &h.rejected,
                    Err(error) if client_body_error_of(&**error).is_some() => |h| &h.ignored,
                    _ => outcome_of(this.classifier.classify(&failed)),
                };
                in_flight.finish(outcome);
                Poll::Ready(failed.map(|_| unreachable!("an error")))
            }
            Ok(response) if fell_back => {
                in_flight.finish(|h| &h.fallback);
                Poll::Ready(Ok(response.map(MetricsBody::decided)))
            }
            Ok(response) => {
                let waiting = match ClassifyEos::<B>::classify_head(&*this.classifier, &response) {
                    Some(outcome) => {
                        in_flight.finish(outcome_of(outcome));
                        None
                    }
                    None if response.body().is_end_stream() => {
                        let end = ClassifyEos::<B>::classify_end(&*this.classifier, None);
                        in_flight.finish(outcome_of(end));
                        None
                    }
                    None => Some((in_flight, this.classifier.clone())),
                };
                Poll::Ready(Ok(response.map(|inner| MetricsBody { inner, waiting })))
            }
        }
    }
}

pin_project! {
    /// A response body that counts its request when it ends (see
    /// [`EosMetricsLayer`]).
    #[derive(Debug)]
    pub struct MetricsBody<B, C> {
        #[pin]
        inner: B,
        waiting: Option<(InFlight, C)>,
    }
}

impl<B, C> MetricsBody<B, C> {
    fn decided(inner: B) -> Self {
        MetricsBody {
            inner,
            waiting: None,
        }
    }
}

impl<B, C> Body for MetricsBody<B, C>
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
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        let ended = inner.as_ref().get_ref().is_end_stream();
        let verdict: Option<Outcome> = match &frame {
            Some(Ok(frame)) if frame.is_trailers() => this
                .waiting
                .as_ref()
                .map(|(_, c)| c.classify_end(frame.trailers_ref())),
            Some(Ok(_)) if ended => this.waiting.as_ref().map(|(_, c)| c.classify_end(None)),
            Some(Ok(_)) => None,
            Some(Err(_)) => Some(Outcome::Failure),
            None => this.waiting.as_ref().map(|(_, c)| c.classify_end(None)),
        };
        if let Some(outcome) = verdict
            && let Some((in_flight, _)) = this.waiting.take()
        {
            in_flight.finish(outcome_of(outcome));
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
