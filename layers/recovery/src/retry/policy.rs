//! Which requests may be retried, and the policy that decides each retry.
//!
//! ```
//! use tower_hardening_recovery::{AnyRequest, RetryPredicate};
//!
//! let even = |x: &u32| x % 2 == 0;
//! assert!(even.may_retry(&4));
//! assert!(!even.may_retry(&3));
//! assert!(AnyRequest.may_retry(&3));
//! ```

use std::sync::Arc;

use http::{Method, Request};
use tower::util::rng::HasherRng;
use tower_hardening_core::{BoxError, Classify, Outcome, rejection_of};

use super::replay::ReplayRequest;
use super::shared::RetryShared;
use tower_hardening_core::stripe::{CachePadded, Held};

/// Which requests may be sent more than once.
///
/// Any `Fn(&Req) -> bool + Clone` is one; [`AnyRequest`] allows every
/// request and [`IdempotentHttp`] the idempotent HTTP ones. Set it with
/// [`RetryBuilder::idempotent`](crate::RetryBuilder::idempotent).
pub trait RetryPredicate<Req>: Clone {
    /// Whether `request` may be retried (is idempotent).
    fn may_retry(&self, request: &Req) -> bool;
}

/// Every request may be retried.
///
/// What a plain [`RetryLayer`](crate::RetryLayer) does when no predicate
/// is set (its requests are opaque values); under
/// [`RetryLayer::http`](crate::RetryLayer::http) it must be asked for
/// explicitly, with `.idempotent(AnyRequest)`, since it also retries
/// `POST`s.
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

/// The HTTP requests that are safe to send twice: the idempotent methods
/// of RFC 9110 (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), and
/// any request carrying a non-empty `Idempotency-Key` header (the client
/// promises the server deduplicates it).
///
/// The default of [`RetryLayer::http`](crate::RetryLayer::http); combine
/// it with a rule of your own to opt more requests in:
///
/// ```
/// use http::{Method, Request};
/// use tower_hardening_recovery::{IdempotentHttp, RetryPredicate};
///
/// let get = Request::get("/models").body(()).unwrap();
/// let post = Request::post("/transcribe").body(()).unwrap();
/// let keyed = Request::post("/transcribe").header("idempotency-key", "8e03").body(()).unwrap();
/// assert!(IdempotentHttp.may_retry(&get));
/// assert!(!IdempotentHttp.may_retry(&post));
/// assert!(IdempotentHttp.may_retry(&keyed));
///
/// // Transcription is a pure function of the audio: also retry it.
/// let ours = |r: &Request<()>| IdempotentHttp.may_retry(r) || r.uri().path() == "/transcribe";
/// assert!(ours.may_retry(&post));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct IdempotentHttp;

/// The header a client sets to make a non-idempotent request safe to retry
/// (IETF draft "The Idempotency-Key HTTP Header Field").
const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<B> RetryPredicate<Request<B>> for IdempotentHttp {
    fn may_retry(&self, request: &Request<B>) -> bool {
        matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ) || request
            .headers()
            .get_all(IDEMPOTENCY_KEY)
            .iter()
            .any(|key| !key.as_bytes().trim_ascii().is_empty())
    }
}

/// The `tower::retry::Policy` behind [`RetryLayer`](crate::RetryLayer):
/// classify, never retry a rejection, respect the predicate, the attempt
/// limit and the shared budget, then wait the backoff.
///
/// The classifier sees `Result<Res, BoxError>` (the inner service's errors
/// are boxed first), the shape every tower-hardening layer classifies, so
/// one classifier value serves breaker, retry, metrics and recover alike.
#[derive(Debug)]
pub struct RetryPolicy<C, K, P> {
    /// Reached through a stripe in the policies [`RetryLayer`](crate::RetryLayer)
    /// keeps per stripe, so cloning a policy per call writes no
    /// reference count other cores write.
    pub(crate) shared: Held<RetryShared>,
    pub(crate) classifier: C,
    pub(crate) replay: K,
    /// `None`: every request may be retried.
    pub(crate) predicate: Option<P>,
    /// Attempts finished for the current request.
    pub(crate) attempts: u32,
    /// Made on the first retry only: most requests never need one.
    pub(crate) rng: Option<HasherRng>,
}

impl<C: Clone, K: Clone, P: Clone> RetryPolicy<C, K, P> {
    /// The same policy, reaching its shared state through a reference
    /// count of its own (one per stripe).
    pub(crate) fn for_stripe(&self) -> Self {
        let shared = Arc::clone(&self.shared);
        RetryPolicy {
            shared: Held::Striped(Arc::new(CachePadded(shared))),
            ..self.clone()
        }
    }
}

impl<C: Clone, K: Clone, P: Clone> Clone for RetryPolicy<C, K, P> {
    fn clone(&self) -> Self {
        // Each request starts from zero attempts.
        RetryPolicy {
            shared: match &self.shared {
                Held::Direct(shared) => Held::Direct(Arc::clone(shared)),
                Held::Striped(stripe) => Held::Striped(Arc::clone(stripe)),
            },
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
        self.attempts = self.attempts.saturating_add(1);
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
        if let Some(predicate) = &self.predicate
            && !predicate.may_retry(request)
        {
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
        // A wait past the end of the clock sleeps forever; it never panics.
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
