//! ResourcePool at its bounds (issue 9, items 4, 7, 8 and 10): aging
//! under CRITICAL, units never beyond the capacity under contention, a
//! queue that costs the same per grant however long it is, durations the
//! clock cannot hold.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_core::BoxError;
use tower_hardening_limit::{Acquire, Priority, ResourceLimitLayer, ResourcePool, Unsatisfiable};

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// Item 4: a LOW waiter aged past CRITICAL (one level per interval, no
// ceiling) and was served before the application's CRITICAL request.
#[tokio::test(start_paused = true)]
async fn aging_never_lifts_a_waiter_above_high() {
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .aging(Duration::from_millis(100))
        .queue_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let holder = pool.acquire(Acquire::new("holder")).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiter = |name: &'static str, priority| {
        let (pool, order) = (pool.clone(), order.clone());
        tokio::spawn(async move {
            let lease = pool
                .acquire(Acquire::new(name).priority(priority))
                .await
                .unwrap();
            order.lock().unwrap().push(name);
            drop(lease);
        })
    };
    let low = waiter("low", Priority::LOW);
    // Ten seconds: a hundred aging intervals.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let critical = waiter("critical", Priority::CRITICAL);
    settle().await;
    drop(holder);
    low.await.unwrap();
    critical.await.unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["critical", "low"]);
}

// Item 7: dispatch read the free units and subtracted separately, racing
// the lock-free fast path. Several OS threads, each on its own runtime,
// mix tracked leases (queued when busy) and the layer's per-request
// permits (fast path), and count the units they hold.
#[test]
fn units_held_never_exceed_the_capacity_under_contention() {
    const CAPACITY: u64 = 3;
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 10_000;
    let pool = ResourcePool::builder("slots")
        .capacity(CAPACITY)
        .max_queue(1_000)
        .queue_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let held = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let hold = {
        let (held, most) = (held.clone(), most.clone());
        move |units: u64| {
            let now = held.fetch_add(units, Ordering::SeqCst) + units;
            most.fetch_max(now, Ordering::SeqCst);
            for _ in 0..(now * 16) {
                std::hint::spin_loop();
            }
            held.fetch_sub(units, Ordering::SeqCst);
        }
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (pool, hold) = (pool.clone(), hold.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let units = 1 + thread % 2;
                    if thread % 3 == 0 {
                        for _ in 0..ROUNDS {
                            let lease = pool
                                .acquire(Acquire::new("lease").units(units))
                                .await
                                .unwrap();
                            hold(units);
                            drop(lease);
                        }
                    } else {
                        let mut svc = ResourceLimitLayer::new(pool.clone())
                            .cost(move |_: &u64| units)
                            .priority(|_: &u64| Priority::NORMAL)
                            .layer(service_fn(move |_: u64| {
                                let hold = hold.clone();
                                async move {
                                    hold(units);
                                    Ok::<_, BoxError>(())
                                }
                            }));
                        for n in 0..ROUNDS {
                            svc.ready().await.unwrap().call(n).await.unwrap();
                        }
                    }
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        most.load(Ordering::SeqCst) <= CAPACITY,
        "{} units held at once, capacity {CAPACITY}",
        most.load(Ordering::SeqCst)
    );
    let stats = pool.stats();
    assert_eq!((stats.available, stats.queued), (CAPACITY, 0), "{stats:?}");
}

// Item 8: every release sorted every waiter under the pool's lock. Here
// 20,000 waiters are served one by one; sorting on each grant makes this
// take minutes, a per-priority queue milliseconds.
#[tokio::test(start_paused = true)]
async fn serving_a_long_queue_costs_the_same_per_grant() {
    const WAITERS: usize = 20_000;
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .max_queue(WAITERS)
        .aging(Duration::from_secs(1))
        .queue_timeout(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let holder = pool.acquire(Acquire::new("holder")).await.unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut waiters: Vec<_> = (0..WAITERS)
        .map(|n| {
            let priority = Priority((n % 3) as u8);
            Some(Box::pin(
                pool.acquire(Acquire::new("waiter").priority(priority)),
            ))
        })
        .collect();
    for waiter in waiters.iter_mut().flatten() {
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(pool.stats().queued, WAITERS);
    let started = std::time::Instant::now();
    drop(holder);
    let mut served = 0;
    // Each grant goes to the best waiter, which is polled and released,
    // granting the next; a round of polls serves many.
    while served < WAITERS {
        let before = served;
        for (n, slot) in waiters.iter_mut().enumerate() {
            if n % 1_000 == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "served {served} of {WAITERS} in 20 s"
                );
            }
            let Some(waiter) = slot else { continue };
            if let Poll::Ready(lease) = waiter.as_mut().poll(&mut cx) {
                drop(lease.unwrap());
                *slot = None;
                served += 1;
            }
        }
        assert!(served > before, "a grant was made on every release");
    }
    assert_eq!(pool.stats().queued, 0);
    assert_eq!(pool.stats().available, 1);
}

// Item 8: the queue bound itself is bounded.
#[test]
fn max_queue_is_refused_above_its_maximum() {
    let err = ResourcePool::builder("slots")
        .capacity(1)
        .max_queue(ResourcePool::MAX_QUEUE + 1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_queue");
    assert!(err.to_string().contains("1,000,000"), "{err}");
    ResourcePool::builder("slots")
        .capacity(1)
        .max_queue(ResourcePool::MAX_QUEUE)
        .build()
        .unwrap();
    let err = ResourcePool::builder("slots")
        .capacity(u64::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "capacity");
}

// Item 8: a waiter larger than a shrunk pool would block the queue until
// its timeout; it is refused at once.
#[tokio::test(start_paused = true)]
async fn a_waiter_larger_than_the_shrunk_pool_is_refused_not_left_blocking() {
    let pool = ResourcePool::builder("bytes")
        .capacity(10)
        .queue_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let holder = pool
        .acquire(Acquire::new("holder").units(10))
        .await
        .unwrap();
    let big = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(Acquire::new("big").units(8)).await.map(drop) }
    });
    let small = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(Acquire::new("small").units(2)).await.map(drop) }
    });
    settle().await;
    pool.set_capacity(4);
    let err = big.await.unwrap().unwrap_err();
    assert!(err.is::<Unsatisfiable>(), "{err}");
    drop(holder);
    small.await.unwrap().unwrap();
    assert_eq!(pool.stats().available, 4);
}

// Item 10: `Instant + Duration::MAX` panicked when a lease was granted.
#[tokio::test(start_paused = true)]
async fn durations_the_clock_cannot_hold_mean_never() {
    let pool = ResourcePool::builder("slots")
        .capacity(1)
        .lease_ttl(Duration::MAX)
        .queue_timeout(Duration::MAX)
        .aging(Duration::MAX)
        .build()
        .unwrap();
    let lease = pool.acquire(Acquire::new("a")).await.unwrap();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.acquire(Acquire::new("b").priority(Priority::LOW))
                .await
        }
    });
    settle().await;
    tokio::time::advance(Duration::from_secs(10 * 365 * 24 * 3_600)).await;
    settle().await;
    assert!(
        !lease.is_reclaimed(),
        "a lease with an endless TTL never expires"
    );
    assert_eq!(
        pool.stats().queued,
        1,
        "an endless queue timeout never fires"
    );
    drop(lease);
    let lease = waiting.await.unwrap().unwrap();
    assert!(!lease.is_reclaimed());

    // Through the layer too.
    let svc = ResourceLimitLayer::new(pool.clone())
        .priority(|_: &u32| Priority::NORMAL)
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    drop(lease);
    assert_eq!(svc.oneshot(1).await.unwrap(), 1);
}
