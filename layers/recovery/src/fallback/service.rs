use std::sync::Arc;
use std::task::{Context, Poll};

use tower_hardening_core::{BoxError, Classify};
use tower_service::Service;

use super::answer::Answer;
use super::future::FallbackFuture;
use super::layer::Shared;

/// The service [`FallbackLayer`](super::FallbackLayer) builds.
#[derive(Debug)]
pub struct Fallback<S, A, C> {
    inner: S,
    shared: Arc<Shared<A, C>>,
}

impl<S: Clone, A, C> Clone for Fallback<S, A, C> {
    fn clone(&self) -> Self {
        Fallback {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, A, C> Fallback<S, A, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<A, C>>) -> Self {
        Fallback { inner, shared }
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

impl<S, A, C, Req> Service<Req> for Fallback<S, A, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: Answer<S::Response>,
    C: Classify<S::Response, BoxError>,
{
    type Response = A::Response;
    type Error = BoxError;
    type Future = FallbackFuture<S::Future, A, C, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // A service that is broken is not a request refused: no fallback.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let shared = (self.shared.answer.answers() && !self.shared.on.is_empty())
            .then(|| self.shared.clone());
        FallbackFuture::new(self.inner.call(request), shared)
    }
}
