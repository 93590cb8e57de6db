//! ResourcePool behaviours with the numbers from the issue, on tokio's
//! paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tower_hardening_core::{EventKind, EventSink, Overloaded, QueueTimeout};
use tower_hardening_limit::{
    Acquire, Priority, ReleaseError, Resource, ResourcePool, Unsatisfiable,
};

async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
}

fn cores(n: i64) -> impl Iterator<Item = Resource> {
    (0..n).map(|i| Resource::new(format!("core-{i}")).attr("core", i))
}

// 1.
#[tokio::test(start_paused = true)]
async fn waiters_are_served_by_priority_then_arrival() {
    let pool = ResourcePool::builder("slots").capacity(2).build().unwrap();
    let first = pool.acquire(Acquire::new("holder-a")).await.unwrap();
    let second = pool.acquire(Acquire::new("holder-b")).await.unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (n, priority) in [1u8, 3, 2, 3, 1].into_iter().enumerate() {
        let (pool, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let lease = pool
                .acquire(Acquire::new(format!("waiter-{n}")).priority(Priority(priority)))
                .await
                .unwrap();
            order.lock().await.push((priority, n));
            // Hold it a moment, then let the next one in.
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(lease);
        }));
        settle().await; // arrive in this order
    }
    assert_eq!(pool.stats().queued, 5);
    let by_priority = pool.stats().queued_by_priority;
    assert_eq!(by_priority[&Priority(3)], 2);
    drop(first);
    drop(second);
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().await.clone();
    assert_eq!(
        order,
        vec![(3, 1), (3, 3), (2, 2), (1, 0), (1, 4)],
        "3, 3, 2, 1, 1 and FIFO within a priority"
    );
}

// 2.
#[tokio::test(start_paused = true)]
async fn requirements_pick_the_matching_resource_only() {
    let pool = ResourcePool::builder("cpu")
        .resources(cores(4))
        .build()
        .unwrap();
    let core0 = pool
        .acquire(Acquire::new("task-1").require("core", 0))
        .await
        .unwrap();
    assert_eq!(core0.resources()[0].name(), "core-0");

    // A second request for core 0 waits although cores 1 to 3 are free.
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.acquire(Acquire::new("task-2").require("core", 0))
                .await
        }
    });
    settle().await;
    assert_eq!(pool.stats().queued, 1);
    assert_eq!(pool.stats().available, 3);
    drop(core0);
    let lease = waiting.await.unwrap().unwrap();
    assert_eq!(lease.resources()[0].name(), "core-0");

    // Asking for what does not exist fails at once.
    let err = pool
        .acquire(Acquire::new("task-3").require("core", 9))
        .await
        .unwrap_err();
    assert!(err.is::<Unsatisfiable>(), "{err}");
    let err = pool
        .acquire(Acquire::new("task-4").units(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the pool has 4"), "{err}");
}

// 3.
#[tokio::test(start_paused = true)]
async fn release_checks_the_owner_and_refuses_a_double_release() {
    let pool = ResourcePool::builder("cpu")
        .resources(cores(2))
        .build()
        .unwrap();
    let id = pool
        .acquire(Acquire::new("task-123"))
        .await
        .unwrap()
        .detach();
    assert_eq!(pool.stats().active_leases, 1);

    let err = pool.release(id, "task-999").unwrap_err();
    assert!(matches!(err, ReleaseError::WrongOwner { .. }), "{err}");
    assert_eq!(pool.stats().active_leases, 1, "still active");
    assert_eq!(pool.stats().available, 1);

    pool.release(id, "task-123").unwrap();
    assert_eq!(pool.stats().active_leases, 0);
    assert_eq!(pool.stats().available, 2);

    let err = pool.release(id, "task-123").unwrap_err();
    assert!(matches!(err, ReleaseError::UnknownLease { .. }), "{err}");
    assert_eq!(pool.stats().available, 2, "no double free");
}

// 4.
#[tokio::test(start_paused = true)]
async fn a_detached_lease_is_reclaimed_at_its_ttl() {
    let sink = EventSink::new(16);
    let mut events = sink.subscribe();
    let pool = ResourcePool::builder("gpu")
        .resources([Resource::new("gpu-0")])
        .lease_ttl(Duration::from_secs(60))
        .events(sink)
        .build()
        .unwrap();
    let lease = pool.acquire(Acquire::new("training-job")).await.unwrap();
    let id = lease.id();
    assert_eq!(lease.detach(), id);
    assert_eq!(pool.stats().active_leases, 1, "detached, still held");

    tokio::time::advance(Duration::from_millis(59_999)).await;
    settle().await;
    assert_eq!(pool.stats().reclaimed_total, 0, "not before 60 s");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    let stats = pool.stats();
    assert_eq!(
        (stats.reclaimed_total, stats.active_leases, stats.available),
        (1, 0, 1)
    );
    let event = events.try_recv().unwrap();
    assert_eq!(
        event.kind(),
        &EventKind::LeaseReclaimed {
            lease_id: id,
            owner: "training-job".into()
        }
    );
    assert!(matches!(
        pool.release(id, "training-job"),
        Err(ReleaseError::UnknownLease { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_holder_sees_its_lease_reclaimed_and_dropping_it_frees_nothing_twice() {
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .lease_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let lease = pool.acquire(Acquire::new("a")).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    assert!(lease.is_reclaimed());
    let other = pool.acquire(Acquire::new("b")).await.unwrap();
    drop(lease);
    assert_eq!(
        pool.stats().available,
        0,
        "b's unit was not freed by a's drop"
    );
    drop(other);
    assert_eq!(pool.stats().available, 1);
}

// 5.
#[test]
fn ten_thousand_acquires_with_cancellations_lose_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = ResourcePool::builder("slots")
            .capacity(4)
            .max_queue(10_000)
            .queue_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let granted = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..32u64)
            .map(|task| {
                let (pool, granted) = (pool.clone(), granted.clone());
                tokio::spawn(async move {
                    let mut state = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut next = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state
                    };
                    let share = 10_000 / 32 + u64::from(task < 10_000 % 32);
                    for _ in 0..share {
                        let priority = Priority((next() % 4) as u8);
                        let acquire = pool.acquire(Acquire::new("load").priority(priority));
                        if next() % 3 == 0 {
                            // Cancel after a few polls, granted or not.
                            let mut acquire = Box::pin(acquire);
                            for _ in 0..(next() % 3) {
                                if let Some(result) =
                                    futures_util::FutureExt::now_or_never(&mut acquire)
                                {
                                    drop(result);
                                    break;
                                }
                                tokio::task::yield_now().await;
                            }
                        } else if let Ok(lease) = acquire.await {
                            granted.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            drop(lease);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.available, stats.capacity, "{stats:?}");
        assert_eq!(stats.queued, 0, "{stats:?}");
        assert_eq!(stats.in_use, 0);
        assert!(granted.load(Ordering::Relaxed) > 5_000);
    });
}

/// A stream of up to 1,000 HIGH requests, one every `every`, each holding
/// a unit for 10 ms.
fn high_stream(pool: &ResourcePool, every: Duration) -> tokio::task::JoinHandle<()> {
    let pool = pool.clone();
    tokio::spawn(async move {
        for n in 0..1_000 {
            let pool = pool.clone();
            tokio::spawn(async move {
                let request = Acquire::new(format!("high-{n}")).priority(Priority::HIGH);
                if let Ok(lease) = pool.acquire(request).await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    drop(lease);
                }
            });
            tokio::time::sleep(every).await;
        }
    })
}

// 6.
#[tokio::test(start_paused = true)]
async fn with_aging_a_low_waiter_is_not_starved_by_high_ones() {
    let aging = Duration::from_millis(500);
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .aging(aging)
        .queue_timeout(Duration::from_secs(60))
        .max_queue(10_000)
        .build()
        .unwrap();
    let holder = pool.acquire(Acquire::new("first")).await.unwrap();
    let start = tokio::time::Instant::now();
    let low = tokio::spawn({
        let pool = pool.clone();
        async move {
            let lease = pool
                .acquire(Acquire::new("low").priority(Priority::LOW))
                .await
                .unwrap();
            drop(lease);
            start.elapsed()
        }
    });
    settle().await;
    // A continuous stream of HIGH requests, one every 10 ms, each holding
    // the slot for 10 ms.
    let stream = high_stream(&pool, Duration::from_millis(10));
    // Let a few HIGH requests queue behind LOW before the slot frees up.
    tokio::time::sleep(Duration::from_millis(25)).await;
    assert!(pool.stats().queued >= 3);
    drop(holder);
    let waited = low.await.unwrap();
    // LOW (0) ages to HIGH (2) after 2 intervals (1 s) and then wins the
    // tie on arrival order, within one more hold of the slot.
    let bound = aging * 2 + Duration::from_millis(50);
    assert!(waited <= bound, "LOW waited {waited:?}, bound {bound:?}");
    stream.abort();

    // Without aging, the same LOW waiter would still be waiting.
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .max_queue(10_000)
        .queue_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let holder = pool.acquire(Acquire::new("first")).await.unwrap();
    let low = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.acquire(Acquire::new("low").priority(Priority::LOW))
                .await
                .map(drop)
        }
    });
    settle().await;
    let stream = high_stream(&pool, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(25)).await;
    drop(holder);
    let err = low.await.unwrap().unwrap_err();
    assert!(err.is::<QueueTimeout>(), "starved until its timeout: {err}");
    stream.abort();
}

// 7.
#[tokio::test(start_paused = true)]
async fn shedding_refuses_lower_priorities_at_once() {
    let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
    let holder = pool
        .acquire(Acquire::new("holder").priority(Priority::HIGH))
        .await
        .unwrap();
    let waiting_normal = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.acquire(Acquire::new("queued").priority(Priority::NORMAL))
                .await
        }
    });
    settle().await;
    pool.shed_below(Priority::HIGH);
    let err = waiting_normal.await.unwrap().unwrap_err();
    assert!(
        err.is::<Overloaded>(),
        "a waiting NORMAL request is refused too: {err}"
    );

    let err = pool
        .acquire(Acquire::new("late").priority(Priority::NORMAL))
        .await
        .unwrap_err();
    let overloaded = err.downcast_ref::<Overloaded>().expect("Overloaded");
    assert_eq!(overloaded.priority(), Some(Priority::NORMAL));
    drop(holder);
    pool.acquire(Acquire::new("high").priority(Priority::HIGH))
        .await
        .unwrap();
    let stats = pool.stats();
    assert_eq!(stats.rejected_by_priority[&Priority::NORMAL], 2);
    pool.stop_shedding();
    pool.acquire(Acquire::new("normal")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_and_a_timeout_are_distinct_errors() {
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .max_queue(1)
        .queue_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let _holder = pool.acquire(Acquire::new("holder")).await.unwrap();
    let queued = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(Acquire::new("queued")).await }
    });
    settle().await;
    let err = pool.acquire(Acquire::new("third")).await.unwrap_err();
    assert!(
        err.is::<Overloaded>() && err.to_string().contains("queue is full"),
        "{err}"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let err = queued.await.unwrap().unwrap_err();
    assert!(err.is::<QueueTimeout>(), "{err}");
    let stats = pool.stats();
    assert_eq!((stats.timed_out_total, stats.queued), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn unhealthy_resources_are_not_granted_and_holders_see_it() {
    let pool = ResourcePool::builder("cpu")
        .resources(cores(2))
        .build()
        .unwrap();
    let lease = pool
        .acquire(Acquire::new("a").require("core", 0))
        .await
        .unwrap();
    assert!(pool.mark_unhealthy("core-0"));
    assert_eq!(lease.unhealthy_resources(), vec!["core-0".to_owned()]);
    drop(lease);
    let next = pool.acquire(Acquire::new("b")).await.unwrap();
    assert_eq!(next.resources()[0].name(), "core-1", "core-0 is skipped");
    assert_eq!(pool.stats().unhealthy, vec!["core-0".to_owned()]);
    assert!(!pool.mark_unhealthy("core-7"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_reclaims_leases_and_refuses_everyone() {
    let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
    let lease = pool.acquire(Acquire::new("a")).await.unwrap();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(Acquire::new("b")).await }
    });
    settle().await;
    pool.shutdown();
    assert!(waiting.await.unwrap().is_err());
    assert!(lease.is_reclaimed());
    assert_eq!(pool.stats().reclaimed_total, 1);
    assert!(pool.acquire(Acquire::new("c")).await.is_err());
    pool.shutdown(); // idempotent
}

#[test]
fn bad_settings_name_the_setting() {
    let err = ResourcePool::builder("x").build().unwrap_err();
    assert_eq!(err.field(), "capacity");
    let err = ResourcePool::builder("x")
        .resources(Vec::new())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "resources");
    let err = ResourcePool::builder("x")
        .resources([Resource::new("a"), Resource::new("a")])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("unique"), "{err}");
    let err = ResourcePool::builder("x")
        .capacity(1)
        .queue_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "queue_timeout");
    let err = ResourcePool::builder("x")
        .capacity(1)
        .lease_ttl(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("tokio runtime"),
        "outside a runtime: {err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_holds_its_unit_until_it_ends() {
    use http_body::Body;
    use tower::{Layer, Service, ServiceExt, service_fn};
    use tower_hardening_limit::ResourceLimitLayer;

    let pool = ResourcePool::builder("streams")
        .capacity(2)
        .build()
        .unwrap();
    let mut svc = ResourceLimitLayer::new(pool.clone())
        .release_on_body_end()
        .layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, std::io::Error>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"chunk"),
            )))
        }));
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(
        pool.stats().in_use,
        1,
        "the response head alone keeps the unit"
    );
    let mut body = std::pin::pin!(response.into_body());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(
        body.as_mut().poll_frame(&mut cx),
        std::task::Poll::Ready(Some(Ok(_)))
    ));
    assert_eq!(pool.stats().in_use, 1, "still streaming");
    assert!(matches!(
        body.as_mut().poll_frame(&mut cx),
        std::task::Poll::Ready(None)
    ));
    assert_eq!(pool.stats().in_use, 0, "given back at the end of the body");

    // A body dropped half-way gives it back too.
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(pool.stats().in_use, 1);
    drop(response);
    assert_eq!(pool.stats().in_use, 0);
}
