//! The four layers composed in the design's order, against a dependency
//! that fails: the breaker opens, retry stops at its rejection, metrics
//! count every outcome, and admission gives every unit back.

#![cfg(feature = "full")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
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
