//! The HTTP surface over real sockets on 127.0.0.1: a hardened axum route
//! whose backend fails, the probes, `/metrics`, and hostile requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{HardeningHandle, SystemHardening};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn get_text(client: &HttpClient, url: String) -> (StatusCode, Option<String>, String) {
    let response = client
        .request(http::Request::get(url).body(Empty::new()).unwrap())
        .await
        .expect("the server answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn hardened_app(failing: Arc<AtomicBool>) -> (SocketAddr, HardeningHandle) {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        performance_check_interval = "200ms"
        [services.model-inference]
        criticality = "critical"
        readiness = true
        [services.model-inference.breaker]
        sliding_window = { count = 10 }
        minimum_calls = 10
        wait_in_open = "2s"
        max_wait_in_open = "2s"
        half_open_permits = 2
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .service("model-inference", NoOp)
        .build()
        .unwrap();
    let layer = hardening
        .http_layer("model-inference")
        .unwrap()
        .map_body(Body::new);
    let handle = hardening.start();
    let app = Router::new()
        .route(
            "/infer",
            get(move || {
                let failing = failing.clone();
                async move {
                    if failing.load(Ordering::SeqCst) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "model crashed")
                    } else {
                        (StatusCode::OK, "a cat")
                    }
                }
            })
            .layer(layer),
        )
        .nest_service("/hardening", handle.endpoints());
    (serve(app).await, handle)
}

/// Polls `url` until it answers `status` (the monitor re-derives health
/// on each breaker transition, a moment after it), for at most 5 s.
async fn wait_for_health(client: &HttpClient, url: &str, status: StatusCode) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if get_text(client, url.to_owned()).await.0 == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// 1. A real client sees 200s, then 503s with Retry-After once the breaker
// opens, then 200s after recovery; readiness follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_the_breaker_open_and_close() {
    let failing = Arc::new(AtomicBool::new(false));
    let (address, handle) = hardened_app(failing.clone()).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = |path: &str| format!("http://{address}{path}");

    for _ in 0..5 {
        assert_eq!(get_text(&client, url("/infer")).await.0, StatusCode::OK);
    }
    assert_eq!(
        get_text(&client, url("/hardening/health/ready")).await.0,
        StatusCode::OK
    );

    failing.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let (status, retry_after, body) = get_text(&client, url("/infer")).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(retry_after.as_deref(), Some("2"), "2 s, rounded up");
            assert!(
                body.contains("circuit breaker `model-inference` is open"),
                "{body}"
            );
        }
        statuses.push(status.as_u16());
    }
    assert!(statuses.contains(&500), "{statuses:?}");
    let first_503 = statuses
        .iter()
        .position(|&s| s == 503)
        .expect("the breaker opened");
    assert!(
        statuses[first_503..].iter().all(|&s| s == 503),
        "{statuses:?}"
    );
    // Readiness reads the breaker live; health waits for the monitor.
    let (status, _, body) = get_text(&client, url("/hardening/health/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("service `model-inference` (readiness = true)"),
        "{body}"
    );
    wait_for_health(
        &client,
        &url("/hardening/health"),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;

    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for _ in 0..5 {
        assert_eq!(get_text(&client, url("/infer")).await.0, StatusCode::OK);
    }
    wait_for_health(&client, &url("/hardening/health"), StatusCode::OK).await;
    assert_eq!(
        get_text(&client, url("/hardening/health/ready")).await.0,
        StatusCode::OK
    );
    handle.shutdown().await;
    assert_eq!(
        get_text(&client, url("/hardening/health/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get_text(&client, url("/hardening/health/live")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

// 3. `/metrics` parses as Prometheus text and holds the request, breaker,
// pool, retry, recovery and process figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let failing = Arc::new(AtomicBool::new(false));
    let (address, handle) = hardened_app(failing).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..3 {
        get_text(&client, format!("http://{address}/infer")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, text) = get_text(&client, format!("http://{address}/hardening/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "hardening_requests_total",
        "hardening_request_duration_seconds",
        "hardening_circuit_state",
        "hardening_circuit_transitions_total",
        "hardening_pool_units",
        "hardening_retries_total",
        "hardening_recovery_attempts_total",
        "hardening_process_cpu_percent",
        "hardening_process_resident_memory_bytes",
        "hardening_event_loop_latency_seconds",
        "hardening_runtime_alive_tasks",
        "hardening_service_health",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "{expected} missing from {names:?}"
        );
    }
    // Every name the library emits is in `names::ALL` (histograms render
    // with `_sum` / `_count` and quantile samples).
    for name in &names {
        let base = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            tower_hardening::core::names::ALL.contains(&base),
            "{name} is not in names::ALL"
        );
    }
    let ok = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "hardening_requests_total"
                && s.labels.get("service") == Some("model-inference")
                && s.labels.get("outcome") == Some("success")
        })
        .expect("the requests counter");
    assert!(
        matches!(ok.value, prometheus_parse::Value::Counter(v) if v == 3.0),
        "{ok:?}"
    );
    handle.shutdown().await;
}

/// Sends raw bytes and returns the status code the server answers with
/// (0 if it closed without one).
async fn raw(address: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

// 6. Garbage to the endpoints: 4xx answers, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_client_errors() {
    let handle = SystemHardening::builder(SystemHardeningConfig::default())
        .build()
        .unwrap()
        .start();
    let app = Router::new().nest_service("/hardening", handle.endpoints());
    let address = serve(app).await;
    let huge = format!(
        "GET /hardening/health HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(600_000)
    );
    let many_headers = format!(
        "GET /hardening/metrics HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(Vec<u8>, &[u16])> = vec![
        (huge.into_bytes(), &[431, 400, 0]),
        (many_headers.into_bytes(), &[431, 400, 0]),
        (b"GET /hardening/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[404]),
        (b"GET /hardening/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[404]),
        (b"POST /hardening/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(), &[405]),
        (b"DELETE /hardening/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[405]),
        (b"PUT /hardening/dashboard HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n".to_vec(), &[405]),
        (b"GET /hardening/health?%%%%&&==\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[400, 200]),
        (b"GET /hardening/health/ready?verbose=1&x=%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[200]),
        (b"BREW /hardening/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[405]),
        (b"GET /hardening/health HTTP/9.9\r\n\r\n".to_vec(), &[400, 505, 0]),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), &[400, 0]),
        (b"GET /hardening/dashboard/data/../../health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), &[404]),
    ];
    assert!(cases.len() >= 10);
    for (request, allowed) in &cases {
        let status = raw(address, request).await;
        assert!(
            allowed.contains(&status),
            "{:?}: got {status}, expected one of {allowed:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
    }
    // A slow client: the request trickles in a byte at a time.
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    for byte in b"GET /hardening/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 404"));
    // Still serving after all of it.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (status, _, body) = get_text(&client, format!("http://{address}/hardening/health")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with('{'));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_one_self_contained_page() {
    let handle = SystemHardening::builder(SystemHardeningConfig::default())
        .build()
        .unwrap()
        .start();
    let app = Router::new().nest_service("/hardening", handle.endpoints());
    let address = serve(app).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (status, _, page) =
        get_text(&client, format!("http://{address}/hardening/dashboard")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<svg") || page.contains("spark("));
    for outside in ["http://", "https://", "//cdn", "@import", "<link"] {
        assert!(
            !page.contains(outside),
            "the page fetches something: {outside}"
        );
    }
    let (status, _, data) = get_text(
        &client,
        format!("http://{address}/hardening/dashboard/data"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert!(data["services"].is_array() && data["process"].is_object());
    handle.shutdown().await;
}

/// Every snapshot serializes with stable snake_case names, durations in
/// seconds.
#[tokio::test(start_paused = true)]
async fn snapshots_serialize() {
    let hardening = SystemHardening::builder(SystemHardeningConfig::default())
        .service("audio", NoOp)
        .build()
        .unwrap();
    let _layer = hardening.layer("audio").unwrap();
    let handle = hardening.start();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let breaker = handle.breaker("audio").unwrap();
    breaker.force_open();
    let json = |value: serde_json::Value| value;
    let snapshot = json(serde_json::to_value(breaker.snapshot()).unwrap());
    assert_eq!(snapshot["state"], "forced_open");
    assert!(snapshot.get("failure_rate").is_some() && snapshot.get("until_probe").is_some());
    let stats =
        json(serde_json::to_value(handle.resource_stats().pools["memory"].stats.clone()).unwrap());
    assert!(stats["capacity"].as_u64().unwrap() > 0);
    let health = json(serde_json::to_value(&*handle.health()).unwrap());
    assert_eq!(health["services"]["audio"]["critical"], false);
    let performance =
        json(serde_json::to_value(&*handle.performance().expect("measured")).unwrap());
    assert!(performance["event_loop"]["p99"].is_number());
    let mut events = handle.subscribe();
    breaker.reset();
    let event = json(serde_json::to_value(events.recv().await.unwrap()).unwrap());
    assert_eq!(event["service"], "audio");
    assert_eq!(event["kind"]["circuit_transition"]["from"], "forced_open");
    handle.shutdown().await;
}

struct NoOp;

impl tower_hardening::ManagedService for NoOp {
    fn initialize(
        &self,
    ) -> tower_hardening::managed::BoxFuture<'_, Result<(), tower_hardening::BoxError>> {
        Box::pin(async { Ok(()) })
    }
}
