//! Every public stack fits where users put it: over a service whose error
//! is `BoxError`, `io::Error` or `Infallible`, the stack's call can be
//! moved into `tokio::spawn` (its future is `Send + 'static`), with
//! axum's request body, a response body without `Default` (hyper's
//! `Incoming`), and a request that is not `Clone` while retries are off.
//! These tests are mostly about compiling; each also runs its calls.
//!
//! Each stack is spawned twice: `tokio::spawn(svc.oneshot(request))`, and
//! inside an `async` block that drives `ready()` and `call()` (what an
//! axum handler or a task does). The second failed for `BoxError` before
//! the stack's futures stopped naming `S::Future` ("implementation of
//! `From` is not general enough"). Note that `svc.oneshot(request).await`
//! *inside* an `async` block still fails for a `service_fn` closure whose
//! error is `BoxError`, with any layer that converts errors, tower's own
//! `Timeout` included: that is rustc's, rust-lang/rust#110338.

#![cfg(all(
    feature = "breaker",
    feature = "recovery",
    feature = "limit",
    feature = "metrics",
    feature = "fault"
))]

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::stack::{fits_http_layer, fits_layer, fits_layer_without_retries};
use tower_hardening::{BoxError, SystemHardening};

fn hardening(toml: &str) -> SystemHardening {
    let config = SystemHardeningConfig::from_toml_str(toml).unwrap();
    SystemHardening::builder(config).build().unwrap()
}

/// Retries on, a breaker, admission and a timeout: every part in play.
const EVERYTHING_ON: &str = r#"
[services.api]
timeout = "5s"
[services.api.retry]
max_attempts = 2
[services.api.limit]
max_concurrency = 4
"#;

/// Retries off (the default).
const RETRIES_OFF: &str = "[services.api]\n";

/// A request body like hyper's `Incoming`: a `Body`, neither `Default`
/// nor `Clone`.
#[derive(Debug)]
struct IncomingLike(Option<Bytes>);

impl HttpBody for IncomingLike {
    type Data = Bytes;
    type Error = hyper_like::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

mod hyper_like {
    /// hyper's own error type: not a `BoxError`.
    #[derive(Debug)]
    pub(crate) struct Error;
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("hyper-like error")
        }
    }
    impl std::error::Error for Error {}
}

/// A request that is not `Clone` (axum's `Body` is not).
#[derive(Debug)]
struct NotClone(u32);

macro_rules! plain_stack_spawns {
    ($name:ident, $error:ty, $config:expr) => {
        #[tokio::test]
        async fn $name() {
            let hardening = hardening($config);
            let inner = service_fn(|x: u32| async move { Ok::<u32, $error>(x + 1) });
            fits_layer::<u32, _>(&inner);
            let svc = hardening.layer("api").unwrap().layer(inner);
            let answer = tokio::spawn(svc.clone().oneshot(41))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, 42);
            let mut svc = svc;
            let answer = tokio::spawn(async move { svc.ready().await?.call(41).await })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, 42);
        }
    };
}

plain_stack_spawns!(layer_over_box_error_spawns, BoxError, EVERYTHING_ON);
plain_stack_spawns!(layer_over_io_error_spawns, io::Error, EVERYTHING_ON);
plain_stack_spawns!(layer_over_infallible_spawns, Infallible, EVERYTHING_ON);

macro_rules! plain_stack_takes_non_clone_requests {
    ($name:ident, $error:ty) => {
        #[tokio::test]
        async fn $name() {
            let hardening = hardening(EVERYTHING_ON);
            let inner = service_fn(|x: NotClone| async move { Ok::<u32, $error>(x.0 + 1) });
            fits_layer_without_retries::<NotClone, _>(&inner);
            let svc = hardening
                .layer("api")
                .unwrap()
                .without_retries()
                .layer(inner);
            let mut svc = svc;
            let answer = tokio::spawn(async move { svc.ready().await?.call(NotClone(41)).await })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, 42);
        }
    };
}

plain_stack_takes_non_clone_requests!(
    layer_without_retries_takes_a_non_clone_request_box_error,
    BoxError
);
plain_stack_takes_non_clone_requests!(
    layer_without_retries_takes_a_non_clone_request_io_error,
    io::Error
);
plain_stack_takes_non_clone_requests!(
    layer_without_retries_takes_a_non_clone_request_infallible,
    Infallible
);

macro_rules! http_stack_spawns {
    ($name:ident, $method:ident, $config:expr, $error:ty, $response_body:expr) => {
        #[tokio::test]
        async fn $name() {
            let hardening = hardening($config);
            let inner = service_fn(|request: http::Request<axum::body::Body>| async move {
                drop(request);
                Ok::<_, $error>(http::Response::new($response_body))
            });
            fits_http_layer::<axum::body::Body, _, _>(&inner);
            let svc = hardening
                .$method("api")
                .unwrap()
                .map_body(axum::body::Body::new)
                .layer(inner);
            let request = || {
                http::Request::get("/")
                    .body(IncomingLike(Some(Bytes::from_static(b"hi"))))
                    .unwrap()
            };
            let response = tokio::spawn(svc.clone().oneshot(request()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(response.status(), 200);
            let mut svc = svc;
            let response = tokio::spawn(async move { svc.ready().await?.call(request()).await })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };
}

// axum-like responses (a `Default` body).
http_stack_spawns!(
    http_layer_over_box_error_spawns,
    http_layer,
    EVERYTHING_ON,
    BoxError,
    axum::body::Body::empty()
);
http_stack_spawns!(
    http_layer_over_io_error_spawns,
    http_layer,
    EVERYTHING_ON,
    io::Error,
    axum::body::Body::empty()
);
http_stack_spawns!(
    http_layer_over_infallible_spawns,
    http_layer,
    EVERYTHING_ON,
    Infallible,
    axum::body::Body::empty()
);
http_stack_spawns!(
    grpc_layer_over_box_error_spawns,
    grpc_layer,
    EVERYTHING_ON,
    BoxError,
    axum::body::Body::empty()
);
http_stack_spawns!(
    grpc_layer_over_io_error_spawns,
    grpc_layer,
    EVERYTHING_ON,
    io::Error,
    axum::body::Body::empty()
);
http_stack_spawns!(
    grpc_layer_over_infallible_spawns,
    grpc_layer,
    EVERYTHING_ON,
    Infallible,
    axum::body::Body::empty()
);

// hyper-like responses (a body without `Default`), fault injection off.
http_stack_spawns!(
    http_layer_over_a_response_body_without_default_box_error,
    http_layer,
    EVERYTHING_ON,
    BoxError,
    IncomingLike(None)
);
http_stack_spawns!(
    http_layer_over_a_response_body_without_default_io_error,
    http_layer,
    RETRIES_OFF,
    io::Error,
    IncomingLike(None)
);
http_stack_spawns!(
    http_layer_over_a_response_body_without_default_infallible,
    http_layer,
    EVERYTHING_ON,
    Infallible,
    IncomingLike(None)
);
http_stack_spawns!(
    grpc_layer_over_a_response_body_without_default_box_error,
    grpc_layer,
    EVERYTHING_ON,
    BoxError,
    IncomingLike(None)
);
http_stack_spawns!(
    grpc_layer_over_a_response_body_without_default_io_error,
    grpc_layer,
    RETRIES_OFF,
    io::Error,
    IncomingLike(None)
);
http_stack_spawns!(
    grpc_layer_over_a_response_body_without_default_infallible,
    grpc_layer,
    EVERYTHING_ON,
    Infallible,
    IncomingLike(None)
);
