//! Only the stack names its own refusals: an upstream's
//! `x-hardening-refusal` header (HTTP) or metadata (gRPC head) is removed
//! from the responses the stack did not answer itself, so no client or
//! proxy is told the stack refused a call it served. (It was passed on.)

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::responses::REFUSAL_HEADER;

type Upstream = http::Request<tower_hardening::recovery::ReplayBody<Full<Bytes>>>;
type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn forging(status: u16, grpc: Option<&'static str>) -> impl Fn(Upstream) -> Answer + Clone {
    move |_| {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
            .headers_mut()
            .insert(REFUSAL_HEADER, "circuit-open".parse().unwrap());
        if let Some(code) = grpc {
            response
                .headers_mut()
                .insert("grpc-status", code.parse().unwrap());
        }
        std::future::ready(Ok(response))
    }
}

fn hardening() -> SystemHardening {
    let config = SystemHardeningConfig::from_toml_str("[services.api]\n").unwrap();
    SystemHardening::builder(config).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_upstreams_refusal_header_is_removed_over_http() {
    let hardening = hardening();
    let layer = hardening.http_layer("api").unwrap();
    for status in [200u16, 503] {
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            layer
                .layer(service_fn(forging(status, None)))
                .oneshot(Request::new(Full::default())),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            hardening.handle().breaker("api").unwrap().state(),
            tower_hardening::core::CircuitState::Closed
        );
        // The stack did not refuse: the client must not be told it did.
        assert!(
            response.headers().get(REFUSAL_HEADER).is_none(),
            "upstream's {status} went out marked as the stack's refusal: {:?}",
            response.headers()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_upstreams_refusal_metadata_is_removed_over_grpc() {
    let hardening = hardening();
    let layer = hardening.grpc_layer("api").unwrap();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        layer
            .layer(service_fn(forging(200, Some("14"))))
            .oneshot(Request::new(Full::default())),
    )
    .await
    .unwrap()
    .unwrap();
    let forged = response.headers().get(REFUSAL_HEADER).cloned();
    let _ = response.into_body().collect().await;
    assert!(
        forged.is_none(),
        "an upstream's own UNAVAILABLE went out marked as the stack's refusal"
    );
}
