//! The upstream's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_hardening_core::BoxError;

/// The future an [`Upstream`](crate::Upstream) returns: every attempt of
/// one request (first, retries, hedges) runs inside it, so dropping it
/// cancels them all and frees what they hold.
///
/// It is boxed: the attempts race one another in a `select`, and the
/// request's whole retry and hedge loop lives in one `async` block.
pub struct ResponseFuture<Res> {
    inner: Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>,
}

impl<Res> ResponseFuture<Res> {
    pub(crate) fn new(inner: impl Future<Output = Result<Res, BoxError>> + Send + 'static) -> Self {
        ResponseFuture {
            inner: Box::pin(inner),
        }
    }
}

impl<Res> fmt::Debug for ResponseFuture<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<Res> Future for ResponseFuture<Res> {
    type Output = Result<Res, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
