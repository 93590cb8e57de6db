//! The upstream as a `tower::Service`: each request is sent to one
//! endpoint, retried on another, hedged, as the upstream's rules say.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower::retry::budget::Budget;
use tower_hardening_core::{BoxError, Classify, NoHealthyEndpoint, Outcome};
use tower_service::Service;

use crate::builder::{HedgeDelay, IdempotentFn, ReplayFn, UpstreamBuilder};
use crate::endpoint::Endpoint;
use crate::future::ResponseFuture;
use crate::handle::UpstreamHandle;
use crate::pushback::{Pushback, ReadPushback};
use crate::shared::Shared;

/// How the requests of one upstream are treated: classified, read for
/// pushback, copied, retried and hedged.
pub(crate) struct Rules<Req, C, P> {
    pub(crate) classify: C,
    pub(crate) pushback: P,
    pub(crate) replay: Option<Arc<ReplayFn<Req>>>,
    pub(crate) idempotent: Arc<IdempotentFn<Req>>,
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) hedge: Option<(HedgeDelay, u32)>,
}

/// One `tower::Service` over the endpoints of a dependency.
///
/// Each request goes to one endpoint chosen by power of two choices over
/// peak-EWMA latency among those in rotation; an endpoint whose own
/// record says it is failing is ejected for a while (see
/// [`OutlierPolicy`](crate::OutlierPolicy)); a failed attempt is retried
/// on another endpoint within the retry budget; an endpoint's pushback
/// keeps attempts off it; an idempotent request with no answer after the
/// hedging delay is sent to a second endpoint, and the first good answer
/// wins. Errors stay errors: the caller gets the last attempt's error
/// (or its failing response), or [`NoHealthyEndpoint`] when no endpoint
/// could be tried.
///
/// ```
/// use std::time::Duration;
/// use tower::{ServiceExt, service_fn};
/// use tower_hardening_upstream::{OutlierPolicy, Upstream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_hardening_core::BoxError> {
/// let upstream = Upstream::builder("model-inference")
///     .outlier(OutlierPolicy { consecutive_failures: 5, ..OutlierPolicy::default() })
///     .max_attempts(3)
///     .clone_requests()
///     .build(["http://10.0.0.1:7001", "http://10.0.0.2:7001"], |uri| {
///         let uri = uri.to_owned();
///         service_fn(move |prompt: String| {
///             let uri = uri.clone();
///             async move { Ok::<_, std::io::Error>(format!("{uri} read {} bytes", prompt.len())) }
///         })
///     });
/// let handle = upstream.handle();
/// let answer = upstream.oneshot("hello".to_owned()).await?;
/// assert!(answer.ends_with("read 5 bytes"));
/// assert_eq!(handle.endpoints().len(), 2);
/// # Ok(())
/// # }
/// ```
pub struct Upstream<S, Req, C = tower_hardening_core::ErrorsAsFailures, P = crate::NoPushback> {
    shared: Arc<Shared<S>>,
    rules: Arc<Rules<Req, C, P>>,
    _request: PhantomData<fn(Req)>,
}

impl<S, Req, C, P> Clone for Upstream<S, Req, C, P> {
    fn clone(&self) -> Self {
        Upstream {
            shared: self.shared.clone(),
            rules: self.rules.clone(),
            _request: PhantomData,
        }
    }
}

impl<S, Req, C, P> fmt::Debug for Upstream<S, Req, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<Req> Upstream<(), Req> {
    /// A builder for the upstream called `name`.
    pub fn builder(name: impl Into<Arc<str>>) -> UpstreamBuilder<Req> {
        UpstreamBuilder::new(name.into())
    }
}

impl<S, Req, C, P> Upstream<S, Req, C, P> {
    pub(crate) fn from_parts(shared: Arc<Shared<S>>, rules: Arc<Rules<Req, C, P>>) -> Self {
        Upstream {
            shared,
            rules,
            _request: PhantomData,
        }
    }

    /// The handle: endpoint states, and changing the endpoints.
    pub fn handle(&self) -> UpstreamHandle<S> {
        UpstreamHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, Req, C, P> Service<Req> for Upstream<S, Req, C, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: Send + 'static,
    C: Classify<S::Response, BoxError>,
    P: ReadPushback<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    /// Always ready: each attempt waits for its endpoint's readiness
    /// itself, on a clone (tower's `Oneshot`).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture::new(run(self.shared.clone(), self.rules.clone(), request))
    }
}

/// Whether `error` says the request never reached the endpoint (the
/// connection was refused), so sending it elsewhere is always safe.
fn never_sent(error: &BoxError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = err.source();
    }
    false
}

type Attempt<S, Res> = (Arc<Endpoint<S>>, Instant, Result<Res, BoxError>);
/// A hedged attempt, running beside the main one.
type BoxedAttempt<S, Res> = Pin<Box<dyn Future<Output = Attempt<S, Res>> + Send>>;

fn attempt<S, Req>(
    endpoint: Arc<Endpoint<S>>,
    request: Req,
    timeout: Option<Duration>,
) -> impl Future<Output = Attempt<S, S::Response>>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    let started = Instant::now();
    let call = endpoint
        .start(|service: S| async move { service.oneshot(request).await.map_err(Into::into) });
    async move {
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(tower::timeout::error::Elapsed::new().into()),
            },
            None => call.await,
        };
        (endpoint, started, result)
    }
}

async fn run<S, Req, C, P>(
    shared: Arc<Shared<S>>,
    rules: Arc<Rules<Req, C, P>>,
    request: Req,
) -> Result<S::Response, BoxError>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: Send + 'static,
    C: Classify<S::Response, BoxError>,
    P: ReadPushback<S::Response>,
{
    let wants_copies = rules.max_attempts > 1 || rules.hedge.is_some();
    if wants_copies {
        // Only requests that may be sent again pay into the budget.
        shared.budget.deposit();
    }
    let idempotent = (rules.idempotent)(&request);
    // The request stays here as the template of retries and hedges; each
    // attempt gets a copy. Without a way to copy it, it is sent once.
    let (first, template) = match (&rules.replay, wants_copies) {
        (Some(replay), true) => match replay(&request) {
            Some(copy) => (copy, Some(request)),
            None => (request, None),
        },
        _ => (request, None),
    };
    let copy = |template: &Option<Req>| -> Option<Req> {
        let replay = rules.replay.as_ref()?;
        replay(template.as_ref()?)
    };

    let no_endpoint = |after: Option<Duration>| -> BoxError {
        let err = NoHealthyEndpoint::new(shared.name.clone());
        match after {
            Some(after) => err.with_retry_after(after),
            None => err,
        }
        .into()
    };

    let mut tried = Tried::default();
    let endpoint = shared.pick(tried.as_slice(), true).map_err(no_endpoint)?;
    tried.push(endpoint.id);
    // The first attempt and each retry run here, unboxed; hedges, which
    // run beside it, are boxed.
    let mut main = pin!(Some(attempt(endpoint, first, rules.timeout)));
    let mut hedged: Vec<BoxedAttempt<S, S::Response>> = Vec::new();
    let mut retries = 0u32;
    let mut hedges = 0u32;

    let (hedge_delay, max_hedges) = match rules.hedge {
        Some((delay, max)) if idempotent && template.is_some() => {
            let delay = match delay {
                HedgeDelay::Fixed(delay) => Some(delay),
                HedgeDelay::P95 => shared.latency.p95(),
            };
            (delay, max)
        }
        _ => (None, 0),
    };
    let mut hedge_timer = hedge_delay.map(|delay| Box::pin(tokio::time::sleep(delay)));
    // The last failed answer: what the caller gets when no retry follows.
    let mut last: Option<Result<S::Response, BoxError>>;
    // A "do not retry" from any attempt holds for the whole request.
    let mut do_not_retry = false;

    loop {
        let next = std::future::poll_fn(|cx| {
            if let Some(running) = main.as_mut().as_pin_mut()
                && let Poll::Ready(done) = running.poll(cx)
            {
                main.set(None);
                return Poll::Ready(Next::Answer(done));
            }
            for index in 0..hedged.len() {
                if let Poll::Ready(done) = hedged[index].as_mut().poll(cx) {
                    drop(hedged.swap_remove(index));
                    return Poll::Ready(Next::Answer(done));
                }
            }
            if let Some(timer) = hedge_timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Next::Hedge);
            }
            Poll::Pending
        })
        .await;
        match next {
            Next::Answer((endpoint, started, result)) => {
                let outcome = rules.classify.classify(&result);
                let elapsed = started.elapsed();
                shared.record(&endpoint, outcome, elapsed);
                // Pushback is honoured whatever the answer counts as (a 429
                // may be no failure of the endpoint's, and still say "later").
                let pushback = result
                    .as_ref()
                    .ok()
                    .and_then(|r| rules.pushback.pushback(r));
                if let Some(Pushback::RetryAfter(after)) = pushback {
                    shared.push_back(&endpoint, after);
                }
                if outcome != Outcome::Failure {
                    if outcome == Outcome::Success
                        && rules.hedge.is_some_and(|(d, _)| d == HedgeDelay::P95)
                    {
                        shared.latency.record(elapsed);
                    }
                    // Dropping the other attempts cancels them.
                    return result;
                }
                do_not_retry |= pushback == Some(Pushback::DoNotRetry);
                let may_retry =
                    !do_not_retry && (idempotent || matches!(&result, Err(e) if never_sent(e)));
                last = Some(result);
                if do_not_retry {
                    hedge_timer = None;
                }
                if main.is_some() || !hedged.is_empty() {
                    // Another attempt is in flight: its answer decides.
                    continue;
                }
                if !may_retry || retries + 1 >= rules.max_attempts {
                    break;
                }
                let Ok(endpoint) = shared.pick(tried.as_slice(), true) else {
                    break;
                };
                let Some(request) = copy(&template) else {
                    break;
                };
                if !shared.withdraw() {
                    break;
                }
                retries += 1;
                tried.push(endpoint.id);
                main.set(Some(attempt(endpoint, request, rules.timeout)));
                rearm(&mut hedge_timer, hedge_delay, hedges < max_hedges);
            }
            Next::Hedge => {
                rearm(&mut hedge_timer, hedge_delay, false);
                // A hedge goes to an endpoint not tried yet, or not at all.
                let Ok(endpoint) = shared.pick(tried.as_slice(), false) else {
                    continue;
                };
                let Some(request) = copy(&template) else {
                    continue;
                };
                if !shared.withdraw() {
                    continue;
                }
                hedges += 1;
                shared.hedges_total.increment(1);
                tried.push(endpoint.id);
                hedged.push(Box::pin(attempt(endpoint, request, rules.timeout)));
                rearm(&mut hedge_timer, hedge_delay, hedges < max_hedges);
            }
        }
    }
    last.unwrap_or_else(|| Err(no_endpoint(None)))
}

/// What woke a request's loop: an attempt's answer, or the hedge timer.
enum Next<T> {
    Answer(T),
    Hedge,
}

/// Sets the hedge timer `delay` from now when `armed`, else stops it.
fn rearm(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>, delay: Option<Duration>, armed: bool) {
    match (delay, armed) {
        (Some(delay), true) => match timer {
            Some(timer) => timer
                .as_mut()
                .reset(crate::outlier::later(Instant::now(), delay)),
            None => *timer = Some(Box::pin(tokio::time::sleep(delay))),
        },
        _ => *timer = None,
    }
}

/// The endpoints a request was sent to, without allocating for the usual
/// few. Beyond eight, later ones are not remembered: a retry may then go
/// to one tried before, as it may in a small upstream anyway.
#[derive(Default)]
struct Tried {
    ids: [u64; 8],
    len: usize,
}

impl Tried {
    fn push(&mut self, id: u64) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = id;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[u64] {
        &self.ids[..self.len]
    }
}
