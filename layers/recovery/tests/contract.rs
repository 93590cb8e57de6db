//! The contract every tower-hardening layer keeps, checked for retry and
//! recover: rejections are never retried, one classifier value serves
//! both, metric handles are registered at build and every name emitted is
//! in `names::ALL`, and durations near `Duration::MAX` never panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_core::{
    BoxError, CircuitOpen, Outcome, Overloaded, PoolClosed, QueueTimeout, Recovering,
    RecoveryFailed, Unsatisfiable, names,
};
use tower_hardening_recovery::{Backoff, Jitter, Recover, RecoverState, RetryBudget, RetryLayer};

/// An error that wraps another, as tower's `Buffer` does.
#[derive(Debug)]
struct Wrapped(BoxError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wrapped")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

// Every rejection kind core knows, the new ones included, and one wrapped
// in another error: returned at once, never retried.
#[tokio::test(start_paused = true)]
async fn no_rejection_is_ever_retried() {
    let rejections: Vec<fn() -> BoxError> = vec![
        || CircuitOpen::new("b").into(),
        || Overloaded::new("p").into(),
        || QueueTimeout::new("p", Duration::from_secs(1)).into(),
        || Recovering::new("s", 1).into(),
        || RecoveryFailed::new("s", 3, "refused").into(),
        || PoolClosed::new("p").into(),
        || Unsatisfiable::new("p", "asks for 9 units of 8").into(),
        || Box::new(Wrapped(PoolClosed::new("p").into())),
    ];
    for make in rejections {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let layer = RetryLayer::builder()
            .max_attempts(5)
            .without_budget()
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = layer.layer(service_fn(move |_: u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Err::<u32, BoxError>(make()) }
        }));
        let err = svc.oneshot(1).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{err} was retried");
        assert_eq!(handle.stats().retries, 0);
    }
}

/// Fails while `failing` says so; otherwise answers `x`.
#[derive(Clone)]
struct Model {
    failing: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

impl Service<u32> for Model {
    type Response = u32;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<u32, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) > 0 {
            self.failing.fetch_sub(1, Ordering::SeqCst);
            return std::future::ready(Err(std::io::Error::other("model error")));
        }
        std::future::ready(Ok(x))
    }
}

// One classifier value, `Result<Res, BoxError>`, written once and given to
// both layers: answers of 0 are failures to both.
#[tokio::test(start_paused = true)]
async fn one_classifier_value_serves_retry_and_recover() {
    let classifier = |result: &Result<u32, BoxError>| match result {
        Ok(0) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    };
    let failing = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let built = Arc::new(AtomicU32::new(0));
    let model = Model {
        failing: failing.clone(),
        calls: calls.clone(),
    };
    let counted = built.clone();
    let (handle, recover) = Recover::builder()
        .classifier(classifier)
        .after_consecutive_failures(3)
        .build(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, std::io::Error>(model.clone()))
        })
        .unwrap();
    let retry = RetryLayer::builder()
        .classifier(classifier)
        .max_attempts(3)
        .jitter(Jitter::None)
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .without_budget()
        .build()
        .unwrap();
    let retry_handle = retry.handle();
    let mut svc = retry.layer(recover);
    // Starts the build; Recovering is a rejection, so retry gives up at once.
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<Recovering>(), "{err}");
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), RecoverState::Ready);

    // `Ok(0)` is a failure to retry (3 attempts) and to recover (3 in a
    // row: rebuild).
    let answer = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(answer, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(retry_handle.stats().retries, 2);
    tokio::task::yield_now().await;
    assert_eq!(handle.stats().rebuilds, 1);
    assert_eq!(built.load(Ordering::SeqCst), 2);
}

// Metric handles are registered when the layer (or service) is built: a
// recorder in force only around the build still gets every count, and
// every name either emits is in `names::ALL`.
#[tokio::test(start_paused = true)]
async fn every_metric_is_registered_at_build_and_named_in_all() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let failures = Arc::new(AtomicU32::new(2));
    let (retry, give_up, (handle, mut recover)) = metrics::with_local_recorder(&recorder, || {
        let retry = RetryLayer::builder()
            .name("model-inference")
            .max_attempts(2)
            .backoff(Backoff::constant(Duration::from_millis(1)))
            .budget(RetryBudget::new(Duration::from_secs(1), 0, 0.0))
            .build()
            .unwrap();
        let give_up = RetryLayer::builder()
            .name("model-inference")
            .max_attempts(2)
            .without_budget()
            .backoff(Backoff::constant(Duration::from_millis(1)))
            .build()
            .unwrap();
        let failures = failures.clone();
        let recover = Recover::builder()
            .name("model-inference")
            .backoff(Backoff::constant(Duration::from_millis(1)))
            .build(move || {
                let fail = failures.load(Ordering::SeqCst) > 0;
                if fail {
                    failures.fetch_sub(1, Ordering::SeqCst);
                }
                std::future::ready(if fail {
                    Err(std::io::Error::other("down"))
                } else {
                    Ok(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }))
                })
            })
            .unwrap();
        (retry, give_up, recover)
    });
    // Everything below runs outside the recorder's scope.
    let failing = || service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    retry.layer(failing()).oneshot(1).await.unwrap_err(); // budget empty
    give_up.layer(failing()).oneshot(1).await.unwrap_err(); // retries, gives up
    let _ = recover.ready().await.unwrap().call(1).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(handle.state(), RecoverState::Ready);

    let snapshot = snapshotter.snapshot().into_vec();
    let count = |name: &str, result: Option<&str>| -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .filter(|(key, ..)| {
                result.is_none_or(|r| {
                    key.key()
                        .labels()
                        .any(|l| l.key() == names::LABEL_RESULT && l.value() == r)
                })
            })
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    };
    for (key, ..) in &snapshot {
        let name = key.key().name();
        assert!(names::ALL.contains(&name), "{name} is not in names::ALL");
        assert!(
            key.key()
                .labels()
                .any(|l| l.key() == names::LABEL_SERVICE && l.value() == "model-inference"),
            "{key:?}"
        );
    }
    assert_eq!(count(names::RETRY_BUDGET_EXHAUSTED_TOTAL, None), 1);
    assert_eq!(count(names::RETRIES_TOTAL, None), 1);
    assert_eq!(count(names::RETRY_GAVE_UP_TOTAL, None), 1);
    assert_eq!(count(names::RECOVERY_ATTEMPTS_TOTAL, Some("failure")), 2);
    assert_eq!(count(names::RECOVERY_ATTEMPTS_TOTAL, Some("success")), 1);
}

// 10: durations near Duration::MAX never panic in retry.
#[tokio::test(start_paused = true)]
async fn huge_backoffs_never_panic() {
    let layer = RetryLayer::builder()
        .max_attempts(u32::MAX)
        .backoff(Backoff::constant(Duration::MAX))
        .build()
        .unwrap();
    assert_eq!(layer.handle().max_total_backoff(), Duration::MAX);
    let layer = RetryLayer::builder()
        .max_attempts(u32::MAX)
        .backoff(Backoff::exponential(Duration::from_nanos(1), Duration::MAX))
        .build()
        .unwrap();
    assert_eq!(layer.handle().max_total_backoff(), Duration::MAX);

    for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let layer = RetryLayer::builder()
            .max_attempts(3)
            .jitter(jitter)
            .without_budget()
            .backoff(Backoff::exponential(Duration::MAX, Duration::MAX))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(move |_: u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err::<u32, BoxError>("down".into()) }
        }));
        let waited = tokio::time::timeout(Duration::from_secs(3_600), svc.oneshot(1)).await;
        // Full jitter may draw a short wait; otherwise the wait never ends.
        if jitter != Jitter::Full {
            assert!(waited.is_err(), "{jitter:?}: the backoff never ends");
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }
}
