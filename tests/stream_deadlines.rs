//! The gRPC stack's stream deadlines: a server stream holds its call's
//! admission unit until it ends or `stream_timeout` passes. One task per
//! stack keeps every deadline (not a task per call); these tests hold it
//! to every stream's own deadline through streams ending early, the queue
//! emptying and filling again, and a finished stream whose queue entry
//! was reused by a later one.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::Full;
use tokio::time::{Instant, sleep_until};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::limit::ResourcePool;
use tower_hardening::recovery::ReplayBody;

/// A server stream that never sends and never ends.
#[derive(Debug)]
struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

fn call() -> http::Request<Full<Bytes>> {
    http::Request::post("/feed.Feed/Subscribe")
        .header("content-type", "application/grpc")
        .body(Full::default())
        .unwrap()
}

/// A gRPC stack with `stream_timeout = 1s` over endless streams, and its
/// admission pool.
fn stack() -> (
    impl Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<impl http_body::Body>,
        Error = Infallible,
    > + Clone,
    ResourcePool,
) {
    let config = SystemHardeningConfig::from_toml_str(
        "[services.feed]\nstream_timeout = \"1s\"\n[services.feed.limit]\nmax_concurrency = 100\nmax_queue = 0",
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening.grpc_layer("feed").unwrap();
    let pool = layer.pool().clone();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        |_: http::Request<ReplayBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(http::Response::new(Endless))
        },
    ));
    (svc, pool)
}

#[tokio::test(start_paused = true)]
async fn every_stream_gets_its_own_deadline_from_one_reaper() {
    let (svc, pool) = stack();
    let ms = Duration::from_millis;
    let started = Instant::now();

    // 50 streams; half of them end (are dropped) half-way.
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(svc.clone().oneshot(call()).await.unwrap());
    }
    assert_eq!(pool.stats().in_use, 50);
    sleep_until(started + ms(500)).await;
    streams.truncate(25);
    assert_eq!(
        pool.stats().in_use,
        25,
        "an ended stream gives its unit back"
    );
    sleep_until(started + ms(900)).await;
    assert_eq!(pool.stats().in_use, 25, "held until the deadline");
    sleep_until(started + ms(1_100)).await;
    assert_eq!(pool.stats().in_use, 0, "given back at the deadline");

    // The queue emptied and its task stopped: new streams start another.
    sleep_until(started + ms(2_000)).await;
    let mut later = Vec::new();
    for _ in 0..10 {
        later.push(svc.clone().oneshot(call()).await.unwrap());
    }
    later.truncate(5);
    assert_eq!(pool.stats().in_use, 5);
    sleep_until(started + ms(3_100)).await;
    assert_eq!(pool.stats().in_use, 0, "the second round's deadline too");
    drop((streams, later));
}

#[tokio::test(start_paused = true)]
async fn a_stream_past_its_deadline_never_cancels_a_later_streams_deadline() {
    let (svc, pool) = stack();
    let ms = Duration::from_millis;
    let started = Instant::now();

    // The first stream's deadline passes while its client still holds it.
    let first = svc.clone().oneshot(call()).await.unwrap();
    sleep_until(started + ms(1_100)).await;
    assert_eq!(pool.stats().in_use, 0);
    // A second stream takes the place the first left in the queue; then
    // the first one ends: the second's deadline must stand.
    let second = svc.clone().oneshot(call()).await.unwrap();
    drop(first);
    assert_eq!(pool.stats().in_use, 1);
    sleep_until(started + ms(2_200)).await;
    assert_eq!(pool.stats().in_use, 0, "the second stream's deadline held");
    drop(second);
}
