//! Where a fallback's answer comes from: a closure, a service, or nothing.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::ServiceExt;
use tower::util::Oneshot;
use tower_hardening_core::BoxError;
use tower_hardening_core::fallback::CountingFallbacks;
use tower_service::Service;

use super::cases::Cause;

/// A source of fallback answers for responses of type `Res`.
///
/// Implemented by [`FnAnswer`] (a closure), [`ServiceAnswer`] (a service)
/// and [`NoFallback`]; an adapter may also change the response type (the
/// facade's HTTP stack answers with a body of the fallback's own type).
pub trait Answer<Res>: AnswerSource {
    /// What the layer returns: the inner service's response or the answer.
    type Response;
    /// The answer's future.
    type Future: Future<Output = Result<Self::Response, BoxError>>;

    /// The inner service's own response, as the layer returns it.
    fn pass(response: Res) -> Self::Response;

    /// The answer for `cause`.
    fn answer(&self, cause: Cause) -> Self::Future;
}

/// What a source of answers means to the layers around it, whatever the
/// response type: whether it ever answers ([`NoFallback`] never does),
/// and what a metrics layer above classifies with, so that it counts the
/// answers as outcome `fallback` (and a stack without a fallback pays
/// nothing for it).
pub trait AnswerSource {
    /// The classifier for a metrics layer above: `C` itself for
    /// [`NoFallback`], [`CountingFallbacks<C>`] for a source that answers.
    type Metrics<C: Clone>: Clone;

    /// Whether a source of this type ever answers ([`NoFallback`] never
    /// does).
    const ANSWERS: bool = true;

    /// Wraps `classifier` so.
    fn metrics<C: Clone>(classifier: C) -> Self::Metrics<C>;

    /// Whether this source ever answers.
    fn answers(&self) -> bool {
        true
    }
}

impl<F> AnswerSource for FnAnswer<F> {
    type Metrics<C: Clone> = CountingFallbacks<C>;

    fn metrics<C: Clone>(classifier: C) -> CountingFallbacks<C> {
        CountingFallbacks(classifier)
    }
}

impl<S> AnswerSource for ServiceAnswer<S> {
    type Metrics<C: Clone> = CountingFallbacks<C>;

    fn metrics<C: Clone>(classifier: C) -> CountingFallbacks<C> {
        CountingFallbacks(classifier)
    }
}

impl AnswerSource for NoFallback {
    type Metrics<C: Clone> = C;

    const ANSWERS: bool = false;

    fn metrics<C: Clone>(classifier: C) -> C {
        classifier
    }

    fn answers(&self) -> bool {
        false
    }
}

/// Answers with a closure `Fn(Cause) -> Res` (a default or cached
/// response). A closure that panics is a failed fallback: the original
/// error surfaces.
#[derive(Clone)]
pub struct FnAnswer<F>(F);

impl<F> FnAnswer<F> {
    /// Answers with `answer`.
    pub fn new(answer: F) -> Self {
        FnAnswer(answer)
    }

    /// Calls the closure, catching a panic (then an error).
    pub fn call<Res>(&self, cause: Cause) -> Result<Res, BoxError>
    where
        F: Fn(Cause) -> Res,
    {
        catch_unwind(AssertUnwindSafe(|| (self.0)(cause)))
            .map_err(|_| BoxError::from("the fallback panicked"))
    }
}

impl<F> fmt::Debug for FnAnswer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnAnswer")
    }
}

impl<F, Res> Answer<Res> for FnAnswer<F>
where
    F: Fn(Cause) -> Res,
{
    type Response = Res;
    type Future = Ready<Result<Res, BoxError>>;

    fn pass(response: Res) -> Res {
        response
    }

    fn answer(&self, cause: Cause) -> Self::Future {
        ready(self.call(cause))
    }
}

/// Answers with a service called with the [`Cause`] (a clone of it,
/// driven to readiness first: tower's `Oneshot`).
#[derive(Debug, Clone)]
pub struct ServiceAnswer<S>(S);

impl<S> ServiceAnswer<S> {
    /// Answers with `service`.
    pub fn new(service: S) -> Self {
        ServiceAnswer(service)
    }
}

impl<S, Res> Answer<Res> for ServiceAnswer<S>
where
    S: Service<Cause, Response = Res> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Res;
    type Future = ServiceAnswerFuture<S>;

    fn pass(response: Res) -> Res {
        response
    }

    fn answer(&self, cause: Cause) -> Self::Future {
        ServiceAnswerFuture {
            inner: self.0.clone().oneshot(cause),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`ServiceAnswer`].
    pub struct ServiceAnswerFuture<S: Service<Cause>> {
        #[pin]
        inner: Oneshot<S, Cause>,
    }
}

impl<S: Service<Cause>> fmt::Debug for ServiceAnswerFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceAnswerFuture")
    }
}

impl<S> Future for ServiceAnswerFuture<S>
where
    S: Service<Cause>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

/// No fallback: the layer passes every result through as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFallback;

impl<Res> Answer<Res> for NoFallback {
    type Response = Res;
    type Future = Ready<Result<Res, BoxError>>;

    fn pass(response: Res) -> Res {
        response
    }

    fn answer(&self, _: Cause) -> Self::Future {
        ready(Err(BoxError::from("no fallback")))
    }
}
