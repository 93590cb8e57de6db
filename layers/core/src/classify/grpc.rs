use http::Response;
use tower_http::classify::{
    ClassifiedResponse, ClassifyEos as TowerClassifyEos, ClassifyResponse, GrpcCode,
    GrpcErrorsAsFailures,
};

use super::{Classify, ClassifyEos};
use crate::Outcome;

const ALL_CODES: [GrpcCode; 17] = [
    GrpcCode::Ok,
    GrpcCode::Cancelled,
    GrpcCode::Unknown,
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

/// The codes [`GrpcErrors::default`] counts as failures: the ones that say
/// something about the server's health rather than the request.
pub const DEFAULT_FAILING_CODES: [GrpcCode; 5] = [
    GrpcCode::Unavailable,
    GrpcCode::DeadlineExceeded,
    GrpcCode::Internal,
    GrpcCode::ResourceExhausted,
    GrpcCode::Unknown,
];

/// Classifies gRPC responses by the `grpc-status` response header: a code
/// in the failing set is a failure, any other code a success; an `Err` is
/// a failure.
///
/// Header parsing is tower-http's `GrpcErrorsAsFailures`. A successful
/// unary or streaming gRPC call carries its status in the trailers, which
/// arrive after the response head; a response with no `grpc-status`
/// header is therefore classified as a success here (errors returned
/// before any message use a trailers-only response, whose status is in the
/// headers and is seen).
///
/// ```
/// use http::Response;
/// use tower_hardening_core::{Classify, GrpcCode, GrpcErrors, Outcome};
///
/// let with_status = |code: &str| -> Result<Response<()>, std::io::Error> {
///     Ok(Response::builder().header("grpc-status", code).body(()).unwrap())
/// };
/// let classifier = GrpcErrors::default();
/// assert_eq!(classifier.classify(&with_status("14")), Outcome::Failure); // Unavailable
/// assert_eq!(classifier.classify(&with_status("5")), Outcome::Success); // NotFound
///
/// let strict = GrpcErrors::failing_on([GrpcCode::NotFound]);
/// assert_eq!(strict.classify(&with_status("5")), Outcome::Failure);
/// ```
#[derive(Debug, Clone)]
pub struct GrpcErrors {
    inner: GrpcErrorsAsFailures,
}

impl GrpcErrors {
    /// Fails on exactly the given codes (`Ok` never fails, even if listed).
    pub fn failing_on(codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        let failing: Vec<GrpcCode> = codes.into_iter().collect();
        let inner = ALL_CODES
            .into_iter()
            .filter(|code| !failing.contains(code))
            .fold(
                GrpcErrorsAsFailures::new(),
                GrpcErrorsAsFailures::with_success,
            );
        GrpcErrors { inner }
    }
}

impl Default for GrpcErrors {
    /// Fails on Unavailable, DeadlineExceeded, Internal, ResourceExhausted
    /// and Unknown.
    fn default() -> Self {
        GrpcErrors::failing_on(DEFAULT_FAILING_CODES)
    }
}

impl<B, E> Classify<Response<B>, E> for GrpcErrors {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        let response = match result {
            Ok(response) => response,
            Err(_) => return Outcome::Failure,
        };
        match self.inner.clone().classify_response(response) {
            ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
            ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
            ClassifiedResponse::RequiresEos(_) => Outcome::Success,
        }
    }
}

impl<B> ClassifyEos<B> for GrpcErrors {
    fn classify_head(&self, response: &Response<B>) -> Option<Outcome> {
        // Not gRPC at all (a proxy's 503, a fallback's 500): the HTTP
        // status decides.
        if response.status().is_server_error() && !response.headers().contains_key("grpc-status") {
            return Some(Outcome::Failure);
        }
        match self.inner.clone().classify_response(response) {
            ClassifiedResponse::Ready(Ok(())) => Some(Outcome::Success),
            ClassifiedResponse::Ready(Err(_)) => Some(Outcome::Failure),
            ClassifiedResponse::RequiresEos(_) => None,
        }
    }

    fn classify_end(&self, trailers: Option<&http::HeaderMap>) -> Outcome {
        // A head without `grpc-status` gives the end-of-stream classifier.
        let head = Response::new(());
        match self.inner.clone().classify_response(&head) {
            ClassifiedResponse::RequiresEos(eos) => match eos.classify_eos(trailers) {
                Ok(()) => Outcome::Success,
                Err(_) => Outcome::Failure,
            },
            ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
            ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: &str) -> Result<Response<()>, ()> {
        Ok(Response::builder()
            .header("grpc-status", code)
            .body(())
            .unwrap())
    }

    #[test]
    fn default_set_fails_on_exactly_five_codes() {
        let classifier = GrpcErrors::default();
        let failing: Vec<i32> = (0..=16)
            .filter(|code| classifier.classify(&status(&code.to_string())) == Outcome::Failure)
            .collect();
        assert_eq!(failing, vec![2, 4, 8, 13, 14]);
    }

    #[test]
    fn missing_or_garbage_status_is_success_and_err_is_failure() {
        let classifier = GrpcErrors::default();
        let plain: Result<Response<()>, ()> = Ok(Response::new(()));
        assert_eq!(classifier.classify(&plain), Outcome::Success);
        assert_eq!(classifier.classify(&status("not-a-code")), Outcome::Success);
        assert_eq!(
            classifier.classify(&Err::<Response<()>, _>(())),
            Outcome::Failure
        );
    }

    #[test]
    fn unknown_numeric_code_counts_as_unknown() {
        // tower-http maps codes outside 0..=16 to no known code; they are
        // not in any success set, so they fail.
        assert_eq!(
            GrpcErrors::default().classify(&status("99")),
            Outcome::Failure
        );
    }
}
