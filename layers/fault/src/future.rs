//! The fault layer's response future.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_fault::FaultLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut svc = FaultLayer::builder().build().unwrap()
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! // Nothing injected at rate 0: the inner answer, boxed errors.
//! assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_hardening_core::BoxError;

pin_project! {
    /// The response future of [`Fault`](crate::Fault): the inner answer,
    /// an injected one, or none at all, after any injected latency.
    #[derive(Debug)]
    pub struct FaultFuture<F, Res> {
        // Boxed: latency is rare, and an inline `Sleep` would make every
        // future of every layer above larger.
        delay: Option<Pin<Box<Sleep>>>,
        #[pin]
        kind: Kind<F, Res>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, Res> {
        Called { #[pin] future: F },
        Ready { result: Option<Result<Res, BoxError>> },
        Hang,
    }
}

impl<F, Res> FaultFuture<F, Res> {
    pub(crate) fn called(future: F, latency: Option<Duration>) -> Self {
        FaultFuture {
            delay: latency.map(|d| Box::pin(tokio::time::sleep(d))),
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn ready(result: Result<Res, BoxError>, latency: Option<Duration>) -> Self {
        FaultFuture {
            delay: latency.map(|d| Box::pin(tokio::time::sleep(d))),
            kind: Kind::Ready {
                result: Some(result),
            },
        }
    }

    pub(crate) fn hang() -> Self {
        FaultFuture {
            delay: None,
            kind: Kind::Hang,
        }
    }
}

impl<F, Res, E> Future for FaultFuture<F, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(delay) = this.delay.as_mut() {
            ready!(delay.as_mut().poll(cx));
            *this.delay = None;
        }
        match this.kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Ready { result } => {
                Poll::Ready(result.take().expect("FaultFuture polled after completion"))
            }
            KindProj::Hang => Poll::Pending,
        }
    }
}
