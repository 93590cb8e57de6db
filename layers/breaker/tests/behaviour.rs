//! The behaviours users rely on, each with the numbers from the issue, on
//! tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{
    BreakerHandle, CircuitBreakerLayer, CircuitOpen, CircuitState, SlidingWindow,
};
use tower_hardening_core::{BoxError, Event, EventKind, EventSink, Outcome};

/// What the test inner service is told to do.
#[derive(Debug, Clone, Copy)]
enum Act {
    Succeed,
    Fail,
    /// Fails with an error the classifier marks `Ignored`.
    Ignore,
    /// Succeeds after this long.
    SucceedAfter(Duration),
    Panic,
}

#[derive(Debug)]
struct TestError(&'static str);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TestError {}

fn classify(result: &Result<(), BoxError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err(e) if matches!(e.downcast_ref(), Some(TestError("ignored"))) => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

type Inner = tower::util::BoxCloneSyncService<Act, (), TestError>;

/// An inner service that does what the request says and counts its calls.
fn inner(calls: Arc<AtomicUsize>) -> Inner {
    tower::util::BoxCloneSyncService::new(service_fn(move |act: Act| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match act {
                Act::Succeed => Ok(()),
                Act::Fail => Err(TestError("boom")),
                Act::Ignore => Err(TestError("ignored")),
                Act::SucceedAfter(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Act::Panic => panic!("inner service panicked"),
            }
        }
    }))
}

type Breaker = tower_hardening_breaker::CircuitBreaker<Inner, fn(&Result<(), BoxError>) -> Outcome>;

struct Setup {
    svc: Breaker,
    handle: BreakerHandle,
    calls: Arc<AtomicUsize>,
}

fn setup(builder: tower_hardening_breaker::BreakerBuilder) -> Setup {
    let layer = builder
        .classifier(classify as fn(&Result<(), BoxError>) -> Outcome)
        .build()
        .expect("valid settings");
    let calls = Arc::new(AtomicUsize::new(0));
    Setup {
        svc: layer.layer(inner(calls.clone())),
        handle: layer.handle(),
        calls,
    }
}

async fn send(svc: &mut Breaker, act: Act) -> Result<(), BoxError> {
    svc.ready().await?.call(act).await
}

fn is_open_error(result: &Result<(), BoxError>) -> Option<CircuitOpen> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .cloned()
}

fn count_breaker(window: u32, minimum: u32) -> tower_hardening_breaker::BreakerBuilder {
    CircuitBreakerLayer::builder()
        .name("test")
        .sliding_window(SlidingWindow::count(window))
        .minimum_calls(minimum)
        .failure_rate_threshold(0.5)
        .wait_in_open(Duration::from_secs(30))
        .max_wait_in_open(Duration::from_secs(100))
}

/// Opens a breaker from `count_breaker(10, 10)` with ten failures.
async fn trip(s: &mut Setup) {
    for _ in 0..10 {
        let _ = send(&mut s.svc, Act::Fail).await;
    }
    assert_eq!(s.handle.state(), CircuitState::Open);
}

// 1.
#[tokio::test(start_paused = true)]
async fn opens_when_the_tenth_call_reaches_the_threshold() {
    let mut s = setup(count_breaker(10, 10));
    for act in [Act::Fail, Act::Succeed, Act::Fail, Act::Succeed, Act::Fail] {
        send(&mut s.svc, act).await.ok();
    }
    for act in [Act::Succeed, Act::Fail, Act::Succeed, Act::Succeed] {
        send(&mut s.svc, act).await.ok();
    }
    let snapshot = s.handle.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (9, 4));
    assert_eq!(snapshot.failure_rate, None, "no rate before minimum_calls");
    assert_eq!(s.handle.state(), CircuitState::Closed);

    let tenth = send(&mut s.svc, Act::Fail).await;
    assert!(is_open_error(&tenth).is_none(), "the tenth call itself ran");
    assert_eq!(s.handle.state(), CircuitState::Open);
    assert_eq!(s.handle.snapshot().failure_rate, Some(0.5));
    assert_eq!(s.calls.load(Ordering::SeqCst), 10);
}

// 2.
#[tokio::test(start_paused = true)]
async fn open_breaker_fails_fast_with_a_countdown() {
    let mut s = setup(count_breaker(10, 10));
    trip(&mut s).await;
    let before = s.calls.load(Ordering::SeqCst);

    let err = is_open_error(&send(&mut s.svc, Act::Succeed).await).expect("rejected");
    assert_eq!(err.name(), "test");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));

    tokio::time::advance(Duration::from_secs(10)).await;
    let err = is_open_error(&send(&mut s.svc, Act::Succeed).await).expect("still rejected");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
    assert_eq!(
        s.handle.snapshot().until_probe,
        Some(Duration::from_secs(20))
    );

    tokio::time::advance(Duration::from_millis(19_999)).await;
    let err = is_open_error(&send(&mut s.svc, Act::Succeed).await).expect("still rejected");
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1)));

    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        before,
        "the inner service is never called while open"
    );
    assert_eq!(s.handle.snapshot().rejected_total, 3);
}

/// A breaker over an inner service whose calls wait for their outcome on
/// a channel.
type Gated = tower_hardening_breaker::CircuitBreaker<
    tower::util::BoxCloneSyncService<oneshot::Receiver<Act>, (), TestError>,
    fn(&Result<(), BoxError>) -> Outcome,
>;

/// Starts a call and returns its future without finishing it; the call
/// waits on the returned sender for its outcome.
fn start_gated(
    svc: &mut Gated,
) -> (
    oneshot::Sender<Act>,
    impl Future<Output = Result<(), BoxError>> + use<>,
) {
    let (tx, rx) = oneshot::channel();
    svc.ready()
        .now_or_never()
        .expect("ready at once")
        .expect("ready");
    (tx, svc.call(rx))
}

/// Sends `n` failing calls through a gated breaker, one after another.
async fn fail_gated(svc: &mut Gated, n: usize) {
    for _ in 0..n {
        let (tx, fut) = start_gated(svc);
        tx.send(Act::Fail).unwrap();
        fut.await.ok();
    }
}

fn gated_setup(
    builder: tower_hardening_breaker::BreakerBuilder,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
) -> (Gated, BreakerHandle) {
    let layer = builder
        .classifier(classify as fn(&Result<(), BoxError>) -> Outcome)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc =
        tower::util::BoxCloneSyncService::new(service_fn(move |rx: oneshot::Receiver<Act>| {
            let in_flight = in_flight.clone();
            let max_in_flight = max_in_flight.clone();
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                let act = rx.await.unwrap_or(Act::Succeed);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match act {
                    Act::Fail => Err(TestError("boom")),
                    Act::Ignore => Err(TestError("ignored")),
                    _ => Ok(()),
                }
            }
        }));
    (layer.layer(svc), handle)
}

// 3.
#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permits_then_closes_on_success() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (mut svc, handle) = gated_setup(
        count_breaker(10, 10).half_open_permits(3),
        in_flight.clone(),
        max.clone(),
    );
    fail_gated(&mut svc, 10).await;
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(30)).await;

    let mut probes: Vec<_> = (0..3)
        .map(|_| {
            let (tx, fut) = start_gated(&mut svc);
            (tx, Box::pin(fut))
        })
        .collect();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    // Poll each probe once so all three are inside the inner service.
    for (_, fut) in probes.iter_mut() {
        assert!(futures_util::poll!(fut).is_pending());
    }
    assert_eq!(in_flight.load(Ordering::SeqCst), 3);
    let (_tx4, fourth) = start_gated(&mut svc);
    let fourth = fourth.await;
    let rejection = is_open_error(&fourth).expect("a fourth concurrent probe is rejected");
    // Every probe is decided within the probe deadline: that is the hint.
    assert_eq!(rejection.retry_after(), Some(Duration::from_secs(10)));
    assert_eq!(rejection.state(), CircuitState::HalfOpen);
    assert_eq!(handle.snapshot().probes_in_flight, 3);

    let mut futures = Vec::new();
    for (tx, fut) in probes {
        tx.send(Act::Succeed).unwrap();
        futures.push(fut);
    }
    for fut in futures {
        fut.await.expect("probe succeeds");
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        3,
        "never more than three probes in the inner service"
    );
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        handle.snapshot().calls,
        0,
        "closing starts from an empty window"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_with_a_doubled_wait_capped_at_the_maximum() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (mut svc, handle) = gated_setup(count_breaker(10, 10).half_open_permits(3), in_flight, max);
    fail_gated(&mut svc, 10).await;
    // Waits: 30 s, then 60 s, then 100 s (120 capped), then 100 s.
    for expected_next_wait in [60, 100, 100] {
        let wait = handle.snapshot().until_probe.expect("open");
        tokio::time::advance(wait).await;
        let probes: Vec<_> = (0..3).map(|_| start_gated(&mut svc)).collect();
        assert_eq!(handle.state(), CircuitState::HalfOpen);
        let mut probes = probes.into_iter();
        // One success, then two failures: 2/3 >= 0.5 reopens.
        let (tx, fut) = probes.next().unwrap();
        tx.send(Act::Succeed).unwrap();
        fut.await.unwrap();
        let (tx, fut) = probes.next().unwrap();
        tx.send(Act::Fail).unwrap();
        fut.await.ok();
        assert_eq!(
            handle.state(),
            CircuitState::HalfOpen,
            "1/3 failed: not decided yet"
        );
        let (tx, fut) = probes.next().unwrap();
        tx.send(Act::Fail).unwrap();
        fut.await.ok();
        assert_eq!(handle.state(), CircuitState::Open);
        assert_eq!(
            handle.snapshot().until_probe,
            Some(Duration::from_secs(expected_next_wait))
        );
    }
    // reset() forgets the doubling.
    handle.reset();
    fail_gated(&mut svc, 10).await;
    assert_eq!(handle.snapshot().until_probe, Some(Duration::from_secs(30)));
}

// 4.
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_permit_and_counts_for_nothing() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (mut svc, handle) = gated_setup(count_breaker(10, 10).half_open_permits(1), in_flight, max);
    fail_gated(&mut svc, 10).await;
    tokio::time::advance(Duration::from_secs(30)).await;

    for _ in 0..5 {
        let (_tx, probe) = start_gated(&mut svc);
        assert_eq!(handle.snapshot().probes_in_flight, 1);
        drop(probe);
        assert_eq!(
            handle.snapshot().probes_in_flight,
            0,
            "the permit came back"
        );
        assert_eq!(
            handle.state(),
            CircuitState::HalfOpen,
            "a cancellation decides nothing"
        );
    }
    // An ignored outcome also hands the permit back.
    let (tx, probe) = start_gated(&mut svc);
    tx.send(Act::Ignore).unwrap();
    probe.await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    // ...and a real probe still gets through and decides.
    let (tx, probe) = start_gated(&mut svc);
    tx.send(Act::Succeed).unwrap();
    probe.await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reserved_but_unused_permit_is_released_with_the_service() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (mut svc, handle) = gated_setup(count_breaker(10, 10).half_open_permits(1), in_flight, max);
    fail_gated(&mut svc, 10).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut clone = svc.clone();
    clone.ready().await.unwrap(); // reserves the only probe permit
    assert_eq!(handle.snapshot().probes_in_flight, 1);
    let mut second = svc.clone();
    assert!(
        is_open_error(
            &second
                .ready()
                .await
                .unwrap()
                .call(oneshot::channel().1)
                .await
        )
        .is_some()
    );
    drop(clone);
    assert_eq!(handle.snapshot().probes_in_flight, 0);
}

// 5.
#[tokio::test(start_paused = true)]
async fn slow_successes_open_the_breaker() {
    let mut s = setup(
        count_breaker(10, 10)
            .slow_call_duration(Duration::from_secs(1))
            .slow_call_rate_threshold(0.5),
    );
    for _ in 0..5 {
        send(&mut s.svc, Act::SucceedAfter(Duration::from_millis(100)))
            .await
            .unwrap();
    }
    for _ in 0..4 {
        send(&mut s.svc, Act::SucceedAfter(Duration::from_secs(2)))
            .await
            .unwrap();
    }
    let snapshot = s.handle.snapshot();
    assert_eq!(
        (snapshot.calls, snapshot.failures, snapshot.slow_calls),
        (9, 0, 4)
    );
    assert_eq!(s.handle.state(), CircuitState::Closed);
    send(&mut s.svc, Act::SucceedAfter(Duration::from_millis(1001)))
        .await
        .unwrap();
    assert_eq!(s.handle.state(), CircuitState::Open, "5/10 slow >= 0.5");
    assert_eq!(s.handle.snapshot().slow_call_rate, Some(0.5));
    assert_eq!(s.handle.snapshot().failure_rate, Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn without_a_slow_call_duration_nothing_is_slow() {
    let mut s = setup(count_breaker(10, 10).slow_call_rate_threshold(0.1));
    for _ in 0..10 {
        send(&mut s.svc, Act::SucceedAfter(Duration::from_secs(60)))
            .await
            .unwrap();
    }
    assert_eq!(s.handle.snapshot().slow_calls, 0);
    assert_eq!(s.handle.state(), CircuitState::Closed);
}

// 6.
#[tokio::test(start_paused = true)]
async fn ignored_results_are_not_recorded() {
    let mut s = setup(count_breaker(10, 10));
    for _ in 0..50 {
        send(&mut s.svc, Act::Ignore).await.unwrap_err();
    }
    assert_eq!(s.handle.snapshot().calls, 0);
    assert_eq!(s.handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_calls_older_than_its_period() {
    let mut s = setup(
        CircuitBreakerLayer::builder()
            .name("timed")
            .sliding_window(SlidingWindow::time(Duration::from_secs(60)))
            .minimum_calls(10),
    );
    for _ in 0..9 {
        send(&mut s.svc, Act::Fail).await.unwrap_err();
    }
    assert_eq!(s.handle.snapshot().calls, 9);
    // Still remembered just under the period...
    tokio::time::advance(Duration::from_secs(57)).await;
    assert_eq!(s.handle.snapshot().calls, 9);
    // ...and forgotten once the period (plus one 3 s bucket at most) is over.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(s.handle.snapshot().calls, 0);
    // So one more failure does not open it: 1 call is under the minimum.
    send(&mut s.svc, Act::Fail).await.unwrap_err();
    assert_eq!(s.handle.state(), CircuitState::Closed);
    // Within one period, ten failures do.
    for _ in 0..9 {
        send(&mut s.svc, Act::Fail).await.unwrap_err();
    }
    assert_eq!(s.handle.state(), CircuitState::Open);
}

// 7.
#[tokio::test(start_paused = true)]
async fn a_panic_in_the_inner_future_is_a_failure_and_releases_the_permit() {
    let mut s = setup(count_breaker(10, 10).half_open_permits(1));
    for _ in 0..9 {
        send(&mut s.svc, Act::Succeed).await.unwrap();
    }
    let fut = s.svc.ready().await.unwrap().call(Act::Panic);
    let joined = tokio::spawn(fut).await;
    assert!(joined.unwrap_err().is_panic());
    let snapshot = s.handle.snapshot();
    assert_eq!(
        (snapshot.calls, snapshot.failures),
        (10, 1),
        "the panic counted as a failure"
    );

    // A panicking probe reopens the breaker instead of holding its permit.
    s.handle.reset();
    trip(&mut s).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    let fut = s.svc.ready().await.unwrap().call(Act::Panic);
    assert!(tokio::spawn(fut).await.unwrap_err().is_panic());
    assert_eq!(s.handle.state(), CircuitState::Open);
    assert_eq!(s.handle.snapshot().probes_in_flight, 0);
}

// 8.
#[tokio::test(start_paused = true)]
async fn manual_states_behave_as_documented() {
    let mut s = setup(count_breaker(10, 10));

    s.handle.disable();
    for _ in 0..20 {
        send(&mut s.svc, Act::Fail).await.unwrap_err();
    }
    assert_eq!(s.handle.state(), CircuitState::Disabled);
    assert_eq!(s.handle.snapshot().calls, 0, "disabled records nothing");

    s.handle.metrics_only();
    for _ in 0..20 {
        let result = send(&mut s.svc, Act::Fail).await;
        assert!(
            is_open_error(&result).is_none(),
            "metrics-only never rejects"
        );
    }
    let snapshot = s.handle.snapshot();
    assert_eq!(snapshot.state, CircuitState::MetricsOnly);
    assert_eq!(
        snapshot.failure_rate,
        Some(1.0),
        "metrics-only reports rates"
    );

    s.handle.force_open();
    let before = s.calls.load(Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(3600)).await;
    for _ in 0..5 {
        assert!(is_open_error(&send(&mut s.svc, Act::Succeed).await).is_some());
    }
    assert_eq!(
        s.handle.state(),
        CircuitState::ForcedOpen,
        "no wait ends a forced open"
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), before);

    s.handle.reset();
    assert_eq!(s.handle.state(), CircuitState::Closed);
    send(&mut s.svc, Act::Succeed).await.unwrap();
    assert_eq!(
        s.handle.snapshot().calls,
        1,
        "reset starts from an empty window"
    );
}

// 9.
#[test]
fn transitions_publish_events_and_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = EventSink::new(64);
    let mut events = sink.subscribe();

    metrics::with_local_recorder(&recorder, || {
        let mut s = setup(
            count_breaker(10, 10)
                .name("model-inference")
                .events(sink.clone()),
        );
        for _ in 0..10 {
            let _ = s
                .svc
                .ready()
                .now_or_never()
                .unwrap()
                .unwrap()
                .call(Act::Fail)
                .now_or_never();
        }
        for _ in 0..3 {
            let _ = s
                .svc
                .ready()
                .now_or_never()
                .unwrap()
                .unwrap()
                .call(Act::Fail)
                .now_or_never();
        }
        s.handle.reset();
        s.handle.reset(); // already closed: no second transition
    });

    let seen: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    let transitions: Vec<_> = seen
        .iter()
        .filter_map(|e| match e.kind() {
            EventKind::CircuitTransition { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::Closed)
        ]
    );
    assert!(seen.iter().all(|e| e.service() == "model-inference"));
    let rejections = seen
        .iter()
        .filter(|e| matches!(e.kind(), EventKind::CallRejected { .. }))
        .count();
    assert_eq!(
        rejections, 1,
        "one rejection event per open period, not one per call"
    );

    let metrics = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| {
        metrics
            .iter()
            .find(|(key, _, _, _)| {
                key.key().name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, value)| value)
    };
    let breaker = ("breaker", "model-inference");
    assert_eq!(
        find("hardening_circuit_state", &[breaker]),
        Some(&DebugValue::Gauge(0.0.into())),
        "closed again after reset"
    );
    assert_eq!(
        find(
            "hardening_circuit_transitions_total",
            &[breaker, ("from", "closed"), ("to", "open")]
        ),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        find(
            "hardening_circuit_transitions_total",
            &[breaker, ("from", "open"), ("to", "closed")]
        ),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        find("hardening_circuit_rejected_total", &[breaker]),
        Some(&DebugValue::Counter(3))
    );
}

#[test]
fn bad_settings_name_the_setting() {
    let cases: Vec<(tower_hardening_breaker::BreakerBuilder, &str)> = vec![
        (
            CircuitBreakerLayer::builder().failure_rate_threshold(0.0),
            "failure_rate_threshold",
        ),
        (
            CircuitBreakerLayer::builder().failure_rate_threshold(1.01),
            "failure_rate_threshold",
        ),
        (
            CircuitBreakerLayer::builder().slow_call_rate_threshold(f64::NAN),
            "slow_call_rate_threshold",
        ),
        (
            CircuitBreakerLayer::builder().slow_call_duration(Duration::ZERO),
            "slow_call_duration",
        ),
        (
            CircuitBreakerLayer::builder().sliding_window(SlidingWindow::count(0)),
            "sliding_window",
        ),
        (
            CircuitBreakerLayer::builder().sliding_window(SlidingWindow::time(Duration::ZERO)),
            "sliding_window",
        ),
        (
            CircuitBreakerLayer::builder().minimum_calls(0),
            "minimum_calls",
        ),
        (
            CircuitBreakerLayer::builder()
                .sliding_window(SlidingWindow::count(5))
                .minimum_calls(6),
            "minimum_calls",
        ),
        (
            CircuitBreakerLayer::builder().wait_in_open(Duration::ZERO),
            "wait_in_open",
        ),
        (
            CircuitBreakerLayer::builder()
                .wait_in_open(Duration::from_secs(60))
                .max_wait_in_open(Duration::from_secs(1)),
            "max_wait_in_open",
        ),
        (
            CircuitBreakerLayer::builder().half_open_permits(0),
            "half_open_permits",
        ),
        (CircuitBreakerLayer::builder().name(" "), "name"),
    ];
    for (builder, field) in cases {
        let err = builder.build().expect_err(field);
        assert_eq!(err.field(), field);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_layer_is_one_breaker_across_services_and_clones() {
    let layer = count_breaker(10, 10).build().unwrap();
    let handle = layer.handle();
    let make = || {
        layer.clone().layer(service_fn(|fail: bool| async move {
            if fail {
                Err(TestError("boom"))
            } else {
                Ok::<_, TestError>(())
            }
        }))
    };
    let (mut a, mut b) = (make(), make());
    for i in 0..10 {
        let svc = if i % 2 == 0 { &mut a } else { &mut b };
        svc.ready().await.unwrap().call(true).await.unwrap_err();
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let mut c = b.clone();
    let err = c.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some());
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_independent_and_bounded() {
    let layer = count_breaker(10, 10)
        .name("upstream")
        .build_keyed(|req: &(&'static str, bool)| req.0.to_owned(), 2)
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|(_, fail): (&'static str, bool)| async move {
        if fail {
            Err(TestError("boom"))
        } else {
            Ok::<_, TestError>(())
        }
    }));
    for _ in 0..10 {
        svc.ready()
            .await
            .unwrap()
            .call(("a", true))
            .await
            .unwrap_err();
    }
    svc.ready().await.unwrap().call(("b", false)).await.unwrap();
    assert_eq!(
        handle.get(&"a".to_owned()).unwrap().state(),
        CircuitState::Open
    );
    assert_eq!(handle.get(&"a".to_owned()).unwrap().name(), "upstream/a");
    let b = handle.get(&"b".to_owned()).unwrap();
    assert_eq!(b.state(), CircuitState::Closed);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("a", false))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some(), "a is open");

    // A third key evicts the least recently used closed breaker (b), not
    // the open one.
    svc.ready().await.unwrap().call(("c", false)).await.unwrap();
    assert_eq!(handle.len(), 2);
    assert!(handle.get(&"b".to_owned()).is_none());
    assert!(handle.get(&"a".to_owned()).is_some());

    // With every kept breaker open, a new key shares the overflow breaker.
    for _ in 0..10 {
        svc.ready()
            .await
            .unwrap()
            .call(("c", true))
            .await
            .unwrap_err();
    }
    svc.ready().await.unwrap().call(("d", false)).await.unwrap();
    assert_eq!(handle.len(), 2);
    assert_eq!(handle.overflow().snapshot().calls, 1);
    assert_eq!(handle.overflow().name(), "upstream/overflow");
}

#[tokio::test(start_paused = true)]
async fn calls_admitted_before_a_transition_do_not_count_after_it() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (mut svc, handle) = gated_setup(count_breaker(10, 10), in_flight, max);
    // A slow call admitted while closed...
    let (late_tx, late) = start_gated(&mut svc);
    fail_gated(&mut svc, 10).await;
    handle.reset();
    // ...finishes after the breaker opened and was reset: not recorded.
    late_tx.send(Act::Fail).unwrap();
    late.await.unwrap_err();
    assert_eq!(handle.snapshot().calls, 0);
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Breaker>();
    check::<BreakerHandle>();
}

/// A breaker registers a transition series only for a pair that can
/// happen: no `closed` -> `closed`, no `forced_open` -> `open` (a forced
/// breaker leaves only by a manual change), while `closed` -> `open` and
/// every manual change (`open` -> `forced_open`) are there from the start.
#[test]
fn only_possible_transitions_are_registered() {
    use metrics_util::debugging::DebuggingRecorder;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let _layer = count_breaker(10, 10).name("one").build().unwrap();
    });
    let mut pairs: Vec<(String, String)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "hardening_circuit_transitions_total")
        .map(|(key, _, _, _)| {
            let label = |name: &str| {
                key.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            (label("from"), label("to"))
        })
        .collect();
    pairs.sort();
    let has = |from: &str, to: &str| pairs.iter().any(|(f, t)| f == from && t == to);
    assert!(has("closed", "open"), "{pairs:?}");
    assert!(has("half_open", "closed"), "{pairs:?}");
    assert!(has("open", "forced_open"), "{pairs:?}");
    assert!(!has("closed", "closed"), "{pairs:?}");
    assert!(!has("forced_open", "open"), "{pairs:?}");
    assert!(!has("metrics_only", "open"), "{pairs:?}");
    assert!(pairs.iter().all(|(f, t)| f != t), "{pairs:?}");
    // 4 automatic moves and every manual one: 27, not 36.
    assert_eq!(pairs.len(), 27, "{pairs:?}");
}
