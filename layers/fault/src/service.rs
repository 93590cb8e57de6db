use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tower_hardening_core::BoxError;
use tower_service::Service;

use crate::error::InjectedFault;
use crate::future::FaultFuture;
use crate::response::InjectResponse;
use crate::state::{Decision, FaultState};

/// The service [`FaultLayer`](crate::FaultLayer) builds.
#[derive(Debug, Clone)]
pub struct Fault<S, R> {
    inner: S,
    state: Arc<FaultState>,
    respond: R,
}

impl<S, R> Fault<S, R> {
    pub(crate) fn new(inner: S, state: Arc<FaultState>, respond: R) -> Self {
        Fault {
            inner,
            state,
            respond,
        }
    }

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

impl<S, R, Req> Service<Req> for Fault<S, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: InjectResponse<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FaultFuture<S::Future, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        if !self.state.is_enabled() {
            return FaultFuture::called(self.inner.call(request), None);
        }
        let (decision, latency) = self.state.roll();
        match decision {
            Decision::Call => FaultFuture::called(self.inner.call(request), latency),
            Decision::Hang => FaultFuture::hang(),
            Decision::Error => FaultFuture::ready(
                Err(InjectedFault::new(self.state.name.clone()).into()),
                latency,
            ),
            Decision::Respond => {
                let status = self.state.status.load(Ordering::Relaxed);
                match self.respond.inject(status, &self.state.name) {
                    Some(answer) => {
                        self.state.responded();
                        FaultFuture::ready(answer, latency)
                    }
                    None => FaultFuture::called(self.inner.call(request), latency),
                }
            }
        }
    }
}
