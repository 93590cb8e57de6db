//! Recover: lazy build, rebuild with backoff, fail fast meanwhile; hung
//! and panicking factories; trigger; retry hints; huge durations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_hardening_core::{EventKind, EventSink, Recovering, RecoveryStep};
use tower_hardening_recovery::{Backoff, Recover, RecoverState, RecoveryFailed};

/// A model client that can be broken from outside.
#[derive(Clone)]
struct Model {
    broken: Arc<AtomicBool>,
    fail_calls: Arc<AtomicBool>,
    id: u32,
}

impl Service<u32> for Model {
    type Response = (u32, u32);
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<(u32, u32), std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.broken.load(Ordering::SeqCst) {
            Poll::Ready(Err(std::io::Error::other("connection lost")))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, x: u32) -> Self::Future {
        if self.fail_calls.load(Ordering::SeqCst) {
            std::future::ready(Err(std::io::Error::other("bad answer")))
        } else {
            std::future::ready(Ok((self.id, x)))
        }
    }
}

struct Fixture {
    built: Arc<AtomicU32>,
    fail_builds: Arc<AtomicU32>,
    broken: Arc<AtomicBool>,
    fail_calls: Arc<AtomicBool>,
}

impl Fixture {
    fn new(fail_builds: u32) -> Self {
        Fixture {
            built: Arc::new(AtomicU32::new(0)),
            fail_builds: Arc::new(AtomicU32::new(fail_builds)),
            broken: Arc::new(AtomicBool::new(false)),
            fail_calls: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A factory that fails while `fail_builds` > 0, then builds `Model`s
    /// numbered from 1.
    fn factory(
        &self,
    ) -> impl Fn() -> std::future::Ready<Result<Model, std::io::Error>> + Send + Sync + 'static
    {
        let (built, fail_builds, broken, fail_calls) = (
            self.built.clone(),
            self.fail_builds.clone(),
            self.broken.clone(),
            self.fail_calls.clone(),
        );
        move || {
            if fail_builds.load(Ordering::SeqCst) > 0 {
                fail_builds.fetch_sub(1, Ordering::SeqCst);
                return std::future::ready(Err(std::io::Error::other("model backend down")));
            }
            broken.store(false, Ordering::SeqCst);
            let id = built.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(Ok(Model {
                broken: broken.clone(),
                fail_calls: fail_calls.clone(),
                id,
            }))
        }
    }
}

async fn call<S: Service<u32, Error = tower_hardening_core::BoxError>>(
    svc: &mut S,
    x: u32,
) -> Result<S::Response, tower_hardening_core::BoxError> {
    svc.ready().await?.call(x).await
}

// 5.
#[tokio::test(start_paused = true)]
async fn three_failed_builds_then_success() {
    let fixture = Fixture::new(3);
    let sink = EventSink::new(64);
    let mut events = sink.subscribe();
    let (handle, mut svc) = Recover::builder()
        .name("model-inference")
        .max_attempts(5)
        .backoff(Backoff::exponential(
            Duration::from_millis(100),
            Duration::from_secs(10),
        ))
        .events(sink)
        .build(fixture.factory())
        .unwrap();
    assert_eq!(handle.state(), RecoverState::Idle, "built lazily");

    // Calls while building fail fast, at once, with Recovering.
    let start = Instant::now();
    for _ in 0..5 {
        let err = call(&mut svc, 1).await.unwrap_err();
        let recovering = err.downcast_ref::<Recovering>().expect("Recovering");
        assert_eq!(recovering.name(), "model-inference");
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() < Duration::from_millis(300));
    // Backoff after failures 1, 2, 3: 100 + 200 + 400 ms.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(handle.state(), RecoverState::Ready);
    assert_eq!(call(&mut svc, 7).await.unwrap(), (1, 7));

    let stats = handle.stats();
    assert_eq!((stats.attempts, stats.failures, stats.successes), (4, 3, 1));
    let steps: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e.kind() {
            EventKind::RecoveryStep { attempt, step } => Some((*attempt, step.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps.len(),
        8,
        "started + outcome for each of 4 attempts: {steps:?}"
    );
    assert_eq!(steps[7], (4, RecoveryStep::Succeeded));
}

#[tokio::test(start_paused = true)]
async fn a_failed_poll_ready_rebuilds_the_service() {
    let fixture = Fixture::new(0);
    let (handle, mut svc) = Recover::builder().build(fixture.factory()).unwrap();
    let _ = call(&mut svc, 0).await; // starts the first build
    tokio::task::yield_now().await;
    assert_eq!(call(&mut svc, 1).await.unwrap(), (1, 1));

    fixture.broken.store(true, Ordering::SeqCst);
    let err = call(&mut svc, 2).await.unwrap_err();
    let recovering = err.downcast_ref::<Recovering>().expect("Recovering");
    assert_eq!(recovering.attempt(), 1);
    assert_eq!(
        recovering.retry_after(),
        Some(Duration::from_millis(100)),
        "the attempt under way may fail: then the next one is a backoff away"
    );
    tokio::task::yield_now().await;
    assert_eq!(
        call(&mut svc, 3).await.unwrap(),
        (2, 3),
        "a new service, number 2"
    );
    assert_eq!(handle.stats().rebuilds, 1);

    // Other clones pick up the new service too.
    let mut other = svc.clone();
    assert_eq!(call(&mut other, 4).await.unwrap(), (2, 4));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failed_calls_trigger_a_rebuild() {
    let fixture = Fixture::new(0);
    let (handle, mut svc) = Recover::builder()
        .after_consecutive_failures(3)
        .build(fixture.factory())
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::task::yield_now().await;
    fixture.fail_calls.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(
            call(&mut svc, 1)
                .await
                .unwrap_err()
                .to_string()
                .contains("bad answer")
        );
    }
    fixture.fail_calls.store(false, Ordering::SeqCst);
    tokio::task::yield_now().await;
    assert_eq!(call(&mut svc, 5).await.unwrap(), (2, 5));
    assert_eq!(handle.stats().rebuilds, 1);
}

#[tokio::test(start_paused = true)]
async fn after_every_attempt_fails_calls_fail_until_triggered() {
    let fixture = Fixture::new(10);
    let (handle, mut svc) = Recover::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .build(fixture.factory())
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let RecoverState::Failed {
        attempts,
        last_error,
    } = handle.state()
    else {
        panic!("expected Failed, got {:?}", handle.state());
    };
    assert_eq!(attempts, 2);
    assert_eq!(&*last_error, "model backend down");
    let err = call(&mut svc, 1).await.unwrap_err();
    let failed = err
        .downcast_ref::<RecoveryFailed>()
        .expect("RecoveryFailed");
    assert!(failed.to_string().contains("trigger"), "{failed}");

    fixture.fail_builds.store(0, Ordering::SeqCst);
    handle.trigger();
    tokio::task::yield_now().await;
    assert_eq!(call(&mut svc, 9).await.unwrap(), (1, 9));
}

#[test]
fn bad_settings_name_the_setting() {
    let fixture = Fixture::new(0);
    let err = Recover::builder()
        .max_attempts(0)
        .build(fixture.factory())
        .unwrap_err();
    assert_eq!(err.field(), "max_attempts");
    let err = Recover::builder()
        .after_consecutive_failures(0)
        .build(fixture.factory())
        .unwrap_err();
    assert_eq!(err.field(), "after_consecutive_failures");
    // 6.
    let err = Recover::builder()
        .attempt_timeout(Duration::ZERO)
        .build(fixture.factory())
        .unwrap_err();
    assert_eq!(err.field(), "attempt_timeout");
}

#[test]
fn without_a_runtime_calls_fail_instead_of_panicking() {
    let fixture = Fixture::new(0);
    let (handle, mut svc) = Recover::builder().build(fixture.factory()).unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = std::pin::pin!(svc.call(1));
    let Poll::Ready(Err(err)) = future.as_mut().poll(&mut cx) else {
        panic!("expected an error at once");
    };
    assert!(err.to_string().contains("no tokio runtime"), "{err}");
    assert!(matches!(handle.state(), RecoverState::Failed { .. }));
}

/// A factory whose `n`th call (from 0) does what `plan(n)` says.
#[derive(Clone, Copy, Debug)]
enum Build {
    Ok,
    Fail,
    Hang,
    PanicAtCall,
    PanicWhenPolled,
}

fn planned(
    plan: &'static [Build],
    calls: Arc<AtomicU32>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Model, std::io::Error>> + Send>>
+ Send
+ Sync
+ 'static {
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let step = plan.get(n as usize).copied().unwrap_or(Build::Ok);
        let model = Model {
            broken: Arc::new(AtomicBool::new(false)),
            fail_calls: Arc::new(AtomicBool::new(false)),
            id: n + 1,
        };
        match step {
            Build::Ok => Box::pin(async move { Ok(model) }),
            Build::Fail => Box::pin(async { Err(std::io::Error::other("refused")) }),
            Build::Hang => Box::pin(std::future::pending()),
            Build::PanicAtCall => panic!("factory call {n} panics"),
            Build::PanicWhenPolled => Box::pin(async move {
                tokio::task::yield_now().await;
                panic!("factory future {n} panics")
            }),
        }
    }
}

use std::future::Future;

// 6: a factory that never finishes is cut off by the attempt timeout, and
// the backoff goes on to the next attempt.
#[tokio::test(start_paused = true)]
async fn a_hung_attempt_times_out_and_the_next_one_runs() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .attempt_timeout(Duration::from_secs(2))
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .build(planned(&[Build::Hang], calls.clone()))
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.state(), RecoverState::Rebuilding { attempt: 1 });
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(handle.state(), RecoverState::Ready, "{:?}", handle.stats());
    assert_eq!(call(&mut svc, 5).await.unwrap(), (2, 5));
    let stats = handle.stats();
    assert_eq!((stats.attempts, stats.failures, stats.successes), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_timeout_error_names_the_timeout() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .max_attempts(1)
        .attempt_timeout(Duration::from_secs(2))
        .build(planned(&[Build::Hang], calls))
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let RecoverState::Failed { last_error, .. } = handle.state() else {
        panic!("expected Failed, got {:?}", handle.state());
    };
    assert!(last_error.contains("timed out after 2s"), "{last_error}");
}

// 6: a factory that panics, in the call or in its future, is a failed
// attempt; the backoff goes on and the third attempt succeeds.
#[tokio::test(start_paused = true)]
async fn a_panicking_factory_is_a_failed_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let sink = EventSink::new(64);
    let mut events = sink.subscribe();
    let (handle, mut svc) = Recover::builder()
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .events(sink)
        .build(planned(
            &[Build::PanicAtCall, Build::PanicWhenPolled],
            calls.clone(),
        ))
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(handle.state(), RecoverState::Ready);
    assert_eq!(call(&mut svc, 4).await.unwrap(), (3, 4));
    let stats = handle.stats();
    assert_eq!((stats.attempts, stats.failures, stats.successes), (3, 2, 1));
    let errors: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e.kind() {
            EventKind::RecoveryStep {
                step: RecoveryStep::Failed { error, .. },
                ..
            } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("factory call 0 panics"), "{errors:?}");
    assert!(errors[1].contains("factory future 1 panics"), "{errors:?}");
}

// 6: trigger() cancels an attempt that hangs (well before its timeout) and
// starts over.
#[tokio::test(start_paused = true)]
async fn trigger_cancels_a_hung_attempt_and_starts_again() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .build(planned(&[Build::Hang], calls.clone()))
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.state(), RecoverState::Rebuilding { attempt: 1 });

    handle.trigger();
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), RecoverState::Ready);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(call(&mut svc, 3).await.unwrap(), (2, 3));

    // The cancelled run changes nothing later, when its timeout would
    // have passed.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(handle.state(), RecoverState::Ready);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(handle.stats().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn trigger_during_the_backoff_starts_the_next_attempt_now() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .backoff(Backoff::constant(Duration::from_secs(60)))
        .build(planned(&[Build::Fail], calls.clone()))
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.state(), RecoverState::Rebuilding { attempt: 1 });
    handle.trigger();
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), RecoverState::Ready);
    assert_eq!(call(&mut svc, 1).await.unwrap(), (2, 1));
}

// Contract: Recovering carries the time to the next attempt, never zero.
#[tokio::test(start_paused = true)]
async fn recovering_carries_the_time_to_the_next_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let (_handle, mut svc) = Recover::builder()
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .build(planned(&[Build::Fail], calls))
        .unwrap();
    let first = call(&mut svc, 0).await.unwrap_err();
    let first = first.downcast_ref::<Recovering>().unwrap();
    assert_eq!(first.retry_after(), Some(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let err = call(&mut svc, 0).await.unwrap_err();
    let recovering = err.downcast_ref::<Recovering>().expect("Recovering");
    assert_eq!(recovering.retry_after(), Some(Duration::from_millis(750)));
    // At the very moment of the next attempt, the hint is still not zero.
    tokio::time::sleep(Duration::from_millis(750)).await;
    let err = call(&mut svc, 0).await;
    if let Err(err) = err {
        let hint = err.downcast_ref::<Recovering>().unwrap().retry_after();
        assert!(hint.is_some_and(|h| !h.is_zero()), "{hint:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_zero_backoff_still_gives_a_non_zero_hint() {
    let calls = Arc::new(AtomicU32::new(0));
    let (_handle, mut svc) = Recover::builder()
        .backoff(Backoff::constant(Duration::ZERO))
        .build(planned(&[Build::Hang], calls))
        .unwrap();
    let err = call(&mut svc, 0).await.unwrap_err();
    let hint = err.downcast_ref::<Recovering>().unwrap().retry_after();
    assert_eq!(hint, Some(Duration::from_millis(1)));
}

// 10: durations near Duration::MAX never panic.
#[tokio::test(start_paused = true)]
async fn huge_durations_never_panic() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .attempt_timeout(Duration::MAX)
        .backoff(Backoff::exponential(Duration::MAX, Duration::MAX))
        .build(planned(&[Build::Fail], calls.clone()))
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(
        handle.state(),
        RecoverState::Rebuilding { attempt: 1 },
        "waiting a backoff that never ends"
    );
    let err = call(&mut svc, 0).await.unwrap_err();
    let hint = err.downcast_ref::<Recovering>().unwrap().retry_after();
    assert!(
        hint.is_some_and(|h| h > Duration::from_secs(86_400 * 365)),
        "{hint:?}"
    );
    // trigger still starts over.
    handle.trigger();
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), RecoverState::Ready);
}

// 6: the guard: a run whose task is dropped (its runtime shut down) leaves
// the service Failed, not Rebuilding for ever, and trigger() recovers it.
#[test]
fn a_run_dropped_with_its_runtime_leaves_the_service_failed() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .build(planned(&[Build::Hang], calls))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = call(&mut svc, 0).await;
        tokio::task::yield_now().await;
    });
    assert_eq!(handle.state(), RecoverState::Rebuilding { attempt: 1 });
    drop(runtime);
    let RecoverState::Failed { last_error, .. } = handle.state() else {
        panic!("expected Failed, got {:?}", handle.state());
    };
    assert!(last_error.contains("stopped"), "{last_error}");
    assert_eq!(handle.stats().failures, 1);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        handle.trigger();
        tokio::task::yield_now().await;
        assert_eq!(handle.state(), RecoverState::Ready);
    });
}

// 6: a run whose task was dropped before it ever ran leaves no
// `Rebuilding` behind either.
#[test]
fn a_run_dropped_before_it_ran_leaves_the_service_failed() {
    let calls = Arc::new(AtomicU32::new(0));
    let (handle, mut svc) = Recover::builder()
        .build(planned(&[], calls.clone()))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Starts the run; the task is spawned but never polled.
        let _ = call(&mut svc, 0).await;
    });
    drop(runtime);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the factory never ran");
    assert!(
        matches!(handle.state(), RecoverState::Failed { .. }),
        "{:?}",
        handle.state()
    );
}

// Contract: one classifier value, `Result<Res, BoxError>`, decides which
// calls count towards `after_consecutive_failures`; rejections never do.
#[tokio::test(start_paused = true)]
async fn the_classifier_decides_which_calls_failed() {
    let fixture = Fixture::new(0);
    // Answers for 13 are wrong, whatever the status says.
    let classifier = |result: &Result<(u32, u32), tower_hardening_core::BoxError>| match result {
        Ok((_, 13)) | Err(_) => tower_hardening_core::Outcome::Failure,
        Ok((_, 0)) => tower_hardening_core::Outcome::Ignored,
        Ok(_) => tower_hardening_core::Outcome::Success,
    };
    let (handle, mut svc) = Recover::builder()
        .after_consecutive_failures(2)
        .classifier(classifier)
        .build(fixture.factory())
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::task::yield_now().await;
    assert_eq!(call(&mut svc, 13).await.unwrap(), (1, 13));
    assert_eq!(
        call(&mut svc, 0).await.unwrap(),
        (1, 0),
        "ignored: no reset"
    );
    assert_eq!(call(&mut svc, 13).await.unwrap(), (1, 13));
    tokio::task::yield_now().await;
    assert_eq!(handle.stats().rebuilds, 1, "two classified failures");
    assert_eq!(call(&mut svc, 1).await.unwrap(), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_counts_as_a_failed_call() {
    #[derive(Clone)]
    struct Panics;
    impl Service<u32> for Panics {
        type Response = u32;
        type Error = std::io::Error;
        type Future = std::pin::Pin<Box<dyn Future<Output = Result<u32, std::io::Error>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: u32) -> Self::Future {
            Box::pin(async { panic!("inner service panics") })
        }
    }
    let (handle, mut svc) = Recover::builder()
        .after_consecutive_failures(1)
        .build(|| async { Ok::<_, std::io::Error>(Panics) })
        .unwrap();
    let _ = call(&mut svc, 0).await;
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), RecoverState::Ready);
    let future = svc.ready().await.unwrap().call(1);
    let caught = tokio::spawn(future).await;
    assert!(caught.unwrap_err().is_panic());
    assert_eq!(handle.stats().rebuilds, 1, "the panic was a failed call");
}
