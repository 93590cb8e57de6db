use std::sync::Arc;
use std::task::{Context, Poll};

use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::permit::Permit;
use tower_hardening_core::stripe::{Held, PerStripe};

use crate::state::BreakerState;

/// The service [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) builds.
///
/// Admission is decided in `poll_ready` and kept until `call`: a permit
/// (or a rejection) per service value, so `Clone` starts with none. A
/// rejection is returned by the response future; `poll_ready` only fails
/// when the inner service does.
#[derive(Debug)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    /// The breaker, reached through the calling thread's stripe.
    state: Arc<PerStripe<Arc<BreakerState>>>,
    classifier: C,
    reserved: Reservation,
}

/// What `poll_ready` decided for the next `call`. The rejection is boxed
/// once here, as the error it will become.
#[derive(Debug)]
pub(crate) enum Reservation {
    Empty,
    Admitted(Permit),
    Rejected(BoxError),
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, state: Arc<PerStripe<Arc<BreakerState>>>, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            state,
            classifier,
            reserved: Reservation::Empty,
        }
    }

    /// The decision `poll_ready` reserved for this call, taken.
    pub(crate) fn take_reservation(&mut self) -> Reservation {
        std::mem::replace(&mut self.reserved, Reservation::Empty)
    }

    pub(crate) fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service; a permit reserved by `poll_ready` is handed
    /// back (counted as a cancelled call).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // A reserved permit belongs to the service that reserved it.
        CircuitBreaker::new(
            self.inner.clone(),
            self.state.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A rejection kept from an earlier poll may be stale (the breaker
        // closed since, under a ReadyCache that polls ahead): ask again.
        if let Reservation::Empty | Reservation::Rejected(_) = self.reserved {
            let stripe = self.state.stripe();
            let held = || Held::Striped(Arc::clone(stripe));
            self.reserved = match stripe.0.try_acquire_via(held) {
                Ok(permit) => Reservation::Admitted(permit),
                Err(rejection) => Reservation::Rejected(rejection.into()),
            };
        }
        match self.reserved {
            Reservation::Admitted(_) => self.inner.poll_ready(cx).map_err(Into::into),
            // Fail fast: the rejection needs nothing from the inner service.
            _ => Poll::Ready(Ok(())),
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.reserved, Reservation::Empty) {
            Reservation::Admitted(mut permit) => {
                permit.start();
                // A panic in the inner `call` itself (not its future) is a
                // failure too.
                let mut slot = Some(permit);
                let inner = &mut self.inner;
                let future = on_unwind(&mut slot, Permit::panicked, || inner.call(request));
                let permit = slot.expect("taken only on unwind");
                ResponseFuture::called(future, permit, self.classifier.clone())
            }
            Reservation::Rejected(rejection) => ResponseFuture::rejected(rejection),
            Reservation::Empty => {
                panic!("CircuitBreaker::call without poll_ready returning Ready(Ok) first")
            }
        }
    }
}
