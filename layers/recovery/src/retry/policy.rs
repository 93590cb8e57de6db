use std::sync::Arc;

use tower::util::rng::HasherRng;
use tower_hardening_core::{BoxError, Classify, Outcome, rejection_of};

use super::replay::ReplayRequest;
use super::shared::RetryShared;

/// Which requests may be sent more than once.
///
/// Any `Fn(&Req) -> bool + Clone` is one; [`AnyRequest`] (the default)
/// allows every request.
pub trait RetryPredicate<Req>: Clone {
    /// Whether `request` may be retried (is idempotent).
    fn may_retry(&self, request: &Req) -> bool;
}

/// Every request may be retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyRequest;

impl<Req> RetryPredicate<Req> for AnyRequest {
    #[inline]
    fn may_retry(&self, _: &Req) -> bool {
        true
    }
}

impl<F, Req> RetryPredicate<Req> for F
where
    F: Fn(&Req) -> bool + Clone,
{
    fn may_retry(&self, request: &Req) -> bool {
        self(request)
    }
}

/// The `tower::retry::Policy` behind [`RetryLayer`](crate::RetryLayer):
/// classify, never retry a rejection, respect the predicate, the attempt
/// limit and the shared budget, then wait the backoff.
#[derive(Debug)]
pub struct RetryPolicy<C, K, P> {
    pub(crate) shared: Arc<RetryShared>,
    pub(crate) classifier: C,
    pub(crate) replay: K,
    pub(crate) predicate: P,
    /// Attempts finished for the current request.
    pub(crate) attempts: u32,
    /// Made on the first retry only: most requests never need one.
    pub(crate) rng: Option<HasherRng>,
}

impl<C: Clone, K: Clone, P: Clone> Clone for RetryPolicy<C, K, P> {
    fn clone(&self) -> Self {
        // Each request starts from zero attempts.
        RetryPolicy {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            predicate: self.predicate.clone(),
            attempts: 0,
            rng: None,
        }
    }
}

impl<C, K, P, Req, Res> tower::retry::Policy<Req, Res, BoxError> for RetryPolicy<C, K, P>
where
    C: Classify<Res, BoxError>,
    K: ReplayRequest<Req>,
    P: RetryPredicate<Req>,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut Req,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        let shared = &self.shared;
        shared.attempted();
        match self.classifier.classify(result) {
            Outcome::Success | Outcome::Ignored => return None,
            Outcome::Failure => {}
        }
        if let Err(error) = result
            && rejection_of(&**error).is_some()
        {
            // Another layer turned the call away on purpose: retrying now
            // would only add load where it was refused.
            return None;
        }
        if !self.predicate.may_retry(request) {
            return None;
        }
        if self.attempts >= shared.max_attempts {
            shared.gave_up(self.attempts);
            return None;
        }
        if !shared.withdraw(self.attempts) {
            return None;
        }
        let rng = self.rng.get_or_insert_with(HasherRng::default);
        let wait = shared.backoff.delay(self.attempts, shared.jitter, rng);
        Some(tokio::time::sleep(wait))
    }

    #[inline]
    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        if self.attempts == 0 {
            self.shared.deposit();
        }
        self.replay.replay(request)
    }
}
