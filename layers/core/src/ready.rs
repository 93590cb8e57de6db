//! Calling the service below directly when it is ready, instead of a
//! clone per request: every clone of a stack writes the
//! reference counts of every layer in it, on every core.
//!
//! A layer whose `poll_ready` is always ready (it admits, or reads a
//! body, in the response future) asks the service below for readiness
//! in `call`, with a no-op waker:
//!
//! - ready: it calls that service at once; nothing is cloned;
//! - not ready: the service that was asked (which may hold a place in a
//!   queue, or a reservation) goes with this request, whose future waits
//!   for it with the task's waker; a copy of the never-polled service
//!   takes its place;
//! - failed: the failed service is dropped (tower: a service whose
//!   readiness failed is not to be used again) and a copy of the
//!   never-polled service takes its place; the request gets the error.
//!
//! The never-polled copy is shared by every clone of the layer's service
//! behind a mutex (taken only off the fast path), so the service below
//! need not be `Sync`.
//!
//! ```
//! use tower::service_fn;
//! use tower_hardening_core::ready::{CallNow, Pristine};
//!
//! let mut svc = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
//! let pristine = Pristine::new(&svc);
//! match pristine.call_now(&mut svc, 7) {
//!     CallNow::Called(future) => drop(future),
//!     _ => unreachable!("a service_fn is always ready"),
//! }
//! ```

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tower_service::Service;

use crate::sync::lock;

/// How [`Pristine::call_now`] went.
#[derive(Debug)]
pub enum CallNow<S: Service<Req>, Req> {
    /// The service was ready and was called.
    Called(S::Future),
    /// Not ready: the service that was asked, for the request's future to
    /// drive with the task's waker, and the request.
    NotReady(S, Req),
    /// Its readiness failed: the error, and the request (not sent).
    Failed(S::Error, Req),
}

/// A never-polled copy of a service, shared by every clone of the layer
/// service that keeps it.
#[derive(Debug)]
pub struct Pristine<S>(Arc<Mutex<S>>);

impl<S> Clone for Pristine<S> {
    fn clone(&self) -> Self {
        Pristine(Arc::clone(&self.0))
    }
}

impl<S: Clone> Pristine<S> {
    /// Keeps a copy of `service`, which must not have been polled.
    pub fn new(service: &S) -> Self {
        Pristine(Arc::new(Mutex::new(service.clone())))
    }

    /// A copy of the never-polled service.
    pub fn fresh(&self) -> S {
        lock(&self.0).clone()
    }

    /// `inner` was asked for readiness and is not ready: it goes with
    /// the request (returned), and a fresh copy takes its place.
    pub fn take_asked(&self, inner: &mut S) -> S {
        std::mem::replace(inner, self.fresh())
    }

    /// `inner`'s readiness failed: it is dropped, and a fresh copy takes
    /// its place.
    pub fn discard_failed(&self, inner: &mut S) {
        *inner = self.fresh();
    }

    /// Asks `inner` for readiness with a no-op waker and calls it if it
    /// is ready; see the module documentation for the other cases, after
    /// which `inner` is a fresh copy. (Layers on the hottest path match on
    /// the readiness themselves and use [`take_asked`](Self::take_asked)
    /// and [`discard_failed`](Self::discard_failed).)
    pub fn call_now<Req>(&self, inner: &mut S, request: Req) -> CallNow<S, Req>
    where
        S: Service<Req>,
    {
        let mut noop = Context::from_waker(Waker::noop());
        match inner.poll_ready(&mut noop) {
            Poll::Ready(Ok(())) => CallNow::Called(inner.call(request)),
            Poll::Pending => CallNow::NotReady(self.take_asked(inner), request),
            Poll::Ready(Err(error)) => {
                self.discard_failed(inner);
                CallNow::Failed(error, request)
            }
        }
    }
}
