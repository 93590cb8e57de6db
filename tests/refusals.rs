//! A refusal a client can recognise: what the stack answers itself names
//! the rejection (in the response's extensions and in a header); an
//! upstream's own 503 carries neither.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{
    BoxError, CircuitOpen, Overloaded, PoolClosed, QueueTimeout, Recovering, RecoveryFailed,
    Rejection, RejectionKind, Unsatisfiable,
};
use tower_hardening::limit::Acquire;
use tower_hardening::responses::REFUSAL_HEADER;
use tower_hardening::{SystemHardening, error_response, grpc_error_response};

const CONFIG: &str = r#"
[services.api.limit]
max_concurrency = 1
max_queue = 0
[services.queued.limit]
max_concurrency = 1
max_queue = 1
queue_timeout = "100ms"
[services.rpc]
"#;

async fn call<S, B>(svc: &mut S) -> Response<B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>,
{
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(Full::default()))
        .await
        .unwrap()
}

type Upstream = http::Request<tower_hardening::recovery::ReplayBody<Full<Bytes>>>;
type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// An upstream that answers 503 itself.
fn upstream_503() -> tower::util::ServiceFn<impl Fn(Upstream) -> Answer + Clone> {
    service_fn(|_: Upstream| {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        std::future::ready(Ok(response))
    })
}

fn assert_refusal<B>(response: &Response<B>, kind: RejectionKind, header: &str) {
    assert_eq!(
        response.extensions().get::<Rejection>().map(|r| r.kind),
        Some(kind),
        "{:?}",
        response.headers()
    );
    assert_eq!(
        response.headers()[REFUSAL_HEADER],
        header,
        "{:?}",
        response.headers()
    );
}

#[tokio::test(start_paused = true)]
async fn every_refusal_of_the_stack_names_itself_and_an_upstream_503_does_not() {
    let config = SystemHardeningConfig::from_toml_str(CONFIG).unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();

    // The upstream's own 503: neither extension nor header.
    let api = hardening.http_layer("api").unwrap();
    let mut svc = api.layer(upstream_503());
    let response = call(&mut svc).await;
    assert_eq!(response.status(), 503);
    assert!(response.extensions().get::<Rejection>().is_none());
    assert!(response.headers().get(REFUSAL_HEADER).is_none());

    // Shed: the only slot is held, and nothing may wait.
    let hog = api.pool().acquire(Acquire::new("hog")).await.unwrap();
    let response = call(&mut svc).await;
    assert_eq!(response.status(), 503);
    assert_refusal(&response, RejectionKind::Overloaded, "overloaded");
    drop(hog);

    // Breaker open.
    api.breaker().force_open();
    let response = call(&mut svc).await;
    assert_eq!(response.status(), 503);
    assert_refusal(&response, RejectionKind::CircuitOpen, "circuit-open");
    let rejection = response.extensions().get::<Rejection>().unwrap();
    assert!(rejection.retry_after.is_some());
    api.breaker().reset();

    // Pool shut down.
    api.pool().shutdown();
    let response = call(&mut svc).await;
    assert_refusal(&response, RejectionKind::PoolClosed, "pool-closed");

    // Queue timeout.
    let queued = hardening.http_layer("queued").unwrap();
    let mut svc = queued.layer(upstream_503());
    let hog = queued.pool().acquire(Acquire::new("hog")).await.unwrap();
    let response = call(&mut svc).await;
    assert_eq!(response.status(), 504);
    assert_refusal(&response, RejectionKind::QueueTimeout, "queue-timeout");
    drop(hog);

    // gRPC: the same header, as metadata of the trailers-only answer.
    let rpc = hardening.grpc_layer("rpc").unwrap();
    let mut svc = rpc.layer(upstream_503());
    rpc.breaker().force_open();
    let response = call(&mut svc).await;
    assert_eq!(response.headers()["grpc-status"], "14");
    assert!(response.headers().contains_key("grpc-retry-pushback-ms"));
    assert_refusal(&response, RejectionKind::CircuitOpen, "circuit-open");
}

#[test]
fn every_rejection_kind_is_named_over_http_and_grpc() {
    let after = Duration::from_secs(2);
    let cases: Vec<(BoxError, RejectionKind, &str)> = vec![
        (
            CircuitOpen::new("a").with_retry_after(after).into(),
            RejectionKind::CircuitOpen,
            "circuit-open",
        ),
        (
            Overloaded::new("a").into(),
            RejectionKind::Overloaded,
            "overloaded",
        ),
        (
            QueueTimeout::new("a", after).into(),
            RejectionKind::QueueTimeout,
            "queue-timeout",
        ),
        (
            Recovering::new("a", 1).into(),
            RejectionKind::Recovering,
            "recovering",
        ),
        (
            RecoveryFailed::new("a", 3, "refused").into(),
            RejectionKind::RecoveryFailed,
            "recovery-failed",
        ),
        (
            PoolClosed::new("a").into(),
            RejectionKind::PoolClosed,
            "pool-closed",
        ),
        (
            Unsatisfiable::new("a", "too big").into(),
            RejectionKind::Unsatisfiable,
            "unsatisfiable",
        ),
    ];
    for (error, kind, name) in cases {
        for response in [error_response(&error), grpc_error_response(&error)] {
            assert_eq!(
                response.extensions().get::<Rejection>().map(|r| r.kind),
                Some(kind),
                "{error}"
            );
            assert_eq!(response.headers()[REFUSAL_HEADER], name, "{error}");
        }
    }
    // Not a refusal: the service's own failure or timeout.
    let failure: BoxError = "boom".into();
    for response in [error_response(&failure), grpc_error_response(&failure)] {
        assert!(response.extensions().get::<Rejection>().is_none());
        assert!(response.headers().get(REFUSAL_HEADER).is_none());
    }
}
