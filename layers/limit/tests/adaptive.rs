//! The AIMD adaptive limit through the layer (issue 9, item 12): one
//! decrease per congestion event, growth on successes only. On tokio's
//! paused clock.

use std::time::Duration;

use tower::{Layer, ServiceExt, service_fn};
use tower_hardening_core::{BoxError, HttpServerErrors};
use tower_hardening_limit::{AdaptiveLimit, Priority, ResourceLimitLayer};

fn normal(_: &u32) -> Priority {
    Priority::NORMAL
}

fn aimd_layer(initial: u64) -> ResourceLimitLayer<fn(&u32) -> Priority> {
    ResourceLimitLayer::adaptive(
        AdaptiveLimit::aimd()
            .min(2)
            .max(100)
            .initial(initial)
            .latency_threshold(Duration::from_millis(100)),
    )
    .unwrap()
    .priority(normal as fn(&u32) -> Priority)
}

// Item 12: ten concurrent slow responses took the limit from 50 to
// 50 * 0.9^10 = 17; they are one congestion event.
#[tokio::test(start_paused = true)]
async fn ten_concurrent_slow_responses_decrease_the_limit_once() {
    let layer = aimd_layer(50);
    let svc = layer.layer(service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, BoxError>(x)
    }));
    let tasks: Vec<_> = (0..10)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(layer.adaptive_limit(), Some(45));
    assert_eq!(layer.pool().stats().capacity, 45);
    // A slow request admitted after that decrease counts again.
    tokio::time::advance(Duration::from_millis(1)).await;
    svc.oneshot(11).await.unwrap();
    assert_eq!(layer.adaptive_limit(), Some(41));
}

// Item 12: fast failures during an outage grew the limit like successes.
#[tokio::test(start_paused = true)]
async fn fast_failures_never_grow_the_limit() {
    let layer = aimd_layer(10);
    let failing = layer.layer(service_fn(|_: u32| async {
        Err::<u32, BoxError>("connection refused".into())
    }));
    for n in 0..100 {
        assert!(failing.clone().oneshot(n).await.is_err());
    }
    assert_eq!(layer.adaptive_limit(), Some(10), "failures never grow it");
    let working = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    for n in 0..10 {
        working.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(layer.adaptive_limit(), Some(11), "successes do");

    // With a classifier, a fast error response is a failure too.
    let layer = ResourceLimitLayer::adaptive(AdaptiveLimit::aimd().initial(10))
        .unwrap()
        .classify(HttpServerErrors::new());
    let unavailable = layer.layer(service_fn(|_: http::Request<()>| async {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, BoxError>(response)
    }));
    for _ in 0..100 {
        unavailable
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(layer.adaptive_limit(), Some(10));
}
