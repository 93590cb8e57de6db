//! The retry service: tower's `Retry` algorithm (the same `Policy` trait,
//! the same states), without cloning the whole service below on every
//! call.
//!
//! tower's `Retry` clones itself (its policy and the service below) into
//! every response future, in case the call is retried: on a stack, that
//! writes every reference count below it on every call, from every core.
//! Here the first attempt is made on the service itself, and a future
//! clones a service only when it actually retries, from a template kept
//! per stripe (see `tower_hardening_core::stripe`): a call counts one
//! reference on its own thread's template and clones the policy there,
//! whose shared state it also reaches through that stripe.
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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::retry::Policy;
use tower_hardening_core::stripe::{CachePadded, PerStripe};
use tower_hardening_core::sync::lock;
use tower_service::Service;

/// What each stripe keeps: a policy whose shared state is reached
/// through the stripe, and a service to clone for a retry.
#[derive(Debug)]
struct Template<P, S> {
    policy: P,
    /// Behind a mutex, taken only for a retry: `S` need not be `Sync`.
    service: Mutex<S>,
}

/// Retries failed requests as its policy decides (see
/// [`RetryLayer`](crate::RetryLayer), which builds it).
///
/// Each stripe's service template sits behind a mutex, taken only for a
/// retry: the service stays `Send` whenever `S` is, without needing
/// `Sync` (`BoxCloneService` is not). The policy (its classifier and
/// predicate) must be `Send + Sync`, as every one tower-hardening
/// provides is.
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

impl<P, S: Clone> RetryService<P, S> {
    /// `policy_for_stripe` makes each stripe's policy (so that clones of
    /// it count references on that stripe only).
    pub(crate) fn new(inner: S, mut policy_for_stripe: impl FnMut() -> P) -> Self {
        let templates = PerStripe::new_with(|| Template {
            policy: policy_for_stripe(),
            service: Mutex::new(inner.clone()),
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

impl<P, S, Req> Service<Req> for RetryService<P, S>
where
    P: Policy<Req, S::Response, S::Error> + Clone,
    S: Service<Req> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RetryFuture<P, S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let template = self.templates.get();
        let mut policy = template.policy.clone();
        let copy = policy.clone_request(&request);
        let future = self.inner.call(request);
        RetryFuture {
            request: copy,
            policy,
            template,
            service: None,
            state: State::Called { future },
        }
    }
}

pin_project! {
    /// The response future of [`RetryService`].
    #[derive(Debug)]
    pub struct RetryFuture<P, S, Req>
    where
        P: Policy<Req, S::Response, S::Error>,
        S: Service<Req>,
    {
        // The copy to send if this attempt fails (from `clone_request`).
        request: Option<Req>,
        policy: P,
        template: Arc<CachePadded<Template<P, S>>>,
        // Cloned from the template on the first retry only.
        service: Option<S>,
        #[pin]
        state: State<S::Future, P::Future, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    #[derive(Debug)]
    enum State<F, W, Req> {
        Called {
            #[pin]
            future: F,
        },
        Waiting {
            #[pin]
            waiting: W,
            request: Req,
        },
        Retrying {
            request: Req,
        },
        // Only between two states, within one poll.
        Moving,
    }
}

impl<P, S, Req> Future for RetryFuture<P, S, Req>
where
    P: Policy<Req, S::Response, S::Error>,
    S: Service<Req> + Clone,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let mut result = ready!(future.poll(cx));
                    let Some(request) = this.request.as_mut() else {
                        return Poll::Ready(result);
                    };
                    let Some(waiting) = this.policy.retry(request, &mut result) else {
                        return Poll::Ready(result);
                    };
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(result);
                    };
                    this.state.set(State::Waiting { waiting, request });
                }
                StateProj::Waiting { waiting, .. } => {
                    ready!(waiting.poll(cx));
                    if let StateReplace::Waiting { request, .. } =
                        this.state.as_mut().project_replace(State::Moving)
                    {
                        this.state.set(State::Retrying { request });
                    }
                }
                StateProj::Retrying { .. } => {
                    let template = &*this.template;
                    let service = this
                        .service
                        .get_or_insert_with(|| lock(&template.0.service).clone());
                    ready!(service.poll_ready(cx))?;
                    if let StateReplace::Retrying { request } =
                        this.state.as_mut().project_replace(State::Moving)
                    {
                        *this.request = this.policy.clone_request(&request);
                        this.state.set(State::Called {
                            future: service.call(request),
                        });
                    }
                }
                // Never seen by a poll: every move sets the next state.
                StateProj::Moving => return Poll::Pending,
            }
        }
    }
}
