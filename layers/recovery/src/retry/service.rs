//! The retry service: tower's `Retry` algorithm (the same states, the
//! decisions of [`RetryPolicy`]), without cloning the whole service below
//! on every call.
//!
//! tower's `Retry` clones itself (its policy and the service below) into
//! every response future, in case the call is retried: on a stack, that
//! writes every reference count below it on every call, from every core.
//! Here the first attempt is made on the service itself, and a future
//! clones a service only when it actually retries, from a template kept
//! per stripe (see `tower_hardening_core::stripe`): a call counts one
//! reference on its own thread's template, reads the policy there, and
//! keeps its attempts in the future.
//!
//! ```
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_hardening_recovery::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = RetryLayer::builder().build().unwrap()
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::stripe::{self, CachePadded, PerStripe};
use tower_hardening_core::sync::lock;
use tower_hardening_core::{BoxError, Classify};
use tower_service::Service;

use super::policy::{Attempts, RetryPolicy, RetryPredicate};
use super::replay::ReplayRequest;

/// What each stripe keeps: the policy (its settings and shared state),
/// and, once a call on the stripe has retried, a service to clone for
/// retries (made from the one every stripe shares, so a stripe that
/// never retries holds no copy of the stack below).
#[derive(Debug)]
struct Template<P, S> {
    policy: P,
    /// Behind mutexes, taken only for a retry: `S` need not be `Sync`.
    service: OnceLock<Mutex<S>>,
    first: Arc<Mutex<S>>,
}

impl<P, S: Clone> Template<P, S> {
    fn service(&self) -> S {
        let service = self
            .service
            .get_or_init(|| Mutex::new(lock(&self.first).clone()));
        lock(service).clone()
    }
}

/// Retries failed requests as its [`RetryPolicy`] decides (see
/// [`RetryLayer`](crate::RetryLayer), which builds it).
///
/// A call counts one reference on its thread's stripe of templates and
/// keeps its own attempt count: it clones neither the policy nor the
/// service below. The policy (its classifier and predicate) must be
/// `Send + Sync` for the service to be `Send`, as every one
/// tower-hardening provides is; the service below need only be `Send`
/// (`BoxCloneService` works).
#[derive(Debug)]
pub struct RetryService<P, S> {
    inner: S,
    templates: Arc<PerStripe<Template<P, S>>>,
}

impl<P, S: Clone> Clone for RetryService<P, S> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            templates: self.templates.clone(),
        }
    }
}

impl<P: Clone, S: Clone> RetryService<P, S> {
    pub(crate) fn new(inner: S, policy: P) -> Self {
        let first = Arc::new(Mutex::new(inner.clone()));
        let templates = PerStripe::new_with(|| Template {
            policy: policy.clone(),
            service: OnceLock::new(),
            first: first.clone(),
        });
        RetryService {
            inner,
            templates: Arc::new(templates),
        }
    }
}

impl<P, S> RetryService<P, S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<C, K, Pr, S, Req> Service<Req> for RetryService<RetryPolicy<C, K, Pr>, S>
where
    C: Classify<S::Response, BoxError>,
    K: ReplayRequest<Req>,
    Pr: RetryPredicate<Req>,
    S: Service<Req, Error = BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RetryFuture<RetryPolicy<C, K, Pr>, S, Req, S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        // One thread-local read for the template and the budget's stripe.
        let thread = stripe::thread_number();
        let template = Arc::clone(self.templates.stripe_at(thread));
        let attempts = Attempts::default();
        let copy = template.policy.copy_request(&attempts, &request, thread);
        let future = self.inner.call(request);
        RetryFuture {
            request: copy,
            attempts,
            template,
            service: None,
            state: State::Called { future },
        }
    }
}

pin_project! {
    /// The response future of [`RetryService`]. `F` is the inner
    /// service's future, a parameter of its own rather than `S::Future` so
    /// that this future is `Send` inside an `async` block whatever the
    /// inner error type (see `LimitFuture` in the limit crate).
    pub struct RetryFuture<P, S, Req, F> {
        // The copy to send if this attempt fails.
        request: Option<Req>,
        attempts: Attempts,
        template: Arc<CachePadded<Template<P, S>>>,
        // Cloned from the template on the first retry only.
        service: Option<S>,
        #[pin]
        state: State<F, Req>,
    }
}

impl<P, S, Req, F> std::fmt::Debug for RetryFuture<P, S, Req, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryFuture")
            .field("attempts", &self.attempts.finished)
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F, Req> {
        Called {
            #[pin]
            future: F,
        },
        // Boxed: a `Sleep` is ~100 bytes, and a future that never retries
        // (nearly all) should not carry and move them.
        Waiting {
            waiting: Pin<Box<tokio::time::Sleep>>,
            request: Req,
        },
        Retrying {
            request: Req,
        },
        // Only between two states, within one poll.
        Moving,
    }
}

impl<C, K, Pr, S, Req> Future for RetryFuture<RetryPolicy<C, K, Pr>, S, Req, S::Future>
where
    C: Classify<S::Response, BoxError>,
    K: ReplayRequest<Req>,
    Pr: RetryPredicate<Req>,
    S: Service<Req, Error = BoxError> + Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let mut result = ready!(future.poll(cx));
                    let Some(request) = this.request.as_mut() else {
                        return Poll::Ready(result);
                    };
                    let policy = &this.template.0.policy;
                    let Some(waiting) = policy.decide(this.attempts, request, &mut result) else {
                        return Poll::Ready(result);
                    };
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(result);
                    };
                    this.state.set(State::Waiting {
                        waiting: Box::pin(waiting),
                        request,
                    });
                }
                StateProj::Waiting { waiting, .. } => {
                    ready!(waiting.as_mut().poll(cx));
                    if let StateReplace::Waiting { request, .. } =
                        this.state.as_mut().project_replace(State::Moving)
                    {
                        this.state.set(State::Retrying { request });
                    }
                }
                StateProj::Retrying { .. } => {
                    let template = &this.template.0;
                    let service = this.service.get_or_insert_with(|| template.service());
                    ready!(service.poll_ready(cx))?;
                    if let StateReplace::Retrying { request } =
                        this.state.as_mut().project_replace(State::Moving)
                    {
                        // Not a first attempt: no deposit, so no stripe.
                        *this.request = template.policy.copy_request(this.attempts, &request, 0);
                        this.state.set(State::Called {
                            future: service.call(request),
                        });
                    }
                }
                // Seen only by a poll after a panic in the inner service's
                // `call` (every move sets the next state): an error, not a
                // hang and not a second panic.
                StateProj::Moving => {
                    return Poll::Ready(Err("the retry future was polled after a panic".into()));
                }
            }
        }
    }
}
