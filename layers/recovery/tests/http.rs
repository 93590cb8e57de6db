//! `RetryLayer::http`: an axum handler that fails once sees the same body
//! bytes on the retry; a body too large to buffer is sent once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};
use tower_hardening_core::HttpServerErrors;
use tower_hardening_recovery::{Backoff, RetryLayer};

fn app(seen: Arc<Mutex<Vec<Bytes>>>) -> Router {
    Router::new().route(
        "/transcribe",
        post(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push(body);
                if seen.len() == 1 {
                    (StatusCode::INTERNAL_SERVER_ERROR, "try again")
                } else {
                    (StatusCode::OK, "transcribed")
                }
            }
        }),
    )
}

fn retry() -> tower_hardening_recovery::HttpRetryLayer<HttpServerErrors> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .classifier(HttpServerErrors::default())
        .build()
        .unwrap()
        .http(64 * 1024)
}

// 4.
#[tokio::test(start_paused = true)]
async fn the_handler_receives_the_same_body_on_the_retry() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = retry();
    let handle = layer.handle();
    let mut svc = layer.layer(app(seen.clone()));
    let payload = Bytes::from_static(b"\x00\x01 sixteen bytes of pcm audio \xff");
    let request = Request::post("/transcribe")
        .header("content-type", "application/octet-stream")
        .body(Body::from(payload.clone()))
        .unwrap();
    let response = ServiceExt::<Request<Body>>::ready(&mut svc)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"transcribed");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one failure, one retry");
    assert_eq!(seen[0], payload);
    assert_eq!(seen[1], payload, "the retry carried the same bytes");
    assert_eq!(handle.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_once() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = RetryLayer::builder()
        .classifier(HttpServerErrors::default())
        .build()
        .unwrap()
        .http(8);
    let mut svc = layer.layer(app(seen.clone()));
    let request = Request::post("/transcribe")
        .body(Body::from("more than eight bytes"))
        .unwrap();
    let response = ServiceExt::<Request<Body>>::ready(&mut svc)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "not retried"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        &seen.lock().unwrap()[0][..],
        b"more than eight bytes",
        "sent whole, unbuffered"
    );
}
