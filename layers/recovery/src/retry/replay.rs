//! Sending a request again: by `Clone`, or for HTTP by buffering the body
//! once so it can be replayed.
//!
//! ```
//! use http::Request;
//! use http_body_util::Full;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_hardening_recovery::{ReplayBody, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let inner = service_fn(|request: Request<ReplayBody<Full<bytes::Bytes>>>| async move {
//!     Ok::<_, std::io::Error>(request.body().is_replayable())
//! });
//! let svc = RetryLayer::builder().build().unwrap().http(1024).layer(inner);
//! let get = Request::get("/").body(Full::from("small")).unwrap();
//! assert!(svc.clone().oneshot(get).await.unwrap(), "buffered: it can be retried");
//! let post = Request::post("/").body(Full::from("small")).unwrap();
//! assert!(!svc.oneshot(post).await.unwrap(), "not idempotent: sent once as it came");
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_hardening_core::BoxError;
use tower_hardening_core::ready::{CallNow, Pristine};
use tower_service::Service;

use super::policy::{IdempotentHttp, RetryPredicate};

/// How a retry policy makes another copy of a request.
pub trait ReplayRequest<Req>: Clone {
    /// A copy of `request` to send again, or `None` if it cannot be sent
    /// again (it is then never retried).
    fn replay(&self, request: &Req) -> Option<Req>;
}

/// Replays any `Req: Clone` by cloning it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequests;

impl<Req: Clone> ReplayRequest<Req> for CloneRequests {
    #[inline]
    fn replay(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Replays an `http::Request` whose body [`BufferBodies`] buffered; a body
/// that was too large to buffer is sent once and never retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayHttp;

impl<B> ReplayRequest<Request<ReplayBody<B>>> for ReplayHttp {
    fn replay(&self, request: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let body = request.body().replay()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

pin_project! {
    /// A request body that was either buffered in full (and can be sent
    /// again) or is passed through as it came (and cannot).
    #[derive(Debug)]
    pub struct ReplayBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    #[derive(Debug)]
    enum Inner<B> {
        Buffered {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
        Streaming {
            #[pin]
            body: B,
        },
    }
}

impl<B> ReplayBody<B> {
    fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        ReplayBody {
            inner: Inner::Buffered {
                // An empty body ends at once rather than with an empty frame.
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    fn streaming(body: B) -> Self {
        ReplayBody {
            inner: Inner::Streaming { body },
        }
    }

    fn replay(&self) -> Option<Self> {
        match &self.inner {
            Inner::Buffered { data, trailers } => Some(ReplayBody {
                inner: Inner::Buffered {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            Inner::Streaming { .. } => None,
        }
    }

    /// Whether the body was buffered and can be sent again.
    pub fn is_replayable(&self) -> bool {
        matches!(self.inner, Inner::Buffered { .. })
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            InnerProj::Streaming { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|result| {
                    result
                        .map(|frame| {
                            frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                        })
                        .map_err(Into::into)
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Inner::Streaming { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Inner::Streaming { body } => body.size_hint(),
        }
    }
}

/// Buffers each retryable request body whose size is known up front to be
/// at most `max_body_bytes`, so the retry layer inside can replay it; made
/// by [`RetryLayer::http`](crate::RetryLayer::http).
///
/// A request is retryable when the predicate allows it: by default
/// [`IdempotentHttp`] (idempotent methods, or an `Idempotency-Key`
/// header), or the one given to
/// [`RetryBuilder::idempotent`](crate::RetryBuilder::idempotent). A body
/// fits when its `size_hint` has an upper bound no larger than the limit
/// (a `Content-Length`, an in-memory body). Every other request is passed
/// through unread and sent once, never retried, whatever its error
/// (a timeout included).
///
/// It never holds the inner service's readiness while it reads a body:
/// `poll_ready` is ready at once, and the response future first buffers
/// the body, then drives `ready()` on a clone of the inner service and
/// calls it (tower's `Oneshot`). A slow client keeps no permit of the
/// layers below. Bound how long a client may take to send its body
/// outside this layer (hyper's header and body timeouts, or a timeout
/// layer around it).
///
/// A body that promised at most `max_body_bytes` in its `size_hint` and
/// then sends more is refused with an error rather than buffered past the
/// limit.
#[derive(Debug, Clone)]
pub struct BufferBodies<S, P> {
    inner: S,
    /// A never-polled copy of `inner` (see `tower_hardening_core::ready`).
    pristine: Pristine<S>,
    max_body_bytes: usize,
    predicate: Option<P>,
}

impl<S: Clone, P> BufferBodies<S, P> {
    pub(crate) fn new(inner: S, max_body_bytes: usize, predicate: Option<P>) -> Self {
        BufferBodies {
            pristine: Pristine::new(&inner),
            inner,
            max_body_bytes,
            predicate,
        }
    }

    /// The wrapped service (the retrying service).
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

    fn may_retry<B>(&self, request: &Request<B>) -> bool
    where
        P: RetryPredicate<Request<B>>,
    {
        match &self.predicate {
            Some(predicate) => predicate.may_retry(request),
            None => IdempotentHttp.may_retry(request),
        }
    }
}

impl<S, P> BufferBodies<S, P> {
    /// Calls the inner service itself when it is ready now; see
    /// `tower_hardening_core::ready`.
    fn call_now<B>(&mut self, request: Request<ReplayBody<B>>) -> BufferBodiesFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>, Error = BoxError> + Clone,
        B: Body,
        B::Error: Into<BoxError>,
    {
        let state = match self.pristine.call_now(&mut self.inner, request) {
            CallNow::Called(future) => BufferState::Called { future },
            CallNow::NotReady(asked, request) => BufferState::Calling {
                oneshot: Oneshot::new(asked, request),
            },
            CallNow::Failed(error, _request) => BufferState::Failed { error: Some(error) },
        };
        BufferBodiesFuture { state }
    }
}

impl<S, P, B> Service<Request<B>> for BufferBodies<S, P>
where
    S: Service<Request<ReplayBody<B>>, Error = BoxError> + Clone,
    P: RetryPredicate<Request<B>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferBodiesFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is taken by the response future, once the body is in.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let max = self.max_body_bytes;
        let fits = request
            .body()
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= max as u64);
        let retryable = fits && self.may_retry(&request);
        let (parts, body) = request.into_parts();
        if !retryable || body.is_end_stream() {
            // Nothing to read first (a body that is not kept, or one that
            // has already ended, as a GET's usually has): no reason to
            // wait, so no clone of the service below.
            let body = if retryable {
                ReplayBody::buffered(Bytes::new(), None)
            } else {
                ReplayBody::streaming(body)
            };
            return self.call_now(Request::from_parts(parts, body));
        }
        // The body is read before readiness is taken (a slow client holds
        // nothing below), so this request gets its own clone.
        BufferBodiesFuture {
            state: BufferState::Collecting {
                collect: Limited::new(body, max).collect(),
                parts: Some(parts),
                service: Some(self.inner.clone()),
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferBodies`]: reads the body (if it is
    /// buffered), then waits for the inner service and calls it.
    pub struct BufferBodiesFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: BufferState<S, B>,
    }
}

pin_project! {
    #[project = BufferStateProj]
    enum BufferState<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        Collecting {
            #[pin]
            collect: Collect<Limited<B>>,
            parts: Option<http::request::Parts>,
            service: Option<S>,
        },
        Calling {
            #[pin]
            oneshot: Oneshot<S, Request<ReplayBody<B>>>,
        },
        Called {
            #[pin]
            future: S::Future,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<S, B> std::fmt::Debug for BufferBodiesFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferBodiesFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for BufferBodiesFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Error = BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                BufferStateProj::Collecting {
                    collect,
                    parts,
                    service,
                } => {
                    let collected = ready!(collect.poll(cx))?;
                    let trailers = collected.trailers().cloned();
                    let body = ReplayBody::buffered(collected.to_bytes(), trailers);
                    let parts = parts
                        .take()
                        .expect("BufferBodiesFuture polled after completion");
                    let service = service
                        .take()
                        .expect("BufferBodiesFuture polled after completion");
                    let oneshot = Oneshot::new(service, Request::from_parts(parts, body));
                    this.state.set(BufferState::Calling { oneshot });
                }
                BufferStateProj::Calling { oneshot } => return oneshot.poll(cx),
                BufferStateProj::Called { future } => return future.poll(cx),
                BufferStateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "BufferBodiesFuture polled after completion".into());
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}
