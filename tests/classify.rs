//! A service's own rule of what counts as its failure, given in code on
//! its HTTP or gRPC stack: the breaker, the retries and the metrics all
//! read it.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{GrpcCode, Outcome, names};

type Request = http::Request<tower_hardening::recovery::ReplayBody<Full<Bytes>>>;
type Answer = std::future::Ready<Result<http::Response<Full<Bytes>>, Infallible>>;

fn answer(status: u16, grpc: Option<u16>) -> impl Fn(Request) -> Answer + Clone {
    move |_| {
        let mut response = http::Response::new(Full::<Bytes>::default());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Some(code) = grpc {
            response.headers_mut().insert("grpc-status", code.into());
        }
        std::future::ready(Ok(response))
    }
}

fn request() -> http::Request<Full<Bytes>> {
    http::Request::get("/").body(Full::default()).unwrap()
}

fn figures(hardening: &SystemHardening) -> (u64, u64, f64) {
    let failures = hardening
        .handle()
        .breaker("api")
        .unwrap()
        .snapshot()
        .failures;
    let retries = hardening.layer("api").unwrap().retry().stats().retries;
    let ignored = hardening
        .handle()
        .metrics()
        .query(names::REQUESTS_TOTAL)
        .label(names::LABEL_SERVICE, "api")
        .label(names::LABEL_OUTCOME, "ignored")
        .sum();
    (failures, retries, ignored)
}

fn hardening() -> SystemHardening {
    let config = SystemHardeningConfig::from_toml_str("[services.api.retry]").unwrap();
    SystemHardening::builder(config).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_502_from_my_dependency_is_not_my_failure() {
    let hardening = hardening();
    let layer = hardening
        .http_layer("api")
        .unwrap()
        .classify(|status| match status.as_u16() {
            502 => Outcome::Ignored,
            500..=599 => Outcome::Failure,
            _ => Outcome::Success,
        });
    let response = layer
        .layer(service_fn(answer(502, None)))
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), 502, "the answer itself is passed on");
    assert_eq!(
        figures(&hardening),
        (0, 0, 1.0),
        "breaker, retries, metrics"
    );

    // The same stack without the rule: a failure, retried.
    let hardening = self::hardening();
    let layer = hardening.http_layer("api").unwrap();
    layer
        .layer(service_fn(answer(502, None)))
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(figures(&hardening), (3, 2, 0.0));
}

#[tokio::test(start_paused = true)]
async fn a_grpc_stack_takes_a_rule_of_codes() {
    let hardening = hardening();
    let layer = hardening
        .grpc_layer("api")
        .unwrap()
        .classify(|code| match code {
            GrpcCode::NotFound => Outcome::Failure,
            GrpcCode::Unavailable => Outcome::Ignored,
            _ => Outcome::Success,
        });
    let svc = layer.layer(service_fn(answer(200, Some(5))));
    svc.oneshot(request()).await.unwrap();
    assert_eq!(figures(&hardening).0, 3, "NOT_FOUND is a failure here");
    let svc = layer.layer(service_fn(answer(200, Some(14))));
    svc.oneshot(request()).await.unwrap();
    assert_eq!(
        figures(&hardening),
        (3, 2, 1.0),
        "UNAVAILABLE is ignored here"
    );
}
