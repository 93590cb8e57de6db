//! `RetryLayer::http`: an axum handler that fails once sees the same body
//! bytes on the retry; only idempotent requests are retried; a body too
//! large to buffer is sent once; reading a slow body holds no permit of the
//! services below.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use axum::routing::any;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_core::{BoxError, HttpServerErrors};
use tower_hardening_recovery::{
    AnyRequest, Backoff, HttpRetryLayer, IdempotentHttp, ReplayBody, RetryLayer, RetryPredicate,
};

/// Fails the first request with a 500, then answers 200; records the
/// method and body of every request it sees.
fn app(seen: Arc<Mutex<Vec<(Method, Bytes)>>>) -> Router {
    Router::new().route(
        "/transcribe",
        any(move |method: Method, body: Bytes| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((method, body));
                if seen.len() == 1 {
                    (StatusCode::INTERNAL_SERVER_ERROR, "try again")
                } else {
                    (StatusCode::OK, "transcribed")
                }
            }
        }),
    )
}

fn retry() -> HttpRetryLayer<HttpServerErrors> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .classifier(HttpServerErrors::default())
        .build()
        .unwrap()
        .http(64 * 1024)
}

async fn send<S>(svc: &mut S, request: Request<Body>) -> axum::http::Response<axum::body::Body>
where
    S: Service<Request<Body>, Response = axum::http::Response<axum::body::Body>, Error = BoxError>,
{
    ServiceExt::<Request<Body>>::ready(svc)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap()
}

/// Sends `request` through `layer` to the fail-once app; returns how many
/// times the handler ran and the bodies it saw.
async fn attempts_for<P>(
    layer: HttpRetryLayer<HttpServerErrors, P>,
    request: Request<Body>,
) -> Vec<(Method, Bytes)>
where
    P: RetryPredicate<Request<Body>>,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer.layer(app(seen.clone()));
    let _ = send(&mut svc, request).await;
    seen.lock().unwrap().clone()
}

// 4.
#[tokio::test(start_paused = true)]
async fn the_handler_receives_the_same_body_on_the_retry() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = retry();
    let handle = layer.handle();
    let mut svc = layer.layer(app(seen.clone()));
    let payload = Bytes::from_static(b"\x00\x01 sixteen bytes of pcm audio \xff");
    let request = Request::put("/transcribe")
        .header("content-type", "application/octet-stream")
        .body(Body::from(payload.clone()))
        .unwrap();
    let response = send(&mut svc, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"transcribed");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one failure, one retry");
    assert_eq!(seen[0].1, payload);
    assert_eq!(seen[1].1, payload, "the retry carried the same bytes");
    assert_eq!(handle.stats().retries, 1);
}

// 3: a POST is not retried by default.
#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_by_default() {
    let layer = retry();
    let handle = layer.handle();
    let seen = attempts_for(
        layer,
        Request::post("/transcribe")
            .body(Body::from("audio"))
            .unwrap(),
    )
    .await;
    assert_eq!(seen.len(), 1, "sent once: {seen:?}");
    assert_eq!(&seen[0].1[..], b"audio", "sent whole");
    assert_eq!(handle.stats().retries, 0);
    for method in [Method::PATCH, Method::CONNECT] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/transcribe")
            .body(Body::empty())
            .unwrap();
        assert_eq!(attempts_for(retry(), request).await.len(), 1, "{method}");
    }
}

// 3: the idempotent methods of RFC 9110 are retried.
#[tokio::test(start_paused = true)]
async fn idempotent_methods_are_retried() {
    for method in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/transcribe")
            .body(Body::empty())
            .unwrap();
        assert_eq!(attempts_for(retry(), request).await.len(), 2, "{method}");
    }
}

// 3: a POST with an Idempotency-Key is retried, with its body.
#[tokio::test(start_paused = true)]
async fn a_post_with_an_idempotency_key_is_retried() {
    let request = Request::post("/transcribe")
        .header("Idempotency-Key", "\"8e03978e-40d5-43e8\"")
        .body(Body::from("audio"))
        .unwrap();
    let seen = attempts_for(retry(), request).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(&seen[1].1[..], b"audio");

    // An empty key promises nothing.
    let request = Request::post("/transcribe")
        .header("idempotency-key", "  ")
        .body(Body::from("audio"))
        .unwrap();
    assert_eq!(attempts_for(retry(), request).await.len(), 1);
}

// 3: anything else opts in through `.idempotent(..)`, which replaces the
// default.
#[tokio::test(start_paused = true)]
async fn idempotent_opts_requests_in() {
    let transcribe = |r: &Request<Body>| IdempotentHttp.may_retry(r) || r.method() == Method::POST;
    let layer = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .classifier(HttpServerErrors::default())
        .idempotent(transcribe)
        .build()
        .unwrap()
        .http(1024);
    let post = Request::post("/transcribe").body(Body::from("a")).unwrap();
    assert_eq!(attempts_for(layer.clone(), post).await.len(), 2);
    let patch = Request::patch("/transcribe").body(Body::from("a")).unwrap();
    assert_eq!(attempts_for(layer, patch).await.len(), 1);

    let everything = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .classifier(HttpServerErrors::default())
        .idempotent(AnyRequest)
        .build()
        .unwrap()
        .http(1024);
    let patch = Request::patch("/transcribe").body(Body::from("a")).unwrap();
    assert_eq!(attempts_for(everything, patch).await.len(), 2);

    let nothing = RetryLayer::builder()
        .classifier(HttpServerErrors::default())
        .idempotent(|_: &Request<Body>| false)
        .build()
        .unwrap()
        .http(1024);
    let get = Request::get("/transcribe").body(Body::empty()).unwrap();
    assert_eq!(attempts_for(nothing, get).await.len(), 1);
}

// 3: a timeout on a non-idempotent request is never retried (it may have
// been processed); the same timeout on a GET is.
#[tokio::test(start_paused = true)]
async fn a_timed_out_post_is_not_retried() {
    for (method, expected) in [(Method::POST, 1), (Method::GET, 3)] {
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let slow = service_fn(move |_: Request<ReplayBody<Body>>| {
            *counted.lock().unwrap() += 1;
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, Infallible>(axum::http::Response::new(Body::empty()))
            }
        });
        let mut svc = retry().layer(tower::timeout::Timeout::new(slow, Duration::from_secs(1)));
        let request = Request::builder()
            .method(method.clone())
            .uri("/transcribe")
            .body(Body::from("audio"))
            .unwrap();
        let err = ServiceExt::<Request<Body>>::ready(&mut svc)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
        assert_eq!(*calls.lock().unwrap(), expected, "{method}");
    }
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
    let request = Request::put("/transcribe")
        .body(Body::from("more than eight bytes"))
        .unwrap();
    let response = send(&mut svc, request).await;
    assert_eq!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "not retried"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        &seen.lock().unwrap()[0].1[..],
        b"more than eight bytes",
        "sent whole, unbuffered"
    );
}

/// A request body for the tests below: one that never finishes, or one
/// whose size hint lies.
enum TestBody {
    Empty,
    /// Promises `promised` bytes and never sends them (a slow client).
    NeverEnds {
        promised: u64,
    },
    /// Promises `promised` bytes, then sends `chunks` of 16 bytes.
    Lies {
        promised: u64,
        chunks: u32,
    },
}

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            TestBody::Empty => Poll::Ready(None),
            TestBody::NeverEnds { .. } => Poll::Pending,
            TestBody::Lies { chunks, .. } => {
                if *chunks == 0 {
                    return Poll::Ready(None);
                }
                *chunks -= 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[7; 16])))))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Empty => SizeHint::with_exact(0),
            TestBody::NeverEnds { promised } | TestBody::Lies { promised, .. } => {
                SizeHint::with_exact(*promised)
            }
        }
    }
}

// 2: while a slow client's body is being read, the services below keep
// their readiness: a concurrency limit of 1 still serves other requests.
#[tokio::test(start_paused = true)]
async fn reading_a_slow_body_holds_no_permit() {
    let inner = service_fn(|_: Request<ReplayBody<TestBody>>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let layer = RetryLayer::builder().build().unwrap().http(1024);
    let mut svc = layer.layer(ConcurrencyLimit::new(inner, 1));

    let slow = Request::put("/upload")
        .body(TestBody::NeverEnds { promised: 100 })
        .unwrap();
    let mut slow = Box::pin(
        ServiceExt::<Request<TestBody>>::ready(&mut svc)
            .await
            .unwrap()
            .call(slow),
    );
    let nudge = tokio::time::timeout(Duration::from_millis(10), slow.as_mut()).await;
    assert!(nudge.is_err(), "still reading the body");

    // The one permit is free: another request goes through at once.
    let other = Request::get("/status").body(TestBody::Empty).unwrap();
    let served = tokio::time::timeout(Duration::from_secs(1), async {
        ServiceExt::<Request<TestBody>>::ready(&mut svc)
            .await
            .unwrap()
            .call(other)
            .await
    })
    .await;
    assert!(
        served.is_ok(),
        "a slow body held the inner service's only permit"
    );
    served.unwrap().unwrap();

    // And the slow request, still waiting, holds nothing when dropped.
    drop(slow);
    let other = Request::get("/status").body(TestBody::Empty).unwrap();
    ServiceExt::<Request<TestBody>>::ready(&mut svc)
        .await
        .unwrap()
        .call(other)
        .await
        .unwrap();
}

// 2, with tower-test's mock: the mock's readiness is one permit; the layer
// is ready without taking it, and the future takes it only once the body
// is in.
#[tokio::test(start_paused = true)]
async fn readiness_is_taken_after_the_body_is_read() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<ReplayBody<TestBody>>, ()>();
    handle.allow(0);
    let layer = RetryLayer::builder().build().unwrap().http(1024);
    let mut svc = layer.layer(mock);
    // Ready at once, although the mock is not.
    let ready =
        futures_util::FutureExt::now_or_never(ServiceExt::<Request<TestBody>>::ready(&mut svc));
    assert!(matches!(ready, Some(Ok(_))), "poll_ready waits for nothing");
    let request = Request::put("/upload")
        .body(TestBody::Lies {
            promised: 32,
            chunks: 2,
        })
        .unwrap();
    let response = tokio::spawn(svc.call(request));
    tokio::task::yield_now().await;
    handle.allow(1);
    let (request, send_response) = handle.next_request().await.expect("called once allowed");
    assert!(request.body().is_replayable());
    assert_eq!(
        request
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len(),
        32
    );
    send_response.send_response(());
    response.await.unwrap().unwrap();
}

// A body that promises at most the limit and then sends more is refused,
// never buffered past the limit.
#[tokio::test(start_paused = true)]
async fn a_body_that_lies_about_its_size_is_refused() {
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let inner = service_fn(move |_: Request<ReplayBody<TestBody>>| {
        *counted.lock().unwrap() += 1;
        async { Ok::<_, Infallible>(http::Response::new(())) }
    });
    let svc = RetryLayer::builder().build().unwrap().http(64).layer(inner);
    let request = Request::put("/upload")
        .body(TestBody::Lies {
            promised: 16,
            chunks: 1_000,
        })
        .unwrap();
    let err = svc.oneshot(request).await.unwrap_err();
    let client = tower_hardening_core::client_body_error_of(&*err).expect("the client's fault");
    assert_eq!(
        client.kind(),
        tower_hardening_core::ClientBodyErrorKind::TooLarge,
        "{err}"
    );
    assert_eq!(*calls.lock().unwrap(), 0);
}
