use http::{Response, StatusCode};
use tower_http::classify::{ClassifiedResponse, ClassifyResponse, ServerErrorsAsFailures};

use super::Classify;
use crate::Outcome;

/// Classifies `http::Response`s: 5xx statuses are failures (and, if asked,
/// 429 too); any `Err` is a failure; everything else succeeds.
///
/// The 5xx rule is tower-http's `ServerErrorsAsFailures`.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_hardening_core::{Classify, HttpServerErrors, Outcome};
///
/// let status = |code: u16| -> Result<Response<()>, std::io::Error> {
///     Ok(Response::builder().status(code).body(()).unwrap())
/// };
/// let classifier = HttpServerErrors::default();
/// assert_eq!(classifier.classify(&status(503)), Outcome::Failure);
/// assert_eq!(classifier.classify(&status(404)), Outcome::Success);
/// assert_eq!(classifier.classify(&status(429)), Outcome::Success);
/// assert_eq!(classifier.with_too_many_requests().classify(&status(429)), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpServerErrors {
    too_many_requests_fails: bool,
}

impl HttpServerErrors {
    /// 5xx and `Err` are failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also count `429 Too Many Requests` as a failure (a dependency that
    /// throttles us is one to back off from).
    pub fn with_too_many_requests(mut self) -> Self {
        self.too_many_requests_fails = true;
        self
    }
}

impl HttpServerErrors {
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        if self.too_many_requests_fails && response.status() == StatusCode::TOO_MANY_REQUESTS {
            return Outcome::Failure;
        }
        match ServerErrorsAsFailures::new().classify_response(response) {
            ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
            ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
            // ServerErrorsAsFailures never waits for the end of the stream.
            ClassifiedResponse::RequiresEos(_) => Outcome::Success,
        }
    }
}

impl<B, E> Classify<Response<B>, E> for HttpServerErrors {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(_) => Outcome::Failure,
        }
    }
}

impl<B> super::ClassifyEos<B> for HttpServerErrors {
    /// Always at the head: the status line says it all.
    fn classify_head(&self, response: &Response<B>) -> Option<Outcome> {
        Some(self.classify_response(response))
    }

    fn classify_end(&self, _: Option<&http::HeaderMap>) -> Outcome {
        Outcome::Success
    }
}
