//! Rate limits and fallbacks through the facade, over real sockets: a
//! burst from one client refused with 429 while another is served, a
//! client spraying keys, gRPC's RESOURCE_EXHAUSTED, and a fallback
//! answering while the breaker is open.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tower::ServiceBuilder;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::names;
use tower_hardening::{HardeningHandle, SystemHardening};

/// Serves `app` behind `service`'s HTTP stack on 127.0.0.1, with the
/// peer's address in each request (axum's `ConnectInfo`).
async fn serve(hardening: &SystemHardening, service: &str) -> SocketAddr {
    let layer = hardening
        .http_layer(service)
        .unwrap()
        .map_body(axum::body::Body::new);
    serve_layer(layer).await
}

async fn serve_layer<L>(layer: L) -> SocketAddr
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<http::Request<axum::body::Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<http::Request<axum::body::Body>>>::Response:
        axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<http::Request<axum::body::Body>>>::Future: Send + 'static,
{
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(ServiceBuilder::new().layer(layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    address
}

/// One GET from the source address `from` (any 127.x.y.z is loopback).
async fn get(
    to: SocketAddr,
    from: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get("/").header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn outcomes(handle: &HardeningHandle, service: &str, outcome: &str) -> f64 {
    handle
        .metrics()
        .query(names::REQUESTS_TOTAL)
        .label(names::LABEL_SERVICE, service)
        .label(names::LABEL_OUTCOME, outcome)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_client_is_refused_429_while_another_is_served() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api.rate_limit]
        rate = "10/m"
        burst = 3
        key = "peer-ip"
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let handle = hardening.handle();
    let address = serve(&hardening, "api").await;

    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..5 {
        let (status, headers, _) = get(address, "127.0.0.1", &[]).await;
        statuses.push(status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(headers);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let headers = refused.unwrap();
    // One request every 6 s comes back: the limiter's own wait, rounded up.
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((5..=6).contains(&retry_after), "{headers:?}");
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=10;w=60");
    assert_eq!(
        headers["ratelimit"],
        format!("\"default\";r=0;t={retry_after}").as_str()
    );
    assert_eq!(headers["x-hardening-refusal"], "rate-limited");

    // Another client (another source address) has its own quota.
    let (status, _, body) = get(address, "127.0.0.2", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));

    // Refusals are `rejected`, never the breaker's failures.
    assert_eq!(outcomes(&handle, "api", "rejected"), 2.0);
    assert_eq!(outcomes(&handle, "api", "success"), 4.0);
    assert_eq!(handle.breaker("api").unwrap().snapshot().failures, 0);
    let limiter = handle.rate_limit("api").unwrap();
    assert_eq!(limiter.stats().limited, 2);
    assert_eq!(limiter.stats().keys, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_spraying_keys_costs_the_others_nothing() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api.rate_limit]
        rate = "2/m"
        burst = 2
        key = "header:x-api-key"
        max_keys = 50
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let address = serve(&hardening, "api").await;
    let limiter = hardening.http_layer("api").unwrap().rate_limit().unwrap();

    // A polite client, one request of its two.
    assert_eq!(
        get(address, "127.0.0.1", &[("x-api-key", "polite")])
            .await
            .0,
        200
    );
    // A limited client, over its quota.
    for _ in 0..2 {
        assert_eq!(
            get(address, "127.0.0.1", &[("x-api-key", "greedy")])
                .await
                .0,
            200
        );
    }
    assert_eq!(
        get(address, "127.0.0.1", &[("x-api-key", "greedy")])
            .await
            .0,
        429
    );

    // A fresh key per request, ten times the bound; and absurd values.
    let mut served = 0;
    for i in 0..500 {
        let key = format!("spray-{i}");
        if get(address, "127.0.0.3", &[("x-api-key", &key)]).await.0 == 200 {
            served += 1;
        }
    }
    let huge = "k".repeat(8 * 1024);
    for _ in 0..3 {
        get(address, "127.0.0.3", &[("x-api-key", &huge)]).await;
    }
    let stats = limiter.stats();
    assert!(stats.keys <= 50, "memory stays bounded: {stats:?}");
    // The free cells, then one shared bucket: one client's quota.
    assert!(served <= 50 - 2 + 2, "served {served}");
    assert!(stats.overflowed > 400, "{stats:?}");
    assert_eq!(stats.missing_key, 3, "an absurd value is no key: {stats:?}");

    // Nobody lost their state: the polite client has its second request,
    // the greedy one is still refused (an eviction would have reset it).
    assert_eq!(
        get(address, "127.0.0.1", &[("x-api-key", "polite")])
            .await
            .0,
        200
    );
    assert_eq!(
        get(address, "127.0.0.1", &[("x-api-key", "greedy")])
            .await
            .0,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_answers_while_the_breaker_is_open() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api]
        [services.api.fallback]
        on = ["circuit_open"]
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let handle = hardening.handle();
    let layer = hardening
        .http_layer("api")
        .unwrap()
        .map_body(axum::body::Body::new)
        .fallback(|cause| {
            let mut response = http::Response::new(Full::new(Bytes::from(format!(
                "cached ({:?})",
                cause.case()
            ))));
            response
                .headers_mut()
                .insert("x-served-by", http::HeaderValue::from_static("fallback"));
            response
        });
    let address = serve_layer(layer.clone()).await;

    let (status, _, body) = get(address, "127.0.0.1", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));

    handle.force_open("api").unwrap();
    let (status, headers, body) = get(address, "127.0.0.1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "cached (CircuitOpen)");
    assert_eq!(headers["x-served-by"], "fallback");
    assert!(headers.get("x-hardening-refusal").is_none());

    assert_eq!(outcomes(&handle, "api", "fallback"), 1.0);
    assert_eq!(outcomes(&handle, "api", "rejected"), 0.0);
    assert_eq!(outcomes(&handle, "api", "success"), 1.0);
    assert_eq!(layer.fallback_stats().answered, 1);
    assert_eq!(handle.fallback_stats("api").unwrap().answered, 1);
    assert!(
        handle
            .metrics()
            .render_prometheus()
            .contains("outcome=\"fallback\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rate_limits_are_resource_exhausted() {
    use tonic::Code;
    use tonic::transport::{Channel, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.health.rate_limit]
        rate = "2/m"
        key = "peer-ip"
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let grpc = hardening
        .grpc_layer("health")
        .unwrap()
        .map_body(tonic::body::Body::new);
    let limiter = grpc.rate_limit().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(s, _)| s), listener))
    });
    tokio::spawn(
        Server::builder()
            .layer(ServiceBuilder::new().layer(grpc))
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..2 {
        client.check(check()).await.expect("within the quota");
    }
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("rate limited"),
        "{}",
        status.message()
    );
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29_000..=30_000).contains(&pushback), "{pushback}");
    // Keyed by the connection's peer (tonic's `TcpConnectInfo`), not one
    // bucket for every request without a key.
    assert_eq!(limiter.stats().missing_key, 0);
    assert_eq!(limiter.stats().keys, 1);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_limit_needs_an_http_stack_and_says_so() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api.rate_limit]
        rate = "100/s"
        key = "peer-ip"
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let err = hardening.layer("api").unwrap_err().to_string();
    assert!(err.contains("services.api.rate_limit.key"), "{err}");
    assert!(hardening.http_layer("api").is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_plain_stack_limits_globally_and_critical_passes() {
    use tower::{Layer, Service, ServiceExt, service_fn};
    use tower_hardening::core::{RejectionKind, rejection_of};

    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api.rate_limit]
        rate = "1/h"
        [services.critical]
        criticality = "critical"
        [services.critical.rate_limit]
        rate = "1/h"
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let inner = service_fn(|x: u32| async move { Ok::<_, tower_hardening::BoxError>(x) });
    let mut api = hardening.layer("api").unwrap().layer(inner);
    api.ready().await.unwrap().call(1).await.unwrap();
    let err = api.ready().await.unwrap().call(2).await.unwrap_err();
    let rejection = rejection_of(&*err).unwrap();
    assert_eq!(rejection.kind, RejectionKind::RateLimited);
    assert!(rejection.retry_after.unwrap() > Duration::from_secs(3500));
    // A refusal is never retried nor a breaker failure.
    assert_eq!(
        hardening
            .handle()
            .breaker("api")
            .unwrap()
            .snapshot()
            .failures,
        0
    );

    let mut critical = hardening.layer("critical").unwrap().layer(inner);
    for i in 0..10 {
        critical.ready().await.unwrap().call(i).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_answers_a_failure_after_the_retries_and_stacks_with_one_spawn() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::{Layer, Service, ServiceExt, service_fn};
    use tower_hardening::BoxError;
    use tower_hardening::recovery::Cause;

    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api.retry]
        max_attempts = 3
        initial_backoff = "10ms"
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let handle = hardening.handle();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let failing = service_fn(move |_: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<String, BoxError>("upstream down".into()) }
    });
    // Whichever comes first: the fallback or dropping the retries' bound.
    let _ = hardening
        .layer("api")
        .unwrap()
        .fallback(|_: Cause| 0u8)
        .without_retries();
    let layer = hardening
        .layer("api")
        .unwrap()
        .fallback(|cause: Cause| format!("default ({:?})", cause.case()));
    let svc = layer.layer(failing);
    // Spawned: the stack with a fallback is `Send`.
    let answer = tokio::spawn(svc.oneshot(1)).await.unwrap().unwrap();
    assert_eq!(answer, "default (Failure)");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "every retry first");
    assert_eq!(outcomes(&handle, "api", "fallback"), 1.0);
    assert_eq!(outcomes(&handle, "api", "failure"), 0.0);

    // A fallback that panics answers nothing: the original error.
    let panicking = hardening
        .layer("api")
        .unwrap()
        .fallback(|_: Cause| -> String { panic!("no cache either") });
    let mut svc = panicking.layer(service_fn(|_: u32| async {
        Err::<String, std::io::Error>(std::io::Error::other("upstream down"))
    }));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "upstream down");
    assert_eq!(outcomes(&handle, "api", "failure"), 1.0);
    assert_eq!(panicking.fallback_stats().failed, 1);

    // And over an infallible service the fallback is never asked.
    let mut svc = hardening
        .layer("api")
        .unwrap()
        .fallback(|_: Cause| 0u32)
        .layer(service_fn(|x: u32| async move {
            Ok::<_, std::convert::Infallible>(x)
        }));
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
}

#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment's Jail decides the closure's error type"
)]
fn rate_limits_come_from_the_environment_too() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("HARDENING_SERVICES__API__RATE_LIMIT__RATE", "100/s");
        jail.set_env("HARDENING_SERVICES__API__RATE_LIMIT__BURST", "20");
        jail.set_env(
            "HARDENING_SERVICES__API__RATE_LIMIT__KEY",
            "header:x-api-key",
        );
        jail.set_env(
            "HARDENING_SERVICES__API__FALLBACK__ON",
            "[\"circuit_open\"]",
        );
        let config = SystemHardeningConfig::from_env("HARDENING").unwrap();
        let service = config.service("api");
        assert_eq!(service.rate_limit.rate.as_deref(), Some("100/s"));
        assert_eq!(service.rate_limit.burst, Some(20));
        assert_eq!(service.rate_limit.key, "header:x-api-key");
        assert_eq!(service.fallback.on, ["circuit_open"]);

        jail.set_env("HARDENING_SERVICES__API__RATE_LIMIT__RATE", "0/s");
        let err = SystemHardeningConfig::from_env("HARDENING").unwrap_err();
        assert_eq!(
            err.field(),
            "HARDENING_SERVICES__API__RATE_LIMIT__RATE",
            "{err}"
        );
        Ok(())
    });
}
