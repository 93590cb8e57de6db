//! A hostile client against `http_layer` and `grpc_layer` over real
//! sockets on 127.0.0.1: bodies never sent, trickled, cut off or too
//! large; probes that stall; headers a client forges. After each, every
//! admission slot and breaker permit is back, the breaker is where it
//! should be, and the client got the right status and metrics outcome.
//!
//! Real sockets need real time: every deadline here is a few hundred
//! milliseconds, so the suite runs in seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing::{get, post};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::CircuitState;
use tower_hardening::{HardeningHandle, SystemHardening};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const SERVICE: &str = "api";

struct App {
    address: SocketAddr,
    handle: HardeningHandle,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    pool: tower_hardening::limit::ResourcePool,
}

impl App {
    fn in_use(&self) -> u64 {
        self.pool.stats().in_use
    }

    fn outcome(&self, outcome: &str) -> f64 {
        self.handle
            .metrics()
            .query("hardening_requests_total")
            .label("service", SERVICE)
            .label("outcome", outcome)
            .sum()
    }

    fn breaker(&self) -> tower_hardening::breaker::BreakerSnapshot {
        self.handle.breaker(SERVICE).unwrap().snapshot()
    }

    /// Every slot and probe permit back.
    async fn assert_all_back(&self) {
        for _ in 0..100 {
            if self.in_use() == 0 && self.breaker().probes_in_flight == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "held: {} slots, {} probes",
            self.in_use(),
            self.breaker().probes_in_flight
        );
    }
}

/// An axum app under `http_layer(SERVICE)` configured by `section` (the
/// `[services.api]` table's contents).
async fn start_app(section: &str) -> App {
    let section = section.replace("\n[", &format!("\n[services.{SERVICE}."));
    let config =
        SystemHardeningConfig::from_toml_str(&format!("[services.{SERVICE}]\n{section}")).unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening.http_layer(SERVICE).unwrap().map_body(Body::new);
    let pool = layer.pool().clone();
    let handle = hardening.start();
    let failing = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f1, c1, c2) = (failing.clone(), calls.clone(), calls.clone());
    let router = Router::new()
        .route(
            "/echo",
            get(move |body: Bytes| {
                let failing = f1.clone();
                async move {
                    if failing.load(Ordering::SeqCst) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned())
                    } else {
                        (StatusCode::OK, format!("{} bytes", body.len()))
                    }
                }
            })
            .post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
        )
        .route(
            "/charge",
            post(move || {
                c1.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::SERVICE_UNAVAILABLE, "card processor down") }
            }),
        )
        .route(
            "/count",
            get(move || {
                c2.fetch_add(1, Ordering::SeqCst);
                async { "counted" }
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    App {
        address,
        handle,
        failing,
        calls,
        pool,
    }
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn polite_get(app: &App, path: &str) -> (StatusCode, Option<String>, String) {
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client().request(
            http::Request::get(format!("http://{}{path}", app.address))
                .body(Empty::new())
                .unwrap(),
        ),
    )
    .await
    .expect("answered within 5s")
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

/// Opens a raw connection and writes `head` (and nothing more).
async fn raw(app: &App, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The status line's code of what the server answers on `stream`, within
/// `within`; `None` if the connection closed without one.
async fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buffer.extend_from_slice(&chunk[..n]);
                    if buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within {within:?}");
    let text = String::from_utf8_lossy(&buffer);
    text.split_whitespace().nth(1)?.parse().ok()
}

const RETRIES_ON: &str = r#"
body_timeout = "300ms"
upload_timeout = "300ms"
[limit]
max_concurrency = 1
queue_timeout = "2s"
[retry]
max_attempts = 3
initial_backoff = "1ms"
max_backoff = "1ms"
"#;

// 1. A GET that declares a body and never sends it holds no admission
// slot: the next client is served at once, and the idle one gets 408
// after `body_timeout`, counted `ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsent_body_holds_no_admission_slot_and_is_a_408() {
    let app = start_app(RETRIES_ON).await;
    let mut idle = raw(
        &app,
        "GET /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.in_use(), 0, "a dawdling client holds no slot");
    let started = tokio::time::Instant::now();
    assert_eq!(polite_get(&app, "/count").await.0, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(250));

    assert_eq!(
        status_of(&mut idle, Duration::from_secs(2)).await,
        Some(408)
    );
    app.assert_all_back().await;
    assert_eq!(app.outcome("ignored"), 1.0);
    assert_eq!(app.outcome("failure"), 0.0);
    assert_eq!(
        app.breaker().calls,
        1,
        "only the polite GET reached the breaker"
    );
    assert_eq!(app.breaker().state, CircuitState::Closed);
}

// 2. A body cut off mid-way is the client's: nothing reaches the breaker
// and the request counts `ignored`, not `failure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_mid_way_is_the_clients_fault() {
    let app = start_app(RETRIES_ON).await;
    let mut cut = raw(
        &app,
        "GET /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    cut.shutdown().await.unwrap();
    // hyper may answer a half-closed connection or not; if it does, 400.
    let status = status_of(&mut cut, Duration::from_secs(2)).await;
    assert!(matches!(status, None | Some(400)), "{status:?}");
    for _ in 0..100 {
        if app.outcome("ignored") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.assert_all_back().await;
    assert_eq!(app.outcome("ignored"), 1.0);
    assert_eq!(app.outcome("failure"), 0.0);
    assert_eq!(app.breaker().calls, 0);
}

// 2b. An oversized body (more than it declared) is the client's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_replay_allows_is_sent_once_and_served() {
    let app = start_app(RETRIES_ON).await;
    let body = "x".repeat(100 * 1024);
    let mut big = raw(
        &app,
        &format!(
            "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status_of(&mut big, Duration::from_secs(2)).await, Some(200));
    app.assert_all_back().await;
    assert_eq!(app.outcome("success"), 1.0);
}

const TIMEOUT_SET: &str = r#"
timeout = "100ms"
upload_timeout = "2s"
[breaker]
sliding_window = { count = 4 }
minimum_calls = 4
wait_in_open = "30s"
"#;

/// Sends `head`, then the body's 10 bytes one at a time every `gap`.
async fn trickle(address: SocketAddr, head: &str, gap: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(gap).await;
        if stream.write_all(b"x").await.is_err() {
            break;
        }
    }
    status_of(&mut stream, Duration::from_secs(5)).await
}

// 4. Trickled uploads do not open the breaker when `timeout` is set: the
// timeout measures the service from the end of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_uploads_do_not_open_the_breaker_when_a_timeout_is_set() {
    let app = start_app(TIMEOUT_SET).await;
    let head = "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n";
    let uploads =
        (0..4).map(|_| tokio::spawn(trickle(app.address, head, Duration::from_millis(30))));
    for upload in uploads {
        assert_eq!(
            upload.await.unwrap(),
            Some(200),
            "300ms of upload is not the service's"
        );
    }
    assert_eq!(app.breaker().state, CircuitState::Closed);
    assert_eq!(app.breaker().failures, 0);
    assert_eq!(polite_get(&app, "/count").await.0, StatusCode::OK);
    app.assert_all_back().await;
    assert_eq!(app.outcome("failure"), 0.0);
}

// 2c. An upload that stalls past `upload_timeout` is a 408, `ignored`,
// and nothing is charged to the breaker, with or without retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streamed_upload_is_a_408_and_ignored() {
    let app = start_app(
        r#"
timeout = "100ms"
upload_timeout = "300ms"
"#,
    )
    .await;
    let mut stalled = raw(
        &app,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    assert_eq!(
        status_of(&mut stalled, Duration::from_secs(2)).await,
        Some(408)
    );
    app.assert_all_back().await;
    assert_eq!(app.outcome("ignored"), 1.0);
    assert_eq!(app.outcome("failure"), 0.0);
    assert_eq!(app.breaker().failures, 0);
    assert_eq!(
        app.breaker().calls,
        0,
        "an ignored call is not in the window"
    );
}

const HALF_OPEN: &str = r#"
upload_timeout = "10s"
[breaker]
sliding_window = { count = 2 }
minimum_calls = 2
wait_in_open = "100ms"
max_wait_in_open = "100ms"
half_open_permits = 1
probe_timeout = "200ms"
"#;

async fn trip(app: &App) {
    app.failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(
            polite_get(app, "/echo").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(app.breaker().state, CircuitState::Open);
    app.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
}

// 3. A stalled upload that became the half-open probe does not pin the
// breaker half-open: the probe's deadline fails it and frees its permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_probe_does_not_pin_the_breaker_half_open() {
    let app = start_app(HALF_OPEN).await;
    trip(&app).await;
    let _stalled = raw(
        &app,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        app.breaker().probes_in_flight,
        1,
        "the stalled upload is the probe"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _, _) = polite_get(&app, "/echo").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(app.breaker().state, CircuitState::Closed);
}

// 6. A call refused while every probe is out says when to come back and
// names the half-open state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_refusal_has_retry_after_and_says_half_open() {
    let app = start_app(HALF_OPEN).await;
    trip(&app).await;
    let _stalled = raw(
        &app,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.breaker().state, CircuitState::HalfOpen);
    let (status, retry_after, message) = polite_get(&app, "/echo").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "the probe deadline, rounded up"
    );
    assert!(message.contains("half-open"), "{message}");
}

// 7. A client cannot make a POST run three times by adding an
// `Idempotency-Key`: the header is not trusted unless configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_idempotency_key_does_not_make_a_post_retried() {
    let app = start_app(RETRIES_ON).await;
    let mut forged = raw(
        &app,
        "POST /charge HTTP/1.1\r\nhost: x\r\nidempotency-key: 42\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_of(&mut forged, Duration::from_secs(2)).await,
        Some(503)
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 1, "run once");
    app.assert_all_back().await;

    // Trusted by configuration: retried.
    let trusting = start_app(&format!("{RETRIES_ON}trust_idempotency_key = true\n")).await;
    let mut keyed = raw(
        &trusting,
        "POST /charge HTTP/1.1\r\nhost: x\r\nidempotency-key: 42\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_of(&mut keyed, Duration::from_secs(2)).await,
        Some(503)
    );
    assert_eq!(trusting.calls.load(Ordering::SeqCst), 3);
}

// Pipelined requests, then an abandoned one: every slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_abandoned_requests_give_every_slot_back() {
    let app = start_app(RETRIES_ON).await;
    let mut pipelined = raw(
        &app,
        "GET /count HTTP/1.1\r\nhost: x\r\n\r\nGET /count HTTP/1.1\r\nhost: x\r\n\r\nGET /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    assert_eq!(
        status_of(&mut pipelined, Duration::from_secs(2)).await,
        Some(200)
    );
    drop(pipelined);
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.assert_all_back().await;
    assert_eq!(app.outcome("failure"), 0.0);
    assert_eq!(app.breaker().state, CircuitState::Closed);
    assert_eq!(polite_get(&app, "/count").await.0, StatusCode::OK);
}

// A forged priority header changes nothing: the request is served at the
// service's priority and the header is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_priority_header_is_not_read() {
    let app = start_app(RETRIES_ON).await;
    let mut forged = raw(
        &app,
        "GET /count HTTP/1.1\r\nhost: x\r\nx-priority: critical\r\npriority: u=0\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_of(&mut forged, Duration::from_secs(2)).await,
        Some(200)
    );
    app.assert_all_back().await;
}
