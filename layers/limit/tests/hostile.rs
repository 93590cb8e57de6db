//! `ResourceLimitLayer` against what a client controls (issue 9, items 4
//! and 8): a priority header, a declared Content-Length; and the
//! `Retry-After` hints its refusals carry. On tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn};
use tower_hardening_core::{BoxError, Overloaded, QueueTimeout};
use tower_hardening_limit::{
    Acquire, ContentLengthCost, HeaderPriority, Priority, PriorityOf, ResourceLimitLayer,
    ResourcePool, Unsatisfiable,
};

mod common;
use common::{gated, normal, pool, settle};
// Item 4: "255" in a priority header outranked CRITICAL.
#[tokio::test(start_paused = true)]
async fn a_priority_header_cannot_outrank_the_applications_critical_work() {
    let from_header = HeaderPriority::new("x-priority");
    let with = |value: &str| {
        http::Request::builder()
            .header("x-priority", value)
            .body(())
            .unwrap()
    };
    assert_eq!(from_header.priority_of(&with("255")), Priority::HIGH);
    assert_eq!(from_header.priority_of(&with("critical")), Priority::HIGH);
    assert_eq!(from_header.priority_of(&with("low")), Priority::LOW);
    let trusted = from_header.clone().ceiling(Priority::CRITICAL);
    assert_eq!(trusted.priority_of(&with("255")), Priority::CRITICAL);

    // End to end: a client claiming 255 queues first, the application's
    // own CRITICAL request second; CRITICAL goes first.
    let pool = pool(1);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let priority = move |request: &http::Request<&'static str>| {
        if request.headers().contains_key("x-internal") {
            Priority::CRITICAL
        } else {
            from_header.priority_of(request)
        }
    };
    let svc = ResourceLimitLayer::new(pool.clone())
        .priority(priority)
        .layer(service_fn({
            let order = order.clone();
            move |request: http::Request<&'static str>| {
                order.lock().unwrap().push(*request.body());
                async { Ok::<_, BoxError>(http::Response::new(())) }
            }
        }));
    let holder = pool.acquire(Acquire::new("holder")).await.unwrap();
    let client = tokio::spawn(
        svc.clone().oneshot(
            http::Request::builder()
                .header("x-priority", "255")
                .body("client")
                .unwrap(),
        ),
    );
    settle().await;
    let internal = tokio::spawn(
        svc.clone().oneshot(
            http::Request::builder()
                .header("x-internal", "1")
                .body("internal")
                .unwrap(),
        ),
    );
    settle().await;
    assert_eq!(pool.stats().queued, 2);
    drop(holder);
    client.await.unwrap().unwrap();
    internal.await.unwrap().unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["internal", "client"]);
}

// Item 8: a client-declared Content-Length is clamped to the capacity.
#[tokio::test(start_paused = true)]
async fn a_declared_content_length_cannot_ask_for_more_than_the_pool() {
    let pool = pool(1_000);
    let seen = Arc::new(AtomicUsize::new(0));
    let svc = ResourceLimitLayer::new(pool.clone())
        .cost(ContentLengthCost::new())
        .layer(service_fn({
            let (pool, seen) = (pool.clone(), seen.clone());
            move |_: http::Request<()>| {
                seen.store(pool.stats().in_use as usize, Ordering::SeqCst);
                async { Ok::<_, BoxError>(http::Response::new(())) }
            }
        }));
    let huge = http::Request::builder()
        .header("content-length", "1000000000000")
        .body(())
        .unwrap();
    svc.clone().oneshot(huge).await.unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1_000,
        "clamped to the whole pool"
    );
    let overflowing = http::Request::builder()
        .header("content-length", "99999999999999999999999")
        .body(())
        .unwrap();
    svc.clone().oneshot(overflowing).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1_000);
    assert_eq!(pool.stats().in_use, 0);

    // An application's own cost is not clamped: asking for more than the
    // pool has is an error at once, not a wait.
    let svc = ResourceLimitLayer::new(pool.clone())
        .cost(|_: &http::Request<()>| 1_001)
        .layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::new(()))
        }));
    let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    assert!(err.is::<Unsatisfiable>(), "{err}");
}

// Contract: refusals carry a real Retry-After hint.
#[tokio::test(start_paused = true)]
async fn refusals_carry_a_retry_after_hint() {
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .max_queue(1)
        .queue_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let svc = ResourceLimitLayer::new(pool.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(gated(gate.clone()));
    let running = tokio::spawn(svc.clone().oneshot(1));
    let queued = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    let err = svc.clone().oneshot(3).await.unwrap_err();
    let full = err.downcast_ref::<Overloaded>().expect("Overloaded");
    assert_eq!(full.retry_after(), Some(Duration::from_secs(2)));
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = queued.await.unwrap().unwrap_err();
    let timeout = err.downcast_ref::<QueueTimeout>().expect("QueueTimeout");
    assert_eq!(timeout.retry_after(), Some(Duration::from_secs(2)));
    pool.shed_below(Priority::HIGH);
    let err = svc.clone().oneshot(4).await.unwrap_err();
    let shed = err.downcast_ref::<Overloaded>().expect("Overloaded");
    assert_eq!(shed.retry_after(), Some(Duration::from_secs(2)));
    gate.add_permits(1);
    running.await.unwrap().unwrap();
}
