//! Retry behaviours with the numbers from the issue, on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, CircuitOpen};
use tower_hardening_core::{Event, EventKind, EventSink, Outcome};
use tower_hardening_recovery::{Backoff, Jitter, RetryBudget, RetryLayer};

#[derive(Debug)]
struct Flaky;

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flaky")
    }
}

impl std::error::Error for Flaky {}

/// Fails the first `failures` calls, then succeeds; counts calls.
fn fails_first(
    failures: u32,
    calls: Arc<AtomicU32>,
) -> impl Service<u32, Response = u32, Error = Flaky, Future: Send> + Clone {
    service_fn(move |x: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { if n < failures { Err(Flaky) } else { Ok(x) } }
    })
}

// 1.
#[tokio::test(start_paused = true)]
async fn two_failures_then_success_takes_three_attempts_and_the_backoff() {
    for (jitter, low, high) in [
        (Jitter::None, 150, 150),
        (Jitter::Full, 0, 150),
        (Jitter::Equal, 75, 150),
    ] {
        let calls = Arc::new(AtomicU32::new(0));
        let layer = RetryLayer::builder()
            .max_attempts(3)
            .backoff(Backoff::exponential(
                Duration::from_millis(50),
                Duration::from_secs(2),
            ))
            .jitter(jitter)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(fails_first(2, calls.clone()));
        let start = Instant::now();
        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(7)
            .await
            .expect("third attempt succeeds");
        let waited = start.elapsed();
        assert_eq!(answer, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Waits: 50 ms then 100 ms before jitter.
        assert!(
            waited >= Duration::from_millis(low) && waited <= Duration::from_millis(high),
            "{jitter:?}: waited {waited:?}, expected {low}..={high} ms"
        );
        let stats = handle.stats();
        assert_eq!((stats.attempts, stats.retries, stats.gave_up), (3, 2, 0));
        assert_eq!(handle.max_total_backoff(), Duration::from_millis(150));
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_gives_up_with_an_event() {
    let calls = Arc::new(AtomicU32::new(0));
    let sink = EventSink::new(16);
    let mut events = sink.subscribe();
    let layer = RetryLayer::builder()
        .name("model-inference")
        .max_attempts(3)
        .events(sink)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(fails_first(u32::MAX, calls.clone()));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<Flaky>(), "the last error is returned as it was");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(handle.stats().gave_up, 1);
    let event: Event = events.try_recv().unwrap();
    assert_eq!(event.service(), "model-inference");
    assert_eq!(
        event.kind(),
        &EventKind::RetryExhausted {
            attempts: 3,
            budget_exhausted: false
        }
    );
}

// 2.
#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_at_its_ratio() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::builder()
        .max_attempts(10)
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 0.2))
        .build()
        .unwrap();
    let handle = layer.handle();
    // Clones share the budget.
    let svc = layer.layer(fails_first(u32::MAX, calls.clone()));
    for _ in 0..1_000 {
        let mut svc = svc.clone();
        svc.ready().await.unwrap().call(0).await.unwrap_err();
    }
    let stats = handle.stats();
    let retries = u64::from(calls.load(Ordering::SeqCst)) - 1_000;
    assert_eq!(retries, stats.retries);
    assert!(
        retries <= 220,
        "at most about 20% extra load: {retries} retries"
    );
    assert!(
        retries >= 180,
        "the budget allows about 200 retries: {retries}"
    );
    assert!(stats.budget_exhausted >= 780, "{stats:?}");
}

// 3.
#[tokio::test(start_paused = true)]
async fn a_circuit_open_rejection_is_returned_at_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let breaker = CircuitBreakerLayer::builder()
        .name("inner")
        .build()
        .unwrap();
    breaker.handle().force_open();
    let retry = RetryLayer::builder().max_attempts(5).build().unwrap();
    let handle = retry.handle();
    let mut svc = retry.layer(breaker.layer(fails_first(0, calls.clone())));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(start.elapsed(), Duration::ZERO, "no backoff was waited");
    assert_eq!(handle.stats().retries, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn ignored_results_and_non_idempotent_requests_are_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::builder()
        .classifier(|_: &Result<u32, tower_hardening_core::BoxError>| Outcome::Ignored)
        .build()
        .unwrap();
    let mut svc = layer.layer(fails_first(u32::MAX, calls.clone()));
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::builder()
        .idempotent(|x: &u32| x.is_multiple_of(2))
        .build()
        .unwrap();
    let mut svc = layer.layer(fails_first(u32::MAX, calls.clone()));
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "odd requests are not idempotent here"
    );
    svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "even ones get all three attempts"
    );
}

// 6.
#[tokio::test(start_paused = true)]
async fn cancelling_during_the_backoff_leaves_nothing_behind() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_secs(5)))
        .jitter(Jitter::None)
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 1.0))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(fails_first(u32::MAX, calls.clone()));
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let call = svc.ready().await.unwrap().call(1);
    // The first attempt fails and the retry waits 5 s; cancel at 1 s.
    let cancelled = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert!(cancelled.is_err(), "still in the backoff");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.stats().retries,
        1,
        "the retry was withdrawn from the budget once"
    );

    // Nothing runs on after the cancellation: no second attempt, no task.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().retries, 1);
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tasks_before
    );
    // The budget still works: one deposit left room for exactly one retry
    // at ratio 1.0; a fresh request deposits again.
    svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(handle.stats().retries, 2);
}

#[test]
fn bad_settings_name_the_setting() {
    let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(err.field(), "max_attempts");
    let err = RetryLayer::builder()
        .backoff(Backoff::exponential(
            Duration::from_secs(2),
            Duration::from_secs(1),
        ))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "backoff");
    let err = RetryLayer::builder()
        .budget(RetryBudget::new(Duration::from_millis(10), 1, 0.2))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "budget.ttl");
    let err = RetryLayer::builder()
        .budget(RetryBudget::new(Duration::from_secs(1), 1, -0.5))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("budget.ratio"), "{err}");
}

/// Retrying keeps what tower's `Retry` promised: a service that is `Send`
/// but not `Sync` (`BoxCloneService`) gives a `Send` service and `Send`
/// futures, as hyper and axum need.
#[tokio::test(start_paused = true)]
async fn a_send_but_not_sync_service_stays_send() {
    fn assert_send<T: Send>(value: T) -> T {
        value
    }
    let inner: tower::util::BoxCloneService<u32, u32, std::io::Error> =
        tower::util::BoxCloneService::new(service_fn(|x: u32| async move {
            Ok::<_, std::io::Error>(x)
        }));
    let mut svc = assert_send(RetryLayer::builder().build().unwrap().layer(inner));
    let future = assert_send(svc.ready().await.unwrap().call(3));
    assert_eq!(future.await.unwrap(), 3);
}

/// A panic in the service's `call` during a retry unwinds out of the
/// future's poll; polled again (under `catch_unwind`, say), the future
/// answers an error rather than hanging or panicking a second time.
#[tokio::test(start_paused = true)]
async fn a_future_polled_again_after_a_panic_below_answers_an_error() {
    use std::future::Future;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::{Context, Poll, Waker};

    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: u32| {
        if counter.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("the second attempt panics in call");
        }
        async { Err::<u32, _>(std::io::Error::other("down")) }
    });
    let mut svc = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .jitter(Jitter::None)
        .build()
        .unwrap()
        .layer(inner);
    let mut future = Box::pin(svc.ready().await.unwrap().call(1));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        future.as_mut().poll(&mut cx).is_pending(),
        "waiting to retry"
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    let unwound = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
    assert!(unwound.is_err(), "the panic passes through");
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Err(error)) => assert!(error.to_string().contains("after a panic")),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
