//! The rate limiter's response future: the inner service's, or a refusal
//! that is ready at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::{BoxError, RateLimited};

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit).
    #[derive(Debug)]
    pub struct RateLimitFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] future: F },
        Refused { refusal: Option<RateLimited> },
    }
}

impl<F> RateLimitFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        RateLimitFuture {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn refused(refusal: RateLimited) -> Self {
        RateLimitFuture {
            kind: Kind::Refused {
                refusal: Some(refusal),
            },
        }
    }
}

impl<F, T, E> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => Poll::Ready(ready!(future.poll(cx)).map_err(Into::into)),
            KindProj::Refused { refusal } => Poll::Ready(Err(refusal
                .take()
                .expect("a refused rate-limit future polled after it finished")
                .into())),
        }
    }
}
