//! The client's body in the HTTP and gRPC stacks: a per-call timeout that
//! measures the service and not the upload, and admission units held by
//! a streamed response until it ends, within a deadline.
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_hardening::config::SystemHardeningConfig;
//! use tower_hardening::{BoxError, SystemHardening};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = SystemHardeningConfig::from_toml_str(r#"
//!     [services.api]
//!     timeout = "2s"          # the service's own time, from when its body is in
//!     upload_timeout = "30s"  # a body the handler streams must be in by then
//! "#)?;
//! let hardening = SystemHardening::builder(config).build()?;
//! let mut api = ServiceBuilder::new()
//!     .layer(hardening.http_layer("api")?)
//!     .service(service_fn(|_: http::Request<_>| async {
//!         Ok::<_, BoxError>(http::Response::new(Full::new(bytes::Bytes::from("ok"))))
//!     }));
//! let request = http::Request::post("/upload").body(Full::new(bytes::Bytes::from("data")))?;
//! let response = api.ready().await?.call(request).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::time::{DelayQueue, delay_queue};
use tower_hardening_core::{BoxError, ClientBodyError};
use tower_service::Service;

use crate::limit::{Held, ReleaseOn};
use crate::recovery::{ReplayBody, UploadProgress, UploadState};

/// The per-call timeout below the breaker of an HTTP stack.
///
/// A request whose body has arrived (or was buffered) is timed from its
/// call (from the first poll of its future, which follows the call at
/// once; no timer is made for a service that answers on that poll). A body the handler streams itself is the exception: the
/// deadline starts when that body has been read to its end or dropped,
/// and the upload before it is bounded by the stack's `upload_timeout`
/// (the body fails past it). Either way, a body that broke or timed out
/// makes the call fail with the [`ClientBodyError`] it had, whatever the
/// handler answered: the client's doing, not the service's.
///
/// Without a timeout nothing is timed, but a streamed body is still
/// watched (one allocation per such request) so that its failure is put
/// down to the client.
#[derive(Debug, Clone)]
pub struct ServiceTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
    /// The longest a streamed upload may take before the deadline starts.
    upload_timeout: Duration,
}

impl<S> ServiceTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Option<Duration>, upload_timeout: Duration) -> Self {
        ServiceTimeout {
            inner,
            timeout,
            upload_timeout,
        }
    }
}

impl<S, B> Service<http::Request<ReplayBody<B>>> for ServiceTimeout<S>
where
    S: Service<http::Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ServiceTimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline(always)]
    fn call(&mut self, mut request: http::Request<ReplayBody<B>>) -> Self::Future {
        let progress = request.body_mut().watch();
        ServiceTimeoutFuture {
            future: self.inner.call(request),
            upload: progress.map(|progress| Upload {
                progress,
                seen: UploadState::Reading,
            }),
            deadline: Deadline::NotStarted,
            timeout: self.timeout,
            upload_timeout: self.upload_timeout,
        }
    }
}

/// A call's timer, made only when the service does not answer on its
/// first poll: most answers come at once, and a timer that is never
/// waited for would cost an allocation and a clock read each.
#[derive(Debug)]
enum Deadline {
    /// Not polled yet.
    NotStarted,
    /// Timed from the first poll.
    Running(Pin<Box<Sleep>>),
    /// No timeout (none configured, or past what the clock can hold).
    Off,
}

#[derive(Debug)]
struct Upload {
    progress: Arc<UploadProgress>,
    /// The state last seen, to restart the deadline once when it changes.
    seen: UploadState,
}

impl Upload {
    fn client_error(&self) -> Option<ClientBodyError> {
        match self.progress.state() {
            UploadState::Failed => Some(ClientBodyError::broken(
                "the connection failed while the request body was read",
            )),
            UploadState::TimedOut => Some(ClientBodyError::timed_out()),
            UploadState::Reading | UploadState::Ended => None,
        }
    }
}

pin_project! {
    /// The response future of [`ServiceTimeout`].
    #[derive(Debug)]
    pub struct ServiceTimeoutFuture<F> {
        #[pin]
        future: F,
        upload: Option<Upload>,
        deadline: Deadline,
        timeout: Option<Duration>,
        upload_timeout: Duration,
    }
}

impl<F, T, E> Future for ServiceTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            if let Some(error) = this.upload.as_ref().and_then(Upload::client_error) {
                return Poll::Ready(Err(error.into()));
            }
            return Poll::Ready(result.map_err(Into::into));
        }
        if let Deadline::NotStarted = this.deadline {
            // The first poll found the service working: time it from now
            // (the service does nothing before it is polled). Until a
            // streamed upload ends, only its own bound and then the
            // service's apply.
            *this.deadline = match *this.timeout {
                None => Deadline::Off,
                Some(timeout) => {
                    let limit = if this.upload.is_some() {
                        this.upload_timeout.saturating_add(timeout)
                    } else {
                        timeout
                    };
                    match Instant::now().checked_add(limit) {
                        Some(at) => Deadline::Running(Box::pin(tokio::time::sleep_until(at))),
                        None => Deadline::Off,
                    }
                }
            };
        }
        // The body is read while the service runs: look where it is now.
        if let Some(upload) = this.upload.as_mut() {
            let state = upload.progress.state();
            if state != upload.seen {
                upload.seen = state;
                if let Some(timeout) = *this.timeout {
                    // A timeout past what the clock can hold means none.
                    match (Instant::now().checked_add(timeout), &mut *this.deadline) {
                        (Some(at), Deadline::Running(deadline)) => deadline.as_mut().reset(at),
                        // Off as `upload_timeout + timeout` was past the
                        // clock: the service's own deadline starts now.
                        (Some(at), _) => {
                            *this.deadline =
                                Deadline::Running(Box::pin(tokio::time::sleep_until(at)));
                        }
                        (None, _) => *this.deadline = Deadline::Off,
                    }
                }
            }
        }
        if let Deadline::Running(deadline) = this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            if let Some(error) = this.upload.as_ref().and_then(Upload::client_error) {
                return Poll::Ready(Err(error.into()));
            }
            return Poll::Ready(Err(tower::timeout::error::Elapsed::new().into()));
        }
        Poll::Pending
    }
}

/// When a response gives its admission units back: at its head (plain
/// HTTP), or at the end of its body (gRPC, whose server streams must count
/// for as long as they run), within a deadline.
#[derive(Debug, Clone)]
pub struct StreamRelease {
    /// The deadlines of this stack's held streams; none: units go back
    /// at the head.
    until_end: Option<Arc<StreamDeadlines>>,
}

impl StreamRelease {
    pub(crate) fn at_head() -> Self {
        StreamRelease { until_end: None }
    }

    pub(crate) fn at_end(deadline: Duration) -> Self {
        StreamRelease {
            until_end: Some(Arc::new(StreamDeadlines {
                // The queue's timer wheel spans about two years from the
                // last deadline it saw fire: a longer one would panic.
                deadline: deadline.min(LONGEST_STREAM_DEADLINE),
                queue: Mutex::new(DeadlineQueue::new()),
            })),
        }
    }
}

impl<B: Body> ReleaseOn<http::Response<B>> for StreamRelease {
    type Response = http::Response<StreamBody<B>>;

    fn attach(&self, response: http::Response<B>, held: Held) -> Self::Response {
        let release = match &self.until_end {
            Some(deadlines) if !response.body().is_end_stream() => {
                Some(StreamDeadlines::hold(deadlines, held))
            }
            _ => {
                drop(held);
                None
            }
        };
        response.map(|body| StreamBody { body, release })
    }
}

/// The longest a stream holds its units (a longer `stream_timeout` is
/// this): a year, well within the deadline queue's span.
const LONGEST_STREAM_DEADLINE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The deadlines of one stack's held streams, kept by one task (the
/// reaper) that gives a stream's units back when its deadline passes. A
/// timer the body polled would not do: a client that stops reading stalls
/// the stream in HTTP/2 flow control, and the server stops polling its
/// body. One task per stack rather than one per stream: a call costs an
/// entry in a timer wheel, not a spawned task.
#[derive(Debug)]
struct StreamDeadlines {
    deadline: Duration,
    queue: Mutex<DeadlineQueue>,
}

#[derive(Debug)]
struct DeadlineQueue {
    streams: DelayQueue<Arc<Mutex<Option<Held>>>>,
    /// Whether a reaper task is running. It stops when the queue is
    /// empty and is started again by the next stream.
    reaper: bool,
    /// About where the timer wheel of `streams` has moved on to (when it
    /// was made, or a deadline last fired). It moves on only when a
    /// deadline fires and spans about two years from there: past a day,
    /// the next stream moves it on (see [`StreamDeadlines::hold`]).
    moved_on: Instant,
}

impl DeadlineQueue {
    fn new() -> Self {
        DeadlineQueue {
            streams: DelayQueue::new(),
            reaper: false,
            moved_on: Instant::now(),
        }
    }
}

/// How far behind its wheel may be before a stream moves it on.
const MOVE_WHEEL_ON: Duration = Duration::from_secs(24 * 60 * 60);

impl StreamDeadlines {
    fn hold(this: &Arc<Self>, held: Held) -> StreamHold {
        let held = Arc::new(Mutex::new(Some(held)));
        let mut queue = lock(&this.queue);
        let start_reaper = !queue.reaper;
        // An empty queue has no timer, and the insert makes one: that
        // needs a runtime here (the reaper may still be marked running
        // while this is called outside any). Outside a runtime nothing
        // can wait for the deadline: the units go back when the body
        // ends or is dropped.
        let runtime = if start_reaper || queue.streams.is_empty() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Some(runtime),
                Err(_) => return StreamHold { held, entry: None },
            }
        } else {
            None
        };
        // One clock read, as `insert` would make.
        let now = Instant::now();
        if now.saturating_duration_since(queue.moved_on) > MOVE_WHEEL_ON {
            if queue.streams.is_empty() {
                // A reaper still running polls the new queue next (it
                // was woken when the old one emptied, or is about to
                // poll again).
                queue.streams = DelayQueue::new();
            } else {
                // Streams that all end in time never fire a deadline:
                // one due now moves the wheel on when the reaper takes
                // it (it holds no units).
                queue.streams.insert_at(Arc::new(Mutex::new(None)), now);
            }
            queue.moved_on = now;
        }
        let key = queue.streams.insert_at(held.clone(), now + this.deadline);
        let reaper = match runtime {
            Some(runtime) if start_reaper => {
                queue.reaper = true;
                Some(runtime)
            }
            _ => None,
        };
        drop(queue);
        // Spawned outside the lock: a runtime shutting down drops the
        // task at once, and the reaper's drop takes the lock.
        if let Some(runtime) = reaper {
            runtime.spawn(
                Reaper {
                    deadlines: this.clone(),
                    stopped: false,
                }
                .run(),
            );
        }
        StreamHold {
            held,
            entry: Some((Arc::downgrade(this), key)),
        }
    }
}

/// The task that gives back the units of streams past their deadline;
/// marks itself stopped when it ends or is dropped with its runtime, so
/// the next stream starts another.
struct Reaper {
    deadlines: Arc<StreamDeadlines>,
    /// Stopped by itself (the queue was empty), and marked so under the
    /// lock: a reaper started since is not to be marked stopped again.
    stopped: bool,
}

impl Reaper {
    async fn run(mut self) {
        loop {
            let expired = std::future::poll_fn(|cx| {
                let mut queue = lock(&self.deadlines.queue);
                match queue.streams.poll_expired(cx) {
                    // Taken under the queue's lock, as a stream that ends
                    // takes it: whoever finds the units knows where its
                    // entry is (gone, or still queued).
                    Poll::Ready(Some(expired)) => Poll::Ready(Some(take(expired.get_ref()))),
                    Poll::Ready(None) => {
                        // Empty: stop, under the lock a new stream takes;
                        // a new queue gives back the memory of a burst.
                        *queue = DeadlineQueue::new();
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match expired {
                // Given back outside the lock.
                Some(units) => drop(units),
                None => {
                    self.stopped = true;
                    return;
                }
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Dropped with its runtime: the next stream starts another.
        if !self.stopped {
            lock(&self.deadlines.queue).reaper = false;
        }
    }
}

/// A streamed response's units, given back when its body ends or is
/// dropped, or by the reaper when the deadline passes.
#[derive(Debug)]
struct StreamHold {
    held: Arc<Mutex<Option<Held>>>,
    /// Its entry in the reaper's queue, taken out when the stream ends.
    entry: Option<(Weak<StreamDeadlines>, delay_queue::Key)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take(held: &Mutex<Option<Held>>) -> Option<Held> {
    lock(held).take()
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        let units = match self.entry.take() {
            Some((deadlines, key)) => match deadlines.upgrade() {
                Some(deadlines) => {
                    let mut queue = lock(&deadlines.queue);
                    let units = take(&self.held);
                    // Units still here: the reaper has not reached this
                    // entry (it takes both under this lock), so the key
                    // is still this stream's.
                    if units.is_some() {
                        queue.streams.remove(&key);
                    }
                    units
                }
                None => take(&self.held),
            },
            None => take(&self.held),
        };
        // Given back outside the queue's lock.
        drop(units);
    }
}

pin_project! {
    /// A response body that holds its request's admission units until it
    /// ends, fails or is dropped, or its deadline passes (see
    /// [`StreamRelease`]), whether or not it is being read.
    #[derive(Debug)]
    pub struct StreamBody<B> {
        #[pin]
        body: B,
        release: Option<StreamHold>,
    }
}

impl<B: Body> Body for StreamBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.release.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
