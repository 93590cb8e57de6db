//! Configuration a user can write that validate(), build() and
//! start() accept never fails on the request path: durations past what
//! the clock can hold mean "never".

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;

// A very long `timeout` (validate() accepts any positive duration): when
// a streamed request body (here chunked) ends while the handler is still
// working, the per-call deadline restarts from then. It used to do so
// with an unchecked `Instant::now() + timeout`, which panicked: the
// connection died unanswered and the breaker recorded a failure. Now a
// deadline past the clock's range means none, and the POST is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_timeout_is_no_timeout_when_a_streamed_body_ends() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
[services.api]
timeout = "500000000000y"
"#,
    )
    .unwrap();
    // If validate() refuses it, that is a correct outcome too.
    if config.validate().is_err() {
        return;
    }
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening.http_layer("api").unwrap().map_body(Body::new);
    let handle = hardening.start();
    let router = Router::new()
        .route(
            "/echo",
            // A handler that does some work after reading its body.
            post(|body: Bytes| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                format!("{} bytes", body.len())
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let breaker = handle.breaker("api").unwrap().snapshot();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "no 200 for a 3-byte chunked POST (breaker failures: {}); got: {answer:?}",
        breaker.failures
    );
    handle.shutdown().await;
}
