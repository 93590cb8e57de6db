//! Sending a request again: by `Clone`, or for HTTP by buffering the body
//! once so it can be replayed.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower_hardening_core::BoxError;
use tower_service::Service;

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
                data: Some(data),
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

/// Buffers each request body whose size is known up front to be at most
/// `max_body_bytes` (its `size_hint` has such an upper bound, as with a
/// `Content-Length` or an in-memory body), so the retry layer inside can
/// replay it. Any other body is passed through unread and the request is
/// sent once, never retried.
#[derive(Debug, Clone)]
pub struct BufferBodies<S> {
    inner: S,
    max_body_bytes: usize,
}

impl<S> BufferBodies<S> {
    pub(crate) fn new(inner: S, max_body_bytes: usize) -> Self {
        BufferBodies {
            inner,
            max_body_bytes,
        }
    }
}

impl<S, B> Service<Request<B>> for BufferBodies<S>
where
    S: Service<Request<ReplayBody<B>>, Error = BoxError> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferBodiesFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service goes with the future; this one keeps a clone
        // (tower's pattern for services that call the inner one later).
        let clone = self.inner.clone();
        let mut ready = mem::replace(&mut self.inner, clone);
        let fits = request
            .body()
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= self.max_body_bytes as u64);
        if !fits {
            let (parts, body) = request.into_parts();
            let future = ready.call(Request::from_parts(parts, ReplayBody::streaming(body)));
            return BufferBodiesFuture {
                state: BufferState::Calling { future },
            };
        }
        let (parts, body) = request.into_parts();
        BufferBodiesFuture {
            state: BufferState::Collecting {
                collect: body.collect(),
                parts: Some(parts),
                service: Some(ready),
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferBodies`].
    pub struct BufferBodiesFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
        B: Body,
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
    {
        Collecting {
            #[pin]
            collect: http_body_util::combinators::Collect<B>,
            parts: Option<http::request::Parts>,
            service: Option<S>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> std::fmt::Debug for BufferBodiesFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
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
                    let collected = ready!(collect.poll(cx)).map_err(Into::into)?;
                    let trailers = collected.trailers().cloned();
                    let body = ReplayBody::buffered(collected.to_bytes(), trailers);
                    let parts = parts.take().expect("polled after completion");
                    let mut service = service.take().expect("polled after completion");
                    let future = service.call(Request::from_parts(parts, body));
                    this.state.set(BufferState::Calling { future });
                }
                BufferStateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}
