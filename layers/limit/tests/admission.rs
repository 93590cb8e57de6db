//! `ResourceLimitLayer` against the layers below it (issue 9, item 2):
//! admission comes before the inner readiness, and units come back on
//! completion, failure, cancellation and panic. On tokio's paused clock.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_core::{BoxError, CircuitOpen};
use tower_hardening_limit::{Priority, ResourceLimitLayer};

mod common;
use common::{gated, normal, pool, settle};

// Item 2: the queued future carried the inner service after `poll_ready`
// had reserved its permit, so queued requests held permits of the layers
// below (here tower's ConcurrencyLimit).
#[tokio::test(start_paused = true)]
async fn queued_requests_hold_no_permit_of_the_layers_below() {
    let pool = pool(1);
    let below = Arc::new(Semaphore::new(2));
    let gate = Arc::new(Semaphore::new(0));
    let svc = ResourceLimitLayer::new(pool.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(ConcurrencyLimit::with_semaphore(
            gated(gate.clone()),
            below.clone(),
        ));
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(n).await })
        })
        .collect();
    settle().await;
    let stats = pool.stats();
    assert_eq!(
        (stats.in_use, stats.queued),
        (1, 3),
        "one admitted, three queued"
    );
    assert_eq!(
        below.available_permits(),
        1,
        "only the admitted request holds a permit of the layer below"
    );
    gate.add_permits(4);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(below.available_permits(), 2);
    assert_eq!((pool.stats().in_use, pool.stats().queued), (0, 0));
}

/// A half-open breaker's shape: `probes` permits, reserved in `poll_ready`
/// and held until the call completes; a call without one fails with
/// `CircuitOpen`.
#[derive(Clone)]
struct HalfOpen {
    probes: Arc<AtomicUsize>,
    reserved: bool,
    gate: Arc<Semaphore>,
}

impl Service<u32> for HalfOpen {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !self.reserved {
            self.reserved = self
                .probes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u32) -> Self::Future {
        if !std::mem::take(&mut self.reserved) {
            return Box::pin(async { Err(CircuitOpen::new("dependency").into()) });
        }
        let (probes, gate) = (self.probes.clone(), self.gate.clone());
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            probes.fetch_add(1, Ordering::SeqCst);
            Ok(x)
        })
    }
}

// Item 2, with the numbers: limit -> breaker with 2 probe
// permits, capacity 1, 4 requests. Queued requests reserved probes they
// could not use, and 2 of the 4 got CircuitOpen while one probe ran.
#[tokio::test(start_paused = true)]
async fn queued_requests_do_not_eat_a_half_open_breakers_probes() {
    let pool = pool(1);
    let gate = Arc::new(Semaphore::new(0));
    let breaker = HalfOpen {
        probes: Arc::new(AtomicUsize::new(2)),
        reserved: false,
        gate: gate.clone(),
    };
    let svc = ResourceLimitLayer::new(pool.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(breaker.clone());
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let mut svc = svc.clone();
            tokio::spawn(async move { svc.ready().await?.call(n).await })
        })
        .collect();
    settle().await;
    assert_eq!(
        breaker.probes.load(Ordering::SeqCst),
        1,
        "one probe running, one free"
    );
    gate.add_permits(4);
    let mut open = 0;
    for task in tasks {
        if let Err(err) = task.await.unwrap() {
            assert!(err.is::<CircuitOpen>(), "{err}");
            open += 1;
        }
    }
    assert_eq!(open, 0, "every request ran as a probe in turn");
    assert_eq!(breaker.probes.load(Ordering::SeqCst), 2);
}

/// Ready never, or an error, or a panic, as told.
#[derive(Clone)]
struct Readiness(fn() -> Poll<Result<(), BoxError>>);

impl Service<u32> for Readiness {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        (self.0)()
    }

    fn call(&mut self, x: u32) -> Self::Future {
        std::future::ready(Ok(x))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_inner_readiness_is_returned_and_gives_the_units_back() {
    let pool = pool(1);
    let svc = ResourceLimitLayer::new(pool.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(Readiness(|| {
            Poll::Ready(Err("inner service broken".into()))
        }));
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "inner service broken");
    assert_eq!(pool.stats().in_use, 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_the_inner_service_gets_ready_gives_the_units_back() {
    let pool = pool(1);
    let never = Arc::new(Semaphore::new(0));
    let mut svc = ResourceLimitLayer::new(pool.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(ConcurrencyLimit::with_semaphore(
            gated(never.clone()),
            never,
        ));
    let ready = tokio::time::timeout(Duration::from_secs(1), svc.ready()).await;
    let ready = ready.expect("ready at once: admission comes before the inner readiness");
    let mut first = Box::pin(ready.unwrap().call(1));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        pool.stats().in_use,
        1,
        "admitted, waiting for the inner readiness"
    );
    let second = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    assert_eq!(pool.stats().queued, 1);
    drop(first);
    settle().await;
    assert_eq!(
        (pool.stats().in_use, pool.stats().queued),
        (1, 0),
        "the unit went to the queued request"
    );
    second.abort();
    let _ = second.await;
    assert_eq!(pool.stats().in_use, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panic_below_gives_the_units_back_where_it_happens() {
    let mut cx = Context::from_waker(Waker::noop());
    // In the inner readiness.
    let pool_a = pool(1);
    let mut svc = ResourceLimitLayer::new(pool_a.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(Readiness(|| panic!("inner poll_ready panics")));
    // Admitted at once, the request's clone is asked for readiness in
    // `call`: the panic passes there, and the unit comes back with it.
    assert!(catch_unwind(AssertUnwindSafe(|| svc.call(1))).is_err());
    assert_eq!(pool_a.stats().in_use, 0, "released at the panic");
    assert_eq!(pool_a.stats().available, 1, "and not twice");
    // Admitted after waiting, it is asked in the future: the same there.
    let held = pool_a
        .acquire(tower_hardening_limit::Acquire::new("t"))
        .await
        .unwrap();
    let mut future = Box::pin(svc.call(1));
    drop(held);
    assert!(catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))).is_err());
    assert_eq!(
        pool_a.stats().in_use,
        0,
        "released at the panic, future still alive"
    );
    drop(future);
    assert_eq!(pool_a.stats().available, 1, "and not twice");

    // In the inner response future.
    let pool_b = pool(1);
    let mut svc = ResourceLimitLayer::new(pool_b.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(service_fn(|_: u32| async {
            panic!("inner future panics");
            #[allow(unreachable_code)]
            Ok::<u32, BoxError>(0)
        }));
    let mut future = Box::pin(svc.call(1));
    assert!(catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))).is_err());
    assert_eq!(pool_b.stats().in_use, 0);
    drop(future);
    assert_eq!(pool_b.stats().available, 1);
}

#[tokio::test(start_paused = true)]
async fn the_service_gives_access_to_what_it_wraps() {
    let pool = pool(1);
    let mut svc = ResourceLimitLayer::new(pool)
        .priority(normal as fn(&u32) -> Priority)
        .layer(Readiness(|| Poll::Ready(Ok(()))));
    assert!(matches!(svc.get_ref().0(), Poll::Ready(Ok(()))));
    svc.get_mut().0 = || Poll::Pending;
    let inner = svc.into_inner();
    assert!(inner.0().is_pending());
}

/// A service whose readiness failed is not used again (tower's contract):
/// here one that would panic if asked twice, as tower's `FutureService`
/// does once its future has failed. The next request gets a copy of the
/// never-polled service.
#[derive(Clone)]
struct FailsOnce {
    failed_already: Arc<AtomicUsize>,
    used_up: bool,
}

impl Service<u32> for FailsOnce {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        assert!(
            !self.used_up,
            "a service whose readiness failed was asked again"
        );
        if self.failed_already.fetch_add(1, Ordering::SeqCst) == 0 {
            self.used_up = true;
            return Poll::Ready(Err("not connected".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u32) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_whose_readiness_failed_is_replaced_not_asked_again() {
    let pool = pool(4);
    let mut svc = ResourceLimitLayer::new(pool.clone())
        .priority(normal as fn(&u32) -> Priority)
        .layer(FailsOnce {
            failed_already: Arc::new(AtomicUsize::new(0)),
            used_up: false,
        });
    let error = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(error.to_string().contains("not connected"));
    assert_eq!(pool.stats().in_use, 0, "the units came back at once");
    for n in 2..10 {
        assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    assert_eq!(pool.stats().in_use, 0);
}
