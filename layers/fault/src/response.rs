//! The responses a fault layer can answer with instead of calling the
//! service.
//!
//! ```
//! use tower_hardening_fault::{GrpcStatus, HttpStatus, InjectResponse};
//!
//! let http: Option<http::Response<String>> = HttpStatus.make(503);
//! assert_eq!(http.unwrap().status(), 503);
//! let grpc: Option<http::Response<String>> = GrpcStatus.make(14);
//! assert_eq!(grpc.unwrap().headers()["grpc-status"], "14");
//! ```

use std::sync::Arc;

use tower_hardening_core::BoxError;

use crate::error::InjectedStatus;

/// Makes the response an injected status becomes, for responses of type
/// `Res`.
pub trait InjectResponse<Res>: Clone {
    /// A response carrying `status`; `None` when this kind of response
    /// cannot be made (the call then goes through).
    fn make(&self, status: u16) -> Option<Res>;

    /// What the call answers instead of calling the service: by default
    /// [`make`](Self::make)'s response; [`StatusError`] answers an
    /// [`InjectedStatus`] error instead. `name` is the fault layer's.
    fn inject(&self, status: u16, name: &Arc<str>) -> Option<Result<Res, BoxError>> {
        let _ = name;
        self.make(status).map(Ok)
    }
}

/// Injected statuses as [`InjectedStatus`] errors, for any response type:
/// for a stack that answers errors itself (the facade's `http_layer` and
/// `grpc_layer` answer it with that HTTP status, or that gRPC code).
/// Unlike [`HttpStatus`] and [`GrpcStatus`], it asks nothing of the
/// response's body (hyper's `Incoming` is not `Default`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusError;

impl<Res> InjectResponse<Res> for StatusError {
    fn make(&self, _: u16) -> Option<Res> {
        None
    }

    fn inject(&self, status: u16, name: &Arc<str>) -> Option<Result<Res, BoxError>> {
        Some(Err(InjectedStatus::new(name.clone(), status).into()))
    }
}

/// No injected responses: for services whose responses the layer cannot
/// make (use errors instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResponse;

impl<Res> InjectResponse<Res> for NoResponse {
    fn make(&self, _: u16) -> Option<Res> {
        None
    }
}

/// An `http::Response` with the injected status and an empty body: the
/// body type must be `Default` (see [`StatusError`] otherwise).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatus;

impl<B: Default> InjectResponse<http::Response<B>> for HttpStatus {
    fn make(&self, status: u16) -> Option<http::Response<B>> {
        let mut response = http::Response::new(B::default());
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
        Some(response)
    }
}

/// A gRPC "trailers-only" error: HTTP 200 with `grpc-status` (the injected
/// code; a status that is no gRPC code, such as HTTP's 503, becomes 14
/// UNAVAILABLE) and `grpc-message` headers. The body type must be
/// `Default` (see [`StatusError`] otherwise).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatus;

impl<B: Default> InjectResponse<http::Response<B>> for GrpcStatus {
    fn make(&self, code: u16) -> Option<http::Response<B>> {
        let code = if code <= 16 { code } else { 14 };
        let mut response = http::Response::new(B::default());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", http::HeaderValue::from(code));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("fault%20injected"),
        );
        Some(response)
    }
}
