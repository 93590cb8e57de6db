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
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_hardening_core::ready::{CallNow, Pristine};
use tower_hardening_core::{BoxError, ClientBodyError};
use tower_service::Service;

use super::policy::{IdempotentHttp, RetryPredicate};

/// How a retry policy makes another copy of a request.
pub trait ReplayRequest<Req>: Clone {
    /// A copy of `request` to send again, or `None` if it cannot be sent
    /// again (it is then never retried).
    fn replay(&self, request: &Req) -> Option<Req>;
}

/// Replays nothing: every request is sent once and never retried. It asks
/// nothing of `Req` (not even `Clone`): for a stack whose retries are off
/// over requests that cannot be copied (axum's `Body`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverReplay;

impl<Req> ReplayRequest<Req> for NeverReplay {
    #[inline]
    fn replay(&self, _: &Req) -> Option<Req> {
        None
    }
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
            // How long the whole body may take once the service first
            // reads it (see `upload_timeout`), then the running deadline:
            // the time it waited for admission is not the client's.
            timeout: Option<Duration>,
            deadline: Option<Pin<Box<Sleep>>>,
            // Told when the body ends or fails (see `ReplayBody::watch`).
            progress: Option<ProgressGuard>,
        },
    }
}

/// How a streamed request body is getting on, for a layer below that must
/// not measure the upload (see [`ReplayBody::watch`]).
///
/// The state changes while the body is polled, which is while the service
/// that reads it runs: check it after polling that service.
#[derive(Debug, Default)]
pub struct UploadProgress {
    state: AtomicU8,
}

/// Tells the progress the body was dropped: whatever the service did not
/// read it does not need.
#[derive(Debug)]
struct ProgressGuard(Arc<UploadProgress>);

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.0.set(ENDED);
    }
}

const READING: u8 = 0;
const ENDED: u8 = 1;
const FAILED: u8 = 2;
const TIMED_OUT: u8 = 3;

/// Where a streamed upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Not all read yet.
    Reading,
    /// Read to its end.
    Ended,
    /// Reading it failed: a client error.
    Failed,
    /// It did not arrive within its deadline.
    TimedOut,
}

impl UploadProgress {
    /// Where the upload is now.
    pub fn state(&self) -> UploadState {
        match self.state.load(Ordering::Acquire) {
            READING => UploadState::Reading,
            ENDED => UploadState::Ended,
            FAILED => UploadState::Failed,
            _ => UploadState::TimedOut,
        }
    }

    fn set(&self, state: u8) {
        // The first end is the one that counts.
        let _ = self
            .state
            .compare_exchange(READING, state, Ordering::AcqRel, Ordering::Acquire);
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

    fn streaming(body: B, upload_timeout: Option<Duration>) -> Self {
        ReplayBody {
            inner: Inner::Streaming {
                body,
                timeout: upload_timeout,
                deadline: None,
                progress: None,
            },
        }
    }

    /// For a streamed body not yet at its end: a handle that says when it
    /// ends, fails or times out. `None` for a buffered body, or one that
    /// has ended (there is nothing to wait for). Allocates once.
    pub fn watch(&mut self) -> Option<Arc<UploadProgress>>
    where
        B: Body,
    {
        match &mut self.inner {
            Inner::Streaming { body, progress, .. } if !body.is_end_stream() => {
                let guard = progress
                    .get_or_insert_with(|| ProgressGuard(Arc::new(UploadProgress::default())));
                Some(guard.0.clone())
            }
            _ => None,
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
            InnerProj::Streaming {
                mut body,
                timeout,
                deadline,
                progress,
            } => {
                if let Some(timeout) = timeout.take() {
                    *deadline = Some(Box::pin(tokio::time::sleep(timeout)));
                }
                let note = |state| {
                    if let Some(progress) = progress.as_ref() {
                        progress.0.set(state);
                    }
                };
                let Poll::Ready(frame) = body.as_mut().poll_frame(cx) else {
                    if let Some(sleep) = deadline
                        && sleep.as_mut().poll(cx).is_ready()
                    {
                        note(TIMED_OUT);
                        return Poll::Ready(Some(Err(ClientBodyError::timed_out().into())));
                    }
                    return Poll::Pending;
                };
                match &frame {
                    None => note(ENDED),
                    Some(Err(_)) => note(FAILED),
                    Some(Ok(_)) if body.is_end_stream() => note(ENDED),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame.map(|result| {
                    result
                        .map(|frame| {
                            frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                        })
                        .map_err(|error| ClientBodyError::broken(error).into())
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Inner::Streaming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Inner::Streaming { body, .. } => body.size_hint(),
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
/// layers below, and buffering is bounded in time:
/// [`body_timeout`](Self::body_timeout) (10 s unless set).
///
/// A body passed through unread may be bounded too
/// ([`upload_timeout`](Self::upload_timeout)): reading it past that
/// deadline fails.
///
/// Every failure of the client's body is a
/// [`ClientBodyError`](tower_hardening_core::ClientBodyError), which
/// the breaker, retries and metrics recognise as the client's doing:
/// broken (reading it failed), timed out, or too large (a body that
/// promised at most `max_body_bytes` in its `size_hint` and then sends
/// more is refused rather than buffered past the limit).
#[derive(Debug, Clone)]
pub struct BufferBodies<S, P> {
    inner: S,
    /// A never-polled copy of `inner` (see `tower_hardening_core::ready`).
    pristine: Pristine<S>,
    max_body_bytes: usize,
    predicate: Option<P>,
    body_timeout: Duration,
    upload_timeout: Option<Duration>,
}

/// How long [`BufferBodies`] waits for a body it buffers unless told
/// otherwise.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: Clone, P> BufferBodies<S, P> {
    /// Buffers the bodies of requests `predicate` allows to be retried
    /// (every idempotent one when `None`; see [`IdempotentHttp`]) whose
    /// size is known to be at most `max_body_bytes`, then calls `inner`.
    /// [`RetryLayer::http`](crate::RetryLayer::http) makes one around its
    /// retries; build one yourself to buffer above other layers (above
    /// admission, so that a slow client holds no slot).
    pub fn new(inner: S, max_body_bytes: usize, predicate: Option<P>) -> Self {
        BufferBodies {
            pristine: Pristine::new(&inner),
            inner,
            max_body_bytes,
            predicate,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            upload_timeout: None,
        }
    }

    /// How long a client may take to send a body that is buffered (from
    /// the call to its last byte); past it the request fails with
    /// [`ClientBodyError`](tower_hardening_core::ClientBodyError) (timed
    /// out) and the service below is never called.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long the service below may take to read a body passed through
    /// unbuffered (from its first read to its last byte: time spent
    /// waiting for admission is not the client's); past it, reading the
    /// body fails with a `ClientBodyError` (timed out). Off unless set.
    #[must_use]
    pub fn upload_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.upload_timeout = timeout;
        self
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
    #[inline(always)]
    fn call_now<B>(
        &mut self,
        request: Request<ReplayBody<B>>,
    ) -> BufferBodiesFuture<S, B, S::Future>
    where
        S: Service<Request<ReplayBody<B>>, Error = BoxError> + Clone,
        B: Body,
        B::Error: Into<BoxError>,
    {
        let state = match self.pristine.call_now(&mut self.inner, request) {
            CallNow::Called(future) => BufferState::Called { future },
            CallNow::NotReady(asked, request) => BufferState::Readying {
                service: asked,
                request: Some(request),
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
    type Future = BufferBodiesFuture<S, B, S::Future>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is taken by the response future, once the body is in.
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
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
            } else if body.is_end_stream() {
                ReplayBody::streaming(body, None)
            } else {
                ReplayBody::streaming(body, self.upload_timeout)
            };
            return self.call_now(Request::from_parts(parts, body));
        }
        // The body is read before readiness is taken (a slow client holds
        // nothing below), so this request gets its own clone.
        BufferBodiesFuture {
            state: BufferState::Collecting {
                collect: Limited::new(body, max).collect(),
                deadline: Box::pin(tokio::time::sleep(self.body_timeout)),
                parts: Some(parts),
                service: Some(self.inner.clone()),
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferBodies`]: reads the body (if it is
    /// buffered), then waits for the inner service and calls it.
    ///
    /// `F` is the inner service's future, a parameter of its own rather
    /// than `S::Future` so that this future is `Send` inside an `async`
    /// block whatever the inner error type.
    pub struct BufferBodiesFuture<S, B, F>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: BufferState<S, B, F>,
    }
}

pin_project! {
    #[project = BufferStateProj]
    enum BufferState<S, B, F>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        Collecting {
            #[pin]
            collect: Collect<Limited<B>>,
            deadline: Pin<Box<Sleep>>,
            parts: Option<http::request::Parts>,
            service: Option<S>,
        },
        // Waits for the inner service's readiness (tower's `Oneshot`).
        Readying {
            service: S,
            request: Option<Request<ReplayBody<B>>>,
        },
        Called {
            #[pin]
            future: F,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<S, B, F> std::fmt::Debug for BufferBodiesFuture<S, B, F>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferBodiesFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for BufferBodiesFuture<S, B, S::Future>
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
                    deadline,
                    parts,
                    service,
                } => {
                    let Poll::Ready(collected) = collect.poll(cx) else {
                        if deadline.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(ClientBodyError::timed_out().into()));
                        }
                        return Poll::Pending;
                    };
                    let collected = collected.map_err(|error| -> BoxError {
                        if error.is::<http_body_util::LengthLimitError>() {
                            ClientBodyError::too_large().into()
                        } else {
                            ClientBodyError::broken(error).into()
                        }
                    })?;
                    let trailers = collected.trailers().cloned();
                    let body = ReplayBody::buffered(collected.to_bytes(), trailers);
                    let parts = parts
                        .take()
                        .expect("BufferBodiesFuture polled after completion");
                    let service = service
                        .take()
                        .expect("BufferBodiesFuture polled after completion");
                    this.state.set(BufferState::Readying {
                        service,
                        request: Some(Request::from_parts(parts, body)),
                    });
                }
                BufferStateProj::Readying { service, request } => {
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(BufferState::Failed { error: Some(error) });
                        continue;
                    }
                    let request = request
                        .take()
                        .expect("BufferBodiesFuture polled after completion");
                    let future = service.call(request);
                    this.state.set(BufferState::Called { future });
                }
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
