//! RecoverLayer: lazy build, rebuild with backoff, fail fast meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_hardening_core::{EventKind, EventSink, Recovering, RecoveryStep};
use tower_hardening_recovery::{Backoff, RecoverLayer, RecoverState, RecoveryFailed};

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
    let (handle, mut svc) = RecoverLayer::new(fixture.factory())
        .name("model-inference")
        .max_attempts(5)
        .backoff(Backoff::exponential(
            Duration::from_millis(100),
            Duration::from_secs(10),
        ))
        .events(sink)
        .service()
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
    let (handle, mut svc) = RecoverLayer::new(fixture.factory()).service().unwrap();
    let _ = call(&mut svc, 0).await; // starts the first build
    tokio::task::yield_now().await;
    assert_eq!(call(&mut svc, 1).await.unwrap(), (1, 1));

    fixture.broken.store(true, Ordering::SeqCst);
    let err = call(&mut svc, 2).await.unwrap_err();
    assert!(err.is::<Recovering>(), "{err}");
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
    let (handle, mut svc) = RecoverLayer::new(fixture.factory())
        .after_consecutive_failures(3)
        .service()
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
    let (handle, mut svc) = RecoverLayer::new(fixture.factory())
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .service()
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
    let err = RecoverLayer::new(fixture.factory())
        .max_attempts(0)
        .service()
        .unwrap_err();
    assert_eq!(err.field(), "max_attempts");
    let err = RecoverLayer::new(fixture.factory())
        .after_consecutive_failures(0)
        .service()
        .unwrap_err();
    assert_eq!(err.field(), "after_consecutive_failures");
}

#[test]
fn without_a_runtime_calls_fail_instead_of_panicking() {
    let fixture = Fixture::new(0);
    let (handle, mut svc) = RecoverLayer::new(fixture.factory()).service().unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = std::pin::pin!(svc.call(1));
    let Poll::Ready(Err(err)) = future.as_mut().poll(&mut cx) else {
        panic!("expected an error at once");
    };
    assert!(err.to_string().contains("no tokio runtime"), "{err}");
    assert!(matches!(handle.state(), RecoverState::Failed { .. }));
}
