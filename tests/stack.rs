//! The four layers composed in the design's order, against a dependency
//! that fails: the breaker opens, retry stops at its rejection, metrics
//! count every outcome, and admission gives every unit back.

#![cfg(feature = "full")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::breaker::{CircuitBreakerLayer, CircuitOpen, CircuitState, SlidingWindow};
use tower_hardening::limit::{Priority, ResourceLimitLayer, ResourcePool};
use tower_hardening::metrics::{MetricsCollector, MetricsLayer};
use tower_hardening::recovery::{Backoff, Jitter, RetryLayer};

#[tokio::test(start_paused = true)]
async fn a_failing_dependency_trips_the_breaker_and_every_layer_agrees() {
    let collector = MetricsCollector::builder().build().unwrap();
    let slots = ResourcePool::builder("model").capacity(4).build().unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .name("model")
        .sliding_window(SlidingWindow::count(10))
        .minimum_calls(10)
        .wait_in_open(Duration::from_secs(30))
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let retry = RetryLayer::builder()
        .name("model")
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let retry_handle = retry.handle();

    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let metrics = metrics::with_local_recorder(&collector, || MetricsLayer::new("model"));
    let mut model = ServiceBuilder::new()
        .layer(metrics)
        .layer(ResourceLimitLayer::new(slots.clone()).priority(|_: &u32| Priority::NORMAL))
        .layer(retry)
        .layer(breaker)
        .timeout(Duration::from_secs(2))
        .service(service_fn({
            let (down, calls) = (down.clone(), calls.clone());
            move |x: u32| {
                calls.fetch_add(1, Ordering::SeqCst);
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        Err(std::io::Error::other("backend down"))
                    } else {
                        Ok(x)
                    }
                }
            }
        }));

    // Request 1 to 3 fail three attempts each (9 calls); request 4's first
    // attempt is the tenth failure, which opens the breaker, and its retry
    // is rejected with CircuitOpen, which retry returns as it is.
    for _ in 0..3 {
        let err = model.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(err.to_string().contains("backend down"), "{err}");
    }
    let err = model.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(breaker_handle.state(), CircuitState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 10);

    // While open, requests fail fast without reaching the dependency, and
    // are not retried.
    for _ in 0..5 {
        let err = model.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(err.is::<CircuitOpen>());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(
        retry_handle.stats().retries,
        7,
        "2 per failed request, 1 before the trip"
    );

    // The dependency recovers; after the wait a probe closes the breaker.
    down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..5 {
        assert_eq!(model.ready().await.unwrap().call(7).await.unwrap(), 7);
    }
    assert_eq!(breaker_handle.state(), CircuitState::Closed);

    let outcome = |outcome: &str| {
        collector
            .query("hardening_requests_total")
            .label("service", "model")
            .label("outcome", outcome)
            .sum()
    };
    assert_eq!(outcome("failure"), 3.0);
    assert_eq!(
        outcome("rejected"),
        6.0,
        "request 4 and the five while open"
    );
    assert_eq!(outcome("success"), 5.0);
    let stats = slots.stats();
    assert_eq!((stats.in_use, stats.queued), (0, 0), "every unit came back");
}

/// A dependency that counts how often it is cloned, and fails the calls
/// it is told to.
#[derive(Debug)]
struct Counted {
    clones: Arc<AtomicU32>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counted {
            clones: self.clones.clone(),
        }
    }
}

impl Service<bool> for Counted {
    type Response = ();
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<(), std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, fail: bool) -> Self::Future {
        std::future::ready(if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        })
    }
}

impl
    Service<
        http::Request<tower_hardening::recovery::ReplayBody<http_body_util::Empty<bytes::Bytes>>>,
    > for Counted
{
    type Response = http::Response<()>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<http::Response<()>, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(
        &mut self,
        _: http::Request<
            tower_hardening::recovery::ReplayBody<http_body_util::Empty<bytes::Bytes>>,
        >,
    ) -> Self::Future {
        std::future::ready(Ok(http::Response::new(())))
    }
}

// Issue #12: a call clones nothing below the stack (every clone writes the
// reference counts of every layer under it, on every core); a retry
// clones the service below once.
#[tokio::test(start_paused = true)]
async fn a_call_clones_nothing_below_and_a_retry_clones_once() {
    let clones = Arc::new(AtomicU32::new(0));
    let slots = ResourcePool::builder("model").capacity(64).build().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(MetricsLayer::new("model"))
        .layer(ResourceLimitLayer::new(slots.clone()).priority(|_: &bool| Priority::NORMAL))
        .layer(
            RetryLayer::builder()
                .name("model")
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .layer(
            CircuitBreakerLayer::builder()
                .name("model")
                .build()
                .unwrap(),
        )
        .service(Counted {
            clones: clones.clone(),
        });
    let built = clones.load(Ordering::SeqCst);
    for _ in 0..1_000 {
        svc.ready().await.unwrap().call(false).await.unwrap();
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        built,
        "1,000 calls, no clone"
    );
    // Three attempts by default: two retries, made by one clone of the
    // service below. The first retried call on a thread also keeps a copy
    // for that thread's later retries.
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(
        clones.load(Ordering::SeqCst),
        built + 2,
        "the first retried call"
    );
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(
        clones.load(Ordering::SeqCst),
        built + 3,
        "two retries, one clone"
    );
    assert_eq!(slots.stats().in_use, 0);

    // HTTP: a GET without a body is not read first, so it clones nothing.
    let clones = Arc::new(AtomicU32::new(0));
    let mut svc = RetryLayer::builder()
        .name("http")
        .build()
        .unwrap()
        .http(1 << 16)
        .layer(Counted {
            clones: clones.clone(),
        });
    let built = clones.load(Ordering::SeqCst);
    for _ in 0..100 {
        let get = http::Request::get("/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        svc.ready().await.unwrap().call(get).await.unwrap();
    }
    assert_eq!(clones.load(Ordering::SeqCst), built, "100 GETs, no clone");
}
