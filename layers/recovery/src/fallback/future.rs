//! The fallback's response future.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::{
    BoxError, Classify, Outcome, client_body_error_of, fallback, rejection_of,
};

use super::answer::Answer;
use super::cases::Cause;
use super::layer::Shared;

pin_project! {
    /// The response future of [`Fallback`](super::Fallback): the inner
    /// service's result, or, in a case the fallback answers, its answer
    /// (the original result when the answer fails or panics).
    pub struct FallbackFuture<F, A, C, Res>
    where
        A: Answer<Res>,
    {
        #[pin]
        state: State<F, A::Future, Res>,
        shared: Option<Arc<Shared<A, C>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, AF, Res> {
        Inner { #[pin] future: F },
        Answering { #[pin] future: AF, original: Option<Result<Res, BoxError>> },
    }
}

impl<F, A: Answer<Res>, C, Res> fmt::Debug for FallbackFuture<F, A, C, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackFuture")
            .field("fallback", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, A: Answer<Res>, C, Res> FallbackFuture<F, A, C, Res> {
    pub(crate) fn new(future: F, shared: Option<Arc<Shared<A, C>>>) -> Self {
        FallbackFuture {
            state: State::Inner { future },
            shared,
        }
    }
}

/// Why the fallback is asked, if it is: a client's own error never.
fn cause_of<Res, C: Classify<Res, BoxError>>(
    result: &Result<Res, BoxError>,
    classifier: &C,
) -> Option<Cause> {
    match result {
        Err(error) if client_body_error_of(&**error).is_some() => None,
        Err(error) => Some(rejection_of(&**error).map_or(Cause::Failed, Cause::Refused)),
        Ok(_) => (classifier.classify(result) == Outcome::Failure).then_some(Cause::Failed),
    }
}

impl<F, A, C, Res, E> Future for FallbackFuture<F, A, C, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    A: Answer<Res>,
    C: Classify<Res, BoxError>,
{
    type Output = Result<A::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    // The inner result is not this fallback's answer,
                    // whatever a fallback below it (one the inner service
                    // called through) marked in this poll: a metrics
                    // layer above watches for the mark when the source
                    // answers.
                    let polled = if A::ANSWERS {
                        fallback::watch(|| future.poll(cx)).0
                    } else {
                        future.poll(cx)
                    };
                    let result = ready!(polled).map_err(Into::into);
                    let Some(shared) = this.shared.as_ref() else {
                        return Poll::Ready(result.map(A::pass));
                    };
                    let cause = cause_of(&result, &shared.classifier)
                        .filter(|cause| shared.on.contains(cause.case()));
                    let Some(cause) = cause else {
                        return Poll::Ready(result.map(A::pass));
                    };
                    // A source that panics while making its future is a
                    // failed fallback: the original result stands.
                    match catch_unwind(AssertUnwindSafe(|| shared.answer.answer(cause))) {
                        Ok(future) => this.state.set(State::Answering {
                            future,
                            original: Some(result),
                        }),
                        Err(_) => {
                            shared.counts.failed();
                            return Poll::Ready(result.map(A::pass));
                        }
                    }
                }
                StateProj::Answering { future, original } => {
                    let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
                    let answered = match polled {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(answered)) => answered.ok(),
                        Err(_) => None,
                    };
                    let counts = this.shared.as_ref().map(|shared| &shared.counts);
                    let original = original
                        .take()
                        .expect("a fallback future polled after it finished");
                    return Poll::Ready(match answered {
                        Some(response) => {
                            counts.inspect(|c| c.answered());
                            fallback::mark_answered();
                            Ok(response)
                        }
                        None => {
                            counts.inspect(|c| c.failed());
                            original.map(A::pass)
                        }
                    });
                }
            }
        }
    }
}
