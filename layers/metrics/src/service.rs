use std::task::{Context, Poll};

use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify};
use tower_service::Service;

use crate::future::{InFlight, MetricsFuture};
use crate::layer::SharedHandles;

/// The service [`MetricsLayer`](crate::MetricsLayer) builds.
#[derive(Debug, Clone)]
pub struct MetricsService<S, C> {
    inner: S,
    handles: SharedHandles,
    classifier: C,
}

impl<S, C> MetricsService<S, C> {
    pub(crate) fn new(inner: S, handles: SharedHandles, classifier: C) -> Self {
        MetricsService {
            inner,
            handles,
            classifier,
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

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for MetricsService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = MetricsFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        // In flight from here: a panic in the inner `call` itself (not its
        // future) is a failure, and leaves the gauge as it found it.
        let mut in_flight = Some(InFlight::begin(&self.handles));
        let inner = &mut self.inner;
        let future = on_unwind(&mut in_flight, InFlight::panicked, || inner.call(request));
        MetricsFuture::new(future, in_flight, self.classifier.clone())
    }
}
