use std::sync::Arc;
use std::task::{Context, Poll};

use tower_hardening_core::BoxError;
use tower_service::Service;

use crate::future::RateLimitFuture;
use crate::key::KeyOf;
use crate::priority::PriorityOf;
use crate::state::RateLimitState;

/// The service [`RateLimitLayer`](crate::RateLimitLayer) builds: counts
/// each call against its key's quota, and refuses one over it with
/// [`RateLimited`](crate::RateLimited) without calling the inner service.
/// Its `poll_ready` is the inner service's: a limiter never waits.
#[derive(Debug, Clone)]
pub struct RateLimit<S, K, P> {
    inner: S,
    /// `None`: switched off, every call passes.
    state: Option<Arc<RateLimitState>>,
    keys: K,
    priority: P,
}

impl<S, K, P> RateLimit<S, K, P> {
    pub(crate) fn new(inner: S, state: Option<Arc<RateLimitState>>, keys: K, priority: P) -> Self {
        RateLimit {
            inner,
            state,
            keys,
            priority,
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

impl<S, K, P, Req> Service<Req> for RateLimit<S, K, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: KeyOf<Req>,
    P: PriorityOf<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RateLimitFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(state) = &self.state {
            let priority = self.priority.priority_of(&request);
            // An unlimited priority (CRITICAL by default) needs no key.
            if state.limits(priority)
                && let Err(refusal) = state.check(priority, self.keys.key_of(&request))
            {
                return RateLimitFuture::refused(refusal);
            }
        }
        RateLimitFuture::called(self.inner.call(request))
    }
}
