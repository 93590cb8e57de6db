//! Errors into responses: what a client sees when a hardening layer turns
//! its request away, or the service fails.
//!
//! | error | HTTP | gRPC (`grpc-status`) |
//! | --- | --- | --- |
//! | `CircuitOpen`, `Recovering` | 503 + `Retry-After` | 14 UNAVAILABLE + `grpc-retry-pushback-ms` |
//! | `RecoveryFailed`, `PoolClosed`, `Unsatisfiable` | 503 | 14 UNAVAILABLE |
//! | `Overloaded` | 503 + `Retry-After`, or 429 when the caller exceeded its own share | 8 RESOURCE_EXHAUSTED + `grpc-retry-pushback-ms` |
//! | `RateLimited` | 429 + `Retry-After`, `RateLimit-Policy`, `RateLimit` | 8 RESOURCE_EXHAUSTED + `grpc-retry-pushback-ms` |
//! | `QueueTimeout`, a timeout (tower's `Elapsed`, a late half-open probe) | 504 | 4 DEADLINE_EXCEEDED |
//! | the client's body broke (`ClientBodyError`) | 400 | 3 INVALID_ARGUMENT |
//! | the client's body stalled | 408 | 4 DEADLINE_EXCEEDED |
//! | the client's body was too large | 413 | 8 RESOURCE_EXHAUSTED |
//! | a status the fault layer injected (`InjectedStatus`) | that status (503 for a gRPC code) | that code (14 UNAVAILABLE for an HTTP status) |
//! | anything else | 500, without the inner text | 13 INTERNAL, without the inner text |
//!
//! Every row naming a rejection is the stack's own refusal, and says so:
//! the response carries [`REFUSAL_HEADER`] (`x-hardening-refusal`, as a
//! header or gRPC metadata) with the rejection's name ([`refusal_name`]:
//! `circuit-open`, `overloaded`, `queue-timeout`, ...), and the core
//! [`Rejection`] (kind and retry hint) in its extensions. An upstream's
//! own 503, a timeout or any other error carries neither.
//!
//! `Retry-After` is in whole seconds, rounded up, when the layer gave a
//! hint; the gRPC answer to the same refusals carries the hint as
//! `grpc-retry-pushback-ms` (milliseconds, rounded up, at least 1). Rejection messages are the library's own ("circuit breaker
//! `audio` is open; retry after 2s") and name only the service; other
//! errors' texts never reach the client (they can leak internals).
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening::core::CircuitOpen;
//! use tower_hardening::{BoxError, error_response};
//!
//! let err: BoxError = CircuitOpen::new("audio").with_retry_after(Duration::from_millis(1_200)).into();
//! let response = error_response(&err);
//! assert_eq!(response.status(), 503);
//! assert_eq!(response.headers()["retry-after"], "2");
//! assert_eq!(response.headers()["x-hardening-refusal"], "circuit-open");
//! let refusal = response.extensions().get::<tower_hardening::core::Rejection>().unwrap();
//! assert_eq!(refusal.retry_after, Some(Duration::from_millis(1_200)));
//!
//! let err: BoxError = "db password is hunter2".into();
//! assert_eq!(error_response(&err).status(), 500); // and the text stays inside
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_hardening_core::{
    BoxError, CircuitOpen, ClientBodyErrorKind, Overloaded, PoolClosed, QueueTimeout, RateLimited,
    Recovering, RecoveryFailed, Rejection, RejectionKind, Unsatisfiable, client_body_error_of,
    rejection_of,
};
use tower_service::Service;

/// The header that names a refusal the stack answered itself (HTTP
/// header, gRPC metadata): `circuit-open`, `overloaded`, `queue-timeout`,
/// `recovering`, `recovery-failed`, `pool-closed`, `unsatisfiable` or `rate-limited`
/// (see [`refusal_name`]). An upstream's own 503 never carries it: the
/// stack removes it from the head of every response it did not answer
/// itself (a gRPC upstream's trailers are passed on as they are).
pub const REFUSAL_HEADER: &str = "x-hardening-refusal";

static REFUSAL_HEADER_NAME: http::HeaderName = http::HeaderName::from_static(REFUSAL_HEADER);

/// The value of [`REFUSAL_HEADER`] for a rejection: its kind in kebab
/// case.
pub fn refusal_name(kind: RejectionKind) -> &'static str {
    match kind {
        RejectionKind::CircuitOpen => "circuit-open",
        RejectionKind::Overloaded => "overloaded",
        RejectionKind::QueueTimeout => "queue-timeout",
        RejectionKind::Recovering => "recovering",
        RejectionKind::RecoveryFailed => "recovery-failed",
        RejectionKind::PoolClosed => "pool-closed",
        RejectionKind::Unsatisfiable => "unsatisfiable",
        RejectionKind::RateLimited => "rate-limited",
        // A kind added to core later: named, though not by its own name.
        _ => "refused",
    }
}

/// Marks `response` as the stack's own refusal: the [`Rejection`] in its
/// extensions, and its name in [`REFUSAL_HEADER`].
fn mark_refusal<B>(response: &mut Response<B>, rejection: Option<Rejection>) {
    if let Some(rejection) = rejection {
        response.headers_mut().insert(
            REFUSAL_HEADER,
            HeaderValue::from_static(refusal_name(rejection.kind)),
        );
        response.extensions_mut().insert(rejection);
    }
}

/// The longest `Retry-After` sent: a day (a hint beyond it says "not
/// soon", which a day says as well).
const MAX_RETRY_AFTER: u64 = 86_400;

/// `Retry-After` in whole seconds, rounded up, from 1 to a day.
fn retry_after_secs(after: Duration) -> u64 {
    after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0))
        .clamp(1, MAX_RETRY_AFTER)
}

/// `error` and its sources, outermost first.
fn chain(error: &BoxError) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(
        Some(&**error as &(dyn std::error::Error + 'static)),
        |err| err.source(),
    )
}

/// The rejection in `error`'s chain, and a message for the client made
/// from that rejection alone: never the text of an error wrapped around
/// it, nor a rebuild's inner error.
fn rejection_in(error: &BoxError) -> Option<(Rejection, String)> {
    chain(error).find_map(|err| {
        let message = if let Some(failed) = err.downcast_ref::<RecoveryFailed>() {
            format!("`{}` could not be rebuilt; try again later", failed.name())
        } else if err.is::<CircuitOpen>()
            || err.is::<Overloaded>()
            || err.is::<QueueTimeout>()
            || err.is::<Recovering>()
            || err.is::<PoolClosed>()
            || err.is::<Unsatisfiable>()
            || err.is::<RateLimited>()
        {
            err.to_string()
        } else {
            return None;
        };
        Some((rejection_of(err)?, message))
    })
}

fn is_timeout(error: &BoxError) -> bool {
    chain(error).any(|err| {
        err.is::<tower::timeout::error::Elapsed>()
            || err.is::<tokio::time::error::Elapsed>()
            || is_late_probe(err)
    })
}

#[cfg(feature = "breaker")]
fn is_late_probe(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<tower_hardening_breaker::ProbeTimedOut>()
}

#[cfg(not(feature = "breaker"))]
fn is_late_probe(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

/// The client's own body failure in `error`, with its HTTP status, gRPC
/// code and message.
fn client_body(error: &BoxError) -> Option<(StatusCode, u16, String)> {
    let found = client_body_error_of(&**error)?;
    let (status, code) = match found.kind() {
        ClientBodyErrorKind::TimedOut => (StatusCode::REQUEST_TIMEOUT, DEADLINE_EXCEEDED),
        ClientBodyErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED),
        _ => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
    };
    Some((status, code, found.to_string()))
}

/// A status the fault layer injected (`status_rate`): answered as it is,
/// an HTTP status or a gRPC code.
#[cfg(feature = "fault")]
fn injected_status(error: &BoxError) -> Option<u16> {
    chain(error)
        .find_map(|err| err.downcast_ref::<crate::fault::InjectedStatus>())
        .map(crate::fault::InjectedStatus::status)
}

#[cfg(not(feature = "fault"))]
fn injected_status(_: &BoxError) -> Option<u16> {
    None
}

fn client_share_exceeded(error: &BoxError) -> bool {
    chain(error)
        .find_map(|err| err.downcast_ref::<Overloaded>())
        .is_some_and(Overloaded::is_client_share_exceeded)
}

/// The HTTP response for `error` (see the module's table), with a short
/// `text/plain` body.
pub fn error_response(error: &BoxError) -> Response<Full<Bytes>> {
    let found = rejection_in(error);
    let refusal = found.as_ref().map(|(rejection, _)| *rejection);
    let (status, retry_after, message) = match found {
        Some((rejection, message)) => {
            let status = match rejection.kind {
                RejectionKind::QueueTimeout => StatusCode::GATEWAY_TIMEOUT,
                RejectionKind::Overloaded if client_share_exceeded(error) => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                RejectionKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let retry_after = match rejection.kind {
                RejectionKind::CircuitOpen
                | RejectionKind::Recovering
                | RejectionKind::Overloaded
                | RejectionKind::RateLimited => rejection.retry_after,
                _ => None,
            };
            (status, retry_after, message)
        }
        None if let Some((status, _, message)) = client_body(error) => (status, None, message),
        None if let Some(status) = injected_status(error) => (
            // A gRPC code (0 to 16) is no HTTP status: 503, as gRPC's
            // UNAVAILABLE maps to.
            StatusCode::from_u16(status)
                .ok()
                .filter(|_| status >= 100)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            None,
            "fault injected".to_owned(),
        ),
        None if is_timeout(error) => (
            StatusCode::GATEWAY_TIMEOUT,
            None,
            "the service did not answer in time".to_owned(),
        ),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal error".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
    }
    rate_limit_fields(error, headers);
    mark_refusal(&mut response, refusal);
    response
}

/// The IETF `RateLimit-Policy` and `RateLimit` fields of a rate limit's
/// refusal (draft-ietf-httpapi-ratelimit-headers): `"default";q=100;w=1`
/// (the quota: 100 per 1 s) and `"default";r=0;t=3` (none left; whole
/// again in 3 s at the most, `Retry-After`'s rounding).
fn rate_limit_fields(error: &BoxError, headers: &mut http::HeaderMap) {
    let Some(limited) = chain(error).find_map(|err| err.downcast_ref::<RateLimited>()) else {
        return;
    };
    let Some(policy) = limited.policy() else {
        return;
    };
    let window = policy.window().as_secs().max(1);
    let name = policy.name();
    let fields = [
        (
            "ratelimit-policy",
            format!("\"{name}\";q={};w={window}", policy.quota()),
        ),
        (
            "ratelimit",
            format!(
                "\"{name}\";r=0;t={}",
                retry_after_secs(limited.retry_after())
            ),
        ),
    ];
    for (field, value) in fields {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(field, value);
        }
    }
}

/// gRPC status codes used here.
const UNAVAILABLE: u16 = 14;
const RESOURCE_EXHAUSTED: u16 = 8;
const DEADLINE_EXCEEDED: u16 = 4;
const INTERNAL: u16 = 13;
const INVALID_ARGUMENT: u16 = 3;

/// The gRPC "trailers-only" response for `error` (see the module's table):
/// HTTP 200 with `content-type: application/grpc`, `grpc-status` and a
/// percent-encoded `grpc-message`, so a tonic client sees a proper
/// `Status`.
pub fn grpc_error_response(error: &BoxError) -> Response<Full<Bytes>> {
    let found = rejection_in(error);
    let refusal = found.as_ref().map(|(rejection, _)| *rejection);
    let (code, pushback, message) = match found {
        Some((rejection, message)) => {
            let code = match rejection.kind {
                RejectionKind::QueueTimeout => DEADLINE_EXCEEDED,
                RejectionKind::Overloaded | RejectionKind::RateLimited => RESOURCE_EXHAUSTED,
                _ => UNAVAILABLE,
            };
            // The refusals the HTTP stack sends `Retry-After` for.
            let pushback = match rejection.kind {
                RejectionKind::CircuitOpen
                | RejectionKind::Recovering
                | RejectionKind::Overloaded
                | RejectionKind::RateLimited => rejection.retry_after,
                _ => None,
            };
            (code, pushback, message)
        }
        None if let Some((_, code, message)) = client_body(error) => (code, None, message),
        // A status that is no gRPC code (HTTP's 503, the default) is
        // UNAVAILABLE.
        None if let Some(status) = injected_status(error) => (
            if status <= 16 { status } else { UNAVAILABLE },
            None,
            "fault injected".to_owned(),
        ),
        None if is_timeout(error) => (
            DEADLINE_EXCEEDED,
            None,
            "the service did not answer in time".to_owned(),
        ),
        None => (INTERNAL, None, "internal error".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", value);
    }
    if let Some(after) = pushback {
        headers.insert(
            "grpc-retry-pushback-ms",
            HeaderValue::from(pushback_ms(after)),
        );
    }
    mark_refusal(&mut response, refusal);
    response
}

/// `grpc-retry-pushback-ms` (gRPC's server pushback, which its clients'
/// retry policies obey): at least 1 ms, at most a day.
fn pushback_ms(after: Duration) -> u64 {
    u64::try_from(after.as_micros().div_ceil(1_000))
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_RETRY_AFTER * 1_000)
}

/// gRPC's percent-encoding of `grpc-message`: everything outside printable
/// ASCII, and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How errors become responses: [`HttpErrorResponses`] or
/// [`GrpcErrorResponses`].
pub trait ErrorResponse: Clone + Send + Sync + 'static {
    /// The response for `error`.
    fn response(&self, error: &BoxError) -> Response<Full<Bytes>>;
}

/// HTTP statuses ([`error_response`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpErrorResponses;

impl ErrorResponse for HttpErrorResponses {
    fn response(&self, error: &BoxError) -> Response<Full<Bytes>> {
        error_response(error)
    }
}

/// gRPC statuses ([`grpc_error_response`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcErrorResponses;

impl ErrorResponse for GrpcErrorResponses {
    fn response(&self, error: &BoxError) -> Response<Full<Bytes>> {
        grpc_error_response(error)
    }
}

/// Turns a service's errors into responses, so its error type is
/// `Infallible` (what axum and tonic require). The response body is the
/// inner body or the error's.
#[derive(Debug, Clone)]
pub struct ErrorResponses<S, M> {
    inner: S,
    mapping: M,
    /// The answer for every call once the inner service's readiness
    /// failed (tower's contract: it is broken), made from that error.
    broken: Option<std::sync::Arc<BrokenAnswer>>,
}

/// The parts of the answer a broken service gives every call.
#[derive(Debug)]
struct BrokenAnswer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    refusal: Option<Rejection>,
}

impl BrokenAnswer {
    fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        if let Some(refusal) = self.refusal {
            response.extensions_mut().insert(refusal);
        }
        response
    }
}

impl<S, M> ErrorResponses<S, M> {
    /// Errors of `inner` answered as `mapping` says.
    pub fn new(inner: S, mapping: M) -> Self {
        ErrorResponses {
            inner,
            mapping,
            broken: None,
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

/// The body of an [`ErrorResponses`] answer: the inner service's, or the
/// error response's.
pub type ErrorResponseBody<B> = Either<B, Full<Bytes>>;

impl<S, M, Req, B> Service<Req> for ErrorResponses<S, M>
where
    S: Service<Req, Response = Response<B>, Error = BoxError>,
    M: ErrorResponse,
{
    type Response = Response<ErrorResponseBody<B>>;
    type Error = Infallible;
    type Future = ErrorResponsesFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.broken.is_none()
            && let Err(error) = ready!(self.inner.poll_ready(cx))
        {
            // A service whose readiness failed is broken: every call is
            // answered as that error says, without calling it.
            let response = self.mapping.response(&error);
            let (parts, mut body) = response.into_parts();
            // A `Full` body is one frame, ready at once.
            let mut noop = Context::from_waker(std::task::Waker::noop());
            let body = match Pin::new(&mut body).poll_frame(&mut noop) {
                Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
                _ => Bytes::new(),
            };
            self.broken = Some(std::sync::Arc::new(BrokenAnswer {
                status: parts.status,
                refusal: parts.extensions.get::<Rejection>().copied(),
                headers: parts.headers,
                body,
            }));
        }
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        match &self.broken {
            Some(answer) => ErrorResponsesFuture {
                kind: Kind::Broken {
                    answer: Some(answer.response()),
                },
                mapping: self.mapping.clone(),
            },
            None => ErrorResponsesFuture {
                kind: Kind::Called {
                    future: self.inner.call(request),
                },
                mapping: self.mapping.clone(),
            },
        }
    }
}

pin_project! {
    /// The response future of [`ErrorResponses`].
    #[derive(Debug)]
    pub struct ErrorResponsesFuture<F, M> {
        #[pin]
        kind: Kind<F>,
        mapping: M,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] future: F },
        Broken { answer: Option<Response<Full<Bytes>>> },
    }
}

impl<F, M, B> Future for ErrorResponsesFuture<F, M>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
    M: ErrorResponse,
{
    type Output = Result<Response<ErrorResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.kind.project() {
            KindProj::Called { future } => ready!(future.poll(cx)),
            KindProj::Broken { answer } => {
                let answer = answer
                    .take()
                    .expect("ErrorResponsesFuture polled after completion");
                return Poll::Ready(Ok(answer.map(Either::Right)));
            }
        };
        Poll::Ready(Ok(match result {
            Ok(mut response) => {
                // Only the stack names its own refusals: an upstream's
                // header of that name would tell clients and proxies the
                // stack refused a call it served.
                if !response.headers().is_empty() {
                    response.headers_mut().remove(&REFUSAL_HEADER_NAME);
                }
                response.map(Either::Left)
            }
            Err(error) => this.mapping.response(&error).map(Either::Right),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rejection_gets_its_status() {
        let cases: Vec<(BoxError, u16, Option<&str>, u16)> = vec![
            (
                CircuitOpen::new("a")
                    .with_retry_after(Duration::from_millis(1))
                    .into(),
                503,
                Some("1"),
                14,
            ),
            (
                Recovering::new("a", 1)
                    .with_retry_after(Duration::from_secs(3))
                    .into(),
                503,
                Some("3"),
                14,
            ),
            (Overloaded::new("a").into(), 503, None, 8),
            (
                Overloaded::new("a").client_share_exceeded().into(),
                429,
                None,
                8,
            ),
            (
                QueueTimeout::new("a", Duration::from_secs(1)).into(),
                504,
                None,
                4,
            ),
            ("secret".into(), 500, None, 13),
        ];
        for (error, status, retry_after, grpc) in cases {
            let response = error_response(&error);
            assert_eq!(response.status(), status, "{error}");
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                retry_after,
                "{error}"
            );
            let grpc_response = grpc_error_response(&error);
            assert_eq!(
                grpc_response.headers()["grpc-status"],
                grpc.to_string().as_str()
            );
            assert_eq!(
                grpc_response
                    .headers()
                    .contains_key("grpc-retry-pushback-ms"),
                retry_after.is_some(),
                "{error}"
            );
        }
    }

    #[test]
    fn only_the_rejection_itself_reaches_the_client() {
        #[derive(Debug)]
        struct Wrapper(BoxError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("GET http://10.0.0.5/admin?token=s3cret failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        let wrapped: BoxError = Box::new(Wrapper(CircuitOpen::new("upstream").into()));
        let failed: BoxError = RecoveryFailed::new("db", 3, "password=hunter2 refused").into();
        for error in [wrapped, failed] {
            for response in [error_response(&error), grpc_error_response(&error)] {
                let text = format!("{:?} {:?}", response.headers(), response.body());
                assert!(
                    !text.contains("s3cret") && !text.contains("hunter2"),
                    "{text}"
                );
            }
        }
        let huge: BoxError = CircuitOpen::new("a").with_retry_after(Duration::MAX).into();
        assert_eq!(error_response(&huge).headers()["retry-after"], "86400");
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% off: é"), "50%25 off: %C3%A9");
    }
}
