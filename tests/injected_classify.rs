//! An injected fault status is classified as that status would be by the
//! service's own classifier (breaker, retries and metrics alike).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::names;

type Request = http::Request<tower_hardening::recovery::ReplayBody<Full<Bytes>>>;
type Answer = std::future::Ready<Result<http::Response<Full<Bytes>>, Infallible>>;

fn answer(status: u16) -> impl Fn(Request) -> Answer + Clone {
    move |_| {
        let mut response = http::Response::new(Full::<Bytes>::default());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    }
}

fn request() -> http::Request<Full<Bytes>> {
    http::Request::get("/").body(Full::default()).unwrap()
}

/// (breaker failures, retries, metrics `ignored`)
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

/// The service says `http_ignored = [502]`: an injected 502, there to
/// rehearse an upstream's 502, is ignored as the real one is (0 breaker
/// failures, 0 retries, 1 ignored). It used to be charged as a failure
/// and retried: a chaos drill of a harmless 502 opened the breaker.
#[tokio::test(start_paused = true)]
async fn an_injected_status_is_classified_as_that_status() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
[services.api.retry]
[services.api.classify]
http_ignored = [502]
[services.api.fault]
status_rate = 1.0
status = 502
"#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening.http_layer("api").unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        layer.layer(service_fn(answer(200))).oneshot(request()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        figures(&hardening),
        (0, 0, 1.0),
        "breaker failures, retries, ignored: an injected 502 must be judged like an upstream 502"
    );
}

/// Same with `http_failures = []` (nothing is a failure): an injected
/// 503 still counts as a breaker failure.
#[tokio::test(start_paused = true)]
async fn an_injected_status_is_no_failure_when_nothing_fails() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
[services.api.classify]
http_failures = []
[services.api.fault]
status_rate = 1.0
"#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening.http_layer("api").unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        layer.layer(service_fn(answer(200))).oneshot(request()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        hardening
            .handle()
            .breaker("api")
            .unwrap()
            .snapshot()
            .failures,
        0,
        "http_failures = [] means no status is a failure, injected or not"
    );
}
