//! Deciding what counts as a failure.

mod errors;
mod grpc;
mod http;

pub use errors::ErrorsAsFailures;
pub use grpc::{DEFAULT_FAILING_CODES, GrpcErrors};
pub use http::HttpServerErrors;

/// A classifier of HTTP responses that may defer its verdict to the end of
/// the body: gRPC sends the status of a streaming (or any non-trailers-
/// only) response in its trailers. tower-http's `ClassifyEos` is the
/// model.
///
/// ```
/// use http::{HeaderMap, Response};
/// use tower_hardening_core::{ClassifyEos, GrpcErrors, Outcome};
///
/// let grpc = GrpcErrors::default();
/// // No `grpc-status` in the head: the verdict waits for the trailers.
/// assert_eq!(grpc.classify_head(&Response::new(())), None);
/// let mut trailers = HeaderMap::new();
/// trailers.insert("grpc-status", "14".parse().unwrap()); // UNAVAILABLE
/// assert_eq!(ClassifyEos::<()>::classify_end(&grpc, Some(&trailers)), Outcome::Failure);
/// ```
pub trait ClassifyEos<B>: Clone + Send + Sync + 'static {
    /// The verdict from the response head, or `None` to wait for the end
    /// of its body.
    fn classify_head(&self, response: &::http::Response<B>) -> Option<Outcome>;

    /// The verdict at the end of the body, from its trailers (`None`: it
    /// ended without any).
    fn classify_end(&self, trailers: Option<&::http::HeaderMap>) -> Outcome;
}

use crate::Outcome;

/// Decides whether a finished call was a success, a failure, or not
/// evidence either way.
///
/// One classifier is shared by the breaker, retry and metrics layers, so a
/// service's idea of failure is stated once. Any closure
/// `Fn(&Result<Res, E>) -> Outcome + Clone + Send + Sync + 'static` is a
/// classifier.
///
/// ```
/// use tower_hardening_core::{Classify, Outcome};
///
/// // 404s are the caller's problem: not evidence about the dependency.
/// let classifier = |result: &Result<u16, std::io::Error>| match result {
///     Ok(404) => Outcome::Ignored,
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(classifier.classify(&Ok(404)), Outcome::Ignored);
/// assert_eq!(classifier.classify(&Ok(503)), Outcome::Failure);
/// ```
pub trait Classify<Res, E>: Clone + Send + Sync + 'static {
    /// Whether a metrics layer classifying with this counts an answer
    /// that a fallback below marked ([`fallback`](crate::fallback)) as
    /// outcome `fallback`: only [`CountingFallbacks`](crate::fallback::CountingFallbacks)
    /// says yes. A constant, so a metrics layer without a fallback below
    /// pays nothing for it.
    const COUNTS_FALLBACKS: bool = false;

    /// Classifies one finished call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome + Clone + Send + Sync + 'static,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}
