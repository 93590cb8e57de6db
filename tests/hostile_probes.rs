//! `grpc_layer` over HTTP/1.1 on 127.0.0.1, a server stream as the
//! half-open probe: the probe is failed at `probe_timeout` whether its
//! client reads nothing or reads every byte, and the breaker moves on.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::CircuitState;
use tower_hardening::{HardeningHandle, SystemHardening};

const SERVICE: &str = "feed";

#[allow(dead_code)]
struct App {
    address: SocketAddr,
    handle: HardeningHandle,
    pool: tower_hardening::limit::ResourcePool,
}

/// `/stream`: an endless gRPC server stream (64 KiB messages, produced as
/// fast as they are polled). `/fail`: a trailers-only UNAVAILABLE.
/// `/ok`: a trailers-only OK.
async fn start(section: &str) -> App {
    let config = SystemHardeningConfig::from_toml_str(section).unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening.grpc_layer(SERVICE).unwrap().map_body(Body::new);
    let pool = layer.pool().clone();
    let handle = hardening.start();
    let router = Router::new()
        .route(
            "/stream",
            get(|| async {
                let chunk = Bytes::from(vec![0u8; 64 * 1024]);
                let stream = futures_util::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }),
        )
        .route(
            "/fail",
            get(|| async {
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "14")
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        .route(
            "/ok",
            get(|| async {
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "0")
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    App {
        address,
        handle,
        pool,
    }
}

/// Sends a GET for `path` and reads until the response head is in; the
/// connection is returned unread after that.
async fn head_only(address: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(3), async {
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the head");
            buffer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a head within 3s");
    let head = String::from_utf8_lossy(&buffer).into_owned();
    (stream, head)
}

/// A whole polite request; the head's status line and grpc-status.
async fn polite(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buffer)).await;
    String::from_utf8_lossy(&buffer).into_owned()
}

// A server stream that is the half-open probe, whose client reads nothing
// (so nothing polls the stream): at `probe_timeout` the next caller finds
// the probe overdue and the breaker reopens, then a polite probe closes
// it. (Before, the probe permit was held for as long as the stream lived,
// and everyone else was refused with a hint that never came true.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_grpc_stream_probe_fails_at_its_deadline() {
    let app = start(&format!(
        r#"
[services.{SERVICE}.breaker]
sliding_window = {{ count = 2 }}
minimum_calls = 2
wait_in_open = "100ms"
max_wait_in_open = "100ms"
half_open_permits = 1
probe_timeout = "200ms"
"#
    ))
    .await;
    let breaker = app.handle.breaker(SERVICE).unwrap();
    for _ in 0..2 {
        polite(app.address, "/fail").await;
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The hostile client's stream is the probe.
    let (_unread, head) = head_only(app.address, "/stream").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        last = polite(app.address, "/ok").await;
        if breaker.state() == CircuitState::Closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = breaker.snapshot();
    assert_eq!(
        snapshot.state,
        CircuitState::Closed,
        "2 s after a 200 ms probe deadline: {} probe(s) in flight; polite calls get: {}",
        snapshot.probes_in_flight,
        last.lines().take(4).collect::<Vec<_>>().join(" | ")
    );
    app.handle.shutdown().await;
}

/// Reads and discards everything the connection sends, until dropped.
fn drain(mut stream: TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    })
}

// The same with a client that reads every byte of a stream that always
// has its next message ready (a feed, a download): the probe is failed at
// `probe_timeout` although the stream goes on. (Before, the deadline was
// looked at only when the stream had nothing ready.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_grpc_stream_probe_fails_at_its_deadline() {
    let app = start(&format!(
        r#"
[services.{SERVICE}.breaker]
sliding_window = {{ count = 2 }}
minimum_calls = 2
wait_in_open = "100ms"
max_wait_in_open = "100ms"
half_open_permits = 1
probe_timeout = "200ms"
"#
    ))
    .await;
    let breaker = app.handle.breaker(SERVICE).unwrap();
    for _ in 0..2 {
        polite(app.address, "/fail").await;
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (reader, head) = head_only(app.address, "/stream").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let reading = drain(reader);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let snapshot = breaker.snapshot();
    reading.abort();
    assert_ne!(
        (snapshot.state, snapshot.probes_in_flight),
        (CircuitState::HalfOpen, 1),
        "800 ms past its 200 ms deadline the streaming probe still holds its permit"
    );
    app.handle.shutdown().await;
}
