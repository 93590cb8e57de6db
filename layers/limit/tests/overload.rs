//! Overload on loopback: an axum service behind `ResourceLimitLayer`,
//! offered four times its capacity by closed-loop clients, half HIGH and
//! half LOW. HIGH requests must succeed (>= 99%) while LOW ones are shed
//! or time out. HIGH's p99 latency under this overload and unloaded is
//! printed, not asserted (run with `--nocapture`; the figures are in
//! BENCHMARKS.md).
//!
//! Bounded: 16 clients for 3 s, at most 200 requests each, 127.0.0.1 only.
//! Every client runs for the whole period, so the overload lasts the whole
//! run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tower::ServiceBuilder;
use tower_hardening_core::{BoxError, Overloaded, QueueTimeout};
use tower_hardening_limit::{HeaderPriority, ResourceLimitLayer, ResourcePool};

const CAPACITY: u64 = 4;
const HANDLER: Duration = Duration::from_millis(50);
const CLIENTS_PER_PRIORITY: usize = 8; // 16 in all: 4x the capacity
const MAX_REQUESTS_PER_CLIENT: usize = 200;
const RUN_FOR: Duration = Duration::from_secs(3);

async fn on_error(err: BoxError) -> StatusCode {
    if err.is::<Overloaded>() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if err.is::<QueueTimeout>() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

async fn serve() -> (std::net::SocketAddr, ResourcePool) {
    let pool = ResourcePool::builder("handlers")
        .capacity(CAPACITY)
        .max_queue(1_000)
        .queue_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/work",
            get(|| async {
                tokio::time::sleep(HANDLER).await;
                "done"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(on_error))
                .layer(
                    ResourceLimitLayer::new(pool.clone())
                        .priority(HeaderPriority::new("x-priority")),
                ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, pool)
}

/// One HTTP/1.1 request on a fresh connection; the status code.
async fn get_status(addr: std::net::SocketAddr, priority: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /work HTTP/1.1\r\nhost: 127.0.0.1\r\nx-priority: {priority}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response);
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_survives_four_times_overload() {
    let (addr, pool) = serve().await;

    // Unloaded: HIGH requests one at a time.
    let mut unloaded = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        assert_eq!(get_status(addr, "high").await, 200);
        unloaded.push(start.elapsed());
    }

    let results = Arc::new(Mutex::new((Vec::new(), 0usize, 0usize, 0usize)));
    let mut clients = Vec::new();
    let deadline = Instant::now() + RUN_FOR;
    for client in 0..2 * CLIENTS_PER_PRIORITY {
        let priority = if client % 2 == 0 { "high" } else { "low" };
        let results = results.clone();
        clients.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if Instant::now() >= deadline {
                    break;
                }
                let start = Instant::now();
                let status = get_status(addr, priority).await;
                mine.push((status, start.elapsed()));
            }
            let mut results = results.lock().await;
            for (status, latency) in mine {
                if priority == "high" {
                    results.0.push((status, latency));
                } else if status == 200 {
                    results.1 += 1;
                } else if status == 503 || status == 504 {
                    results.2 += 1;
                } else {
                    results.3 += 1;
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let (high, low_ok, low_refused, low_other) = {
        let results = results.lock().await;
        (results.0.clone(), results.1, results.2, results.3)
    };
    let high_ok = high.iter().filter(|(status, _)| *status == 200).count();
    let high_total = high.len();
    assert!(
        high_total >= 100,
        "enough HIGH requests to judge: {high_total}"
    );
    assert!(
        high_ok * 100 >= high_total * 99,
        "HIGH succeeded {high_ok} of {high_total}"
    );
    assert_eq!(
        low_other, 0,
        "LOW requests either succeed, are shed or time out"
    );
    assert!(
        low_refused > low_ok,
        "LOW is mostly turned away: {low_ok} ok, {low_refused} refused"
    );
    let stats = pool.stats();
    assert_eq!(
        (stats.in_use, stats.queued),
        (0, 0),
        "nothing held after the run"
    );

    let mut loaded: Vec<Duration> = high.iter().map(|(_, latency)| *latency).collect();
    let (p99_unloaded, p99_loaded) = (p99(&mut unloaded), p99(&mut loaded));
    eprintln!(
        "HIGH: {high_ok}/{high_total} ok, p99 {p99_loaded:?} under 4x overload vs {p99_unloaded:?} unloaded ({:.2}x); \
         LOW: {low_ok} ok, {low_refused} shed or timed out; pool timed out {} LOW",
        p99_loaded.as_secs_f64() / p99_unloaded.as_secs_f64(),
        stats.timed_out_total
    );
}
