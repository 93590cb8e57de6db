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
use tower_hardening_core::stripe;
use tower_hardening_core::{BoxError, Classify, Outcome, client_body_error_of, rejection_of};

use super::replay::ReplayRequest;
use super::shared::RetryShared;

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
    pub(crate) shared: Arc<RetryShared>,
    pub(crate) classifier: C,
    pub(crate) replay: K,
    /// `None`: every request may be retried.
    pub(crate) predicate: Option<P>,
    /// This request's attempts so far (for the `tower::retry::Policy` use;
    /// [`RetryService`](crate::RetryService) keeps them in its future).
    pub(crate) attempts: Attempts,
}

/// One request's retry state: the attempts finished. (The jitter's random
/// source is made for each retry, from a fresh `RandomState`: keeping one
/// here would make every response future 36 bytes bigger, moved on every
/// call, for the few that retry.)
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    pub(crate) finished: u32,
}

impl<C: Clone, K: Clone, P: Clone> Clone for RetryPolicy<C, K, P> {
    fn clone(&self) -> Self {
        // Each request starts from zero attempts.
        RetryPolicy {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            predicate: self.predicate.clone(),
            attempts: Attempts::default(),
        }
    }
}

impl<C, K, P> RetryPolicy<C, K, P> {
    /// A copy of `request` to send again if this attempt fails; the first
    /// attempt of a request is counted and earns the budget its deposit
    /// (on the stripe of `thread`, a `stripe::thread_number`).
    #[inline]
    pub(crate) fn copy_request<Req>(
        &self,
        attempts: &Attempts,
        request: &Req,
        thread: usize,
    ) -> Option<Req>
    where
        K: ReplayRequest<Req>,
    {
        if attempts.finished == 0 {
            self.shared.deposit(thread);
        }
        self.replay.replay(request)
    }

    /// Whether to retry after this attempt, and after how long.
    #[inline]
    pub(crate) fn decide<Req, Res>(
        &self,
        attempts: &mut Attempts,
        request: &mut Req,
        result: &mut Result<Res, BoxError>,
    ) -> Option<tokio::time::Sleep>
    where
        C: Classify<Res, BoxError>,
        P: RetryPredicate<Req>,
    {
        attempts.finished = attempts.finished.saturating_add(1);
        match self.classifier.classify(result) {
            Outcome::Success | Outcome::Ignored => None,
            Outcome::Failure => self.after_failure(attempts, request, result),
        }
    }

    /// The rest of [`decide`](Self::decide), for a failed attempt: out of
    /// line, so the success path stays small.
    #[inline(never)]
    fn after_failure<Req, Res>(
        &self,
        attempts: &mut Attempts,
        request: &mut Req,
        result: &mut Result<Res, BoxError>,
    ) -> Option<tokio::time::Sleep>
    where
        P: RetryPredicate<Req>,
    {
        let shared = &self.shared;
        if let Err(error) = result
            && (rejection_of(&**error).is_some() || client_body_error_of(&**error).is_some())
        {
            // Another layer turned the call away on purpose (retrying now
            // would only add load where it was refused), or the client's
            // own body failed (it would fail again).
            return None;
        }
        if let Some(predicate) = &self.predicate
            && !predicate.may_retry(request)
        {
            return None;
        }
        if attempts.finished >= shared.max_attempts {
            shared.gave_up(attempts.finished);
            return None;
        }
        if !shared.withdraw(attempts.finished) {
            return None;
        }
        let mut rng = HasherRng::default();
        let wait = shared
            .backoff
            .delay(attempts.finished, shared.jitter, &mut rng);
        // A wait past the end of the clock sleeps forever; it never panics.
        Some(tokio::time::sleep(wait))
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
        let mut attempts = std::mem::take(&mut self.attempts);
        let decision = self.decide(&mut attempts, request, result);
        self.attempts = attempts;
        decision
    }

    #[inline]
    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        self.copy_request(&self.attempts, request, stripe::thread_number())
    }
}
