//! Boxing an inner service's errors, so the layers above can inspect them
//! (rejections are found by downcasting a `BoxError`).
//!
//! ```
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_hardening_recovery::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The retry layer boxes the inner service's `std::io::Error`s.
//! let inner = service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
//! let svc = RetryLayer::builder().build().unwrap().layer(inner);
//! let _boxed: &tower_hardening_recovery::BoxErrors<_> = svc.get_ref();
//! assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::BoxError;
use tower_service::Service;

/// Wraps a service so its error type is [`BoxError`].
#[derive(Debug, Clone)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S> BoxErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        BoxErrors { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        BoxErrorsFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`BoxErrors`].
    #[derive(Debug)]
    pub struct BoxErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Into::into))
    }
}
