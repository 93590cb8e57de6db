//! The upstream's behaviour on mock endpoints, on tokio's paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::discover::Change;
use tower::util::BoxCloneService;
use tower::{ServiceExt, service_fn};
use tower_hardening_core::{
    BoxError, EventKind, EventSink, HttpServerErrors, RejectionKind, rejection_of,
};
use tower_hardening_upstream::{
    EndpointState, HedgeDelay, HttpPushback, OutlierPolicy, Upstream, UpstreamHandle,
};

/// How each endpoint behaves, changeable during a test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    Ok,
    Refuse,
    Slow(Duration),
    Status(u16, Option<&'static str>),
    GrpcPushback(&'static str),
    /// Late, then this status.
    LateStatus(Duration, u16),
    /// Late, then a failed gRPC call with this pushback.
    LateGrpcPushback(Duration, &'static str),
}

#[derive(Clone, Default)]
struct Backends {
    behaviour: Arc<Mutex<HashMap<String, Behaviour>>>,
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Backends {
    fn set(&self, uri: &str, behaviour: Behaviour) {
        self.behaviour
            .lock()
            .unwrap()
            .insert(uri.to_owned(), behaviour);
    }

    fn calls_to(&self, uri: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| u == uri)
            .count()
    }

    fn total(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn last_call_to(&self, uri: &str) -> Option<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(u, _)| u == uri)
            .map(|(_, at)| *at)
    }

    /// An endpoint service answering `http::Response<()>`.
    fn endpoint(&self, uri: &str) -> BoxCloneService<u32, http::Response<()>, BoxError> {
        let backends = self.clone();
        let uri = uri.to_owned();
        BoxCloneService::new(service_fn(move |_: u32| {
            let backends = backends.clone();
            let uri = uri.clone();
            async move {
                backends
                    .calls
                    .lock()
                    .unwrap()
                    .push((uri.clone(), Instant::now()));
                let behaviour = backends
                    .behaviour
                    .lock()
                    .unwrap()
                    .get(&uri)
                    .copied()
                    .unwrap_or(Behaviour::Ok);
                match behaviour {
                    Behaviour::Ok => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok(http::Response::new(()))
                    }
                    Behaviour::Refuse => Err(BoxError::from(std::io::Error::from(
                        std::io::ErrorKind::ConnectionRefused,
                    ))),
                    Behaviour::Slow(by) => {
                        tokio::time::sleep(by).await;
                        Ok(http::Response::new(()))
                    }
                    Behaviour::Status(status, retry_after) => {
                        let mut response = http::Response::builder().status(status);
                        if let Some(after) = retry_after {
                            response = response.header("retry-after", after);
                        }
                        Ok(response.body(()).unwrap())
                    }
                    Behaviour::LateStatus(by, status) => {
                        tokio::time::sleep(by).await;
                        Ok(http::Response::builder().status(status).body(()).unwrap())
                    }
                    Behaviour::LateGrpcPushback(by, value) => {
                        tokio::time::sleep(by).await;
                        Ok(http::Response::builder()
                            .status(503)
                            .header("grpc-status", "14")
                            .header("grpc-retry-pushback-ms", value)
                            .body(())
                            .unwrap())
                    }
                    Behaviour::GrpcPushback(value) => Ok(http::Response::builder()
                        .status(503)
                        .header("grpc-status", "14")
                        .header("grpc-retry-pushback-ms", value)
                        .body(())
                        .unwrap()),
                }
            }
        }))
    }
}

const URIS: [&str; 3] = ["a", "b", "c"];

fn state(handle: &UpstreamHandle<impl Sized>, uri: &str) -> EndpointState {
    handle
        .endpoints()
        .into_iter()
        .find(|e| &*e.uri == uri)
        .unwrap()
        .state
}

fn policy(consecutive_failures: u32) -> OutlierPolicy {
    OutlierPolicy {
        consecutive_failures,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
        ..OutlierPolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_is_ejected_and_every_call_succeeds_through_retries() {
    let backends = Backends::default();
    let events = EventSink::new(16);
    let mut seen = events.subscribe();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(policy(5))
        .max_attempts(3)
        .classify(HttpServerErrors::new())
        .clone_requests()
        .events(events)
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    for n in 0..30 {
        upstream.clone().oneshot(n).await.unwrap();
    }
    backends.set("b", Behaviour::Refuse);
    for n in 0..200 {
        let response = upstream.clone().oneshot(n).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(matches!(state(&handle, "b"), EndpointState::Ejected { .. }));
    let before = backends
        .calls
        .lock()
        .unwrap()
        .iter()
        .take(30)
        .filter(|(u, _)| u == "b")
        .count();
    let after_kill = backends.calls_to("b") - before;
    assert_eq!(
        after_kill, 5,
        "ejected after exactly consecutive_failures attempts"
    );
    let event = seen.try_recv().unwrap();
    assert!(matches!(
        event.kind(),
        EventKind::EndpointEjected { endpoint, ejections: 1, reason: "consecutive_failures", .. }
            if &**endpoint == "b"
    ));
}

#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_returns_after_its_time_and_goes_out_longer_next_time() {
    let backends = Backends::default();
    let b = backends.clone();
    let events = EventSink::new(16);
    let mut seen = events.subscribe();
    let upstream = Upstream::builder("model")
        .outlier(policy(2))
        .clone_requests()
        .events(events)
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    backends.set("a", Behaviour::Refuse);
    while !matches!(state(&handle, "a"), EndpointState::Ejected { .. }) {
        upstream.clone().oneshot(0).await.unwrap();
    }
    let calls = backends.calls_to("a");
    tokio::time::advance(Duration::from_secs(29)).await;
    for _ in 0..50 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(
        backends.calls_to("a"),
        calls,
        "nothing reaches it while ejected"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(state(&handle, "a"), EndpointState::Healthy);
    let _ejected = seen.try_recv().unwrap();
    assert!(matches!(
        seen.try_recv().unwrap().kind(),
        EventKind::EndpointReturned { .. }
    ));
    // Still failing: out again, for twice as long.
    while !matches!(state(&handle, "a"), EndpointState::Ejected { .. }) {
        upstream.clone().oneshot(0).await.unwrap();
    }
    match state(&handle, "a") {
        EndpointState::Ejected { remaining } => {
            assert!(remaining > Duration::from_secs(55), "{remaining:?}")
        }
        other => panic!("{other:?}"),
    }
    // Back for good once it answers.
    backends.set("a", Behaviour::Ok);
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..60 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(state(&handle, "a"), EndpointState::Healthy);
    assert!(backends.calls_to("a") > calls + 5);
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_ejection_percent_is_ejected_and_all_out_routes_to_all() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(policy(2))
        .max_attempts(1)
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    for uri in URIS {
        backends.set(uri, Behaviour::Refuse);
    }
    for _ in 0..30 {
        let _ = upstream.clone().oneshot(0).await;
    }
    let ejected = handle
        .endpoints()
        .iter()
        .filter(|e| matches!(e.state, EndpointState::Ejected { .. }))
        .count();
    assert_eq!(ejected, 1, "50% of 3 is one endpoint");
    assert!(!handle.all_out());

    // With 100% allowed, every endpoint goes out; calls still go somewhere
    // (panic routing), so the caller sees the endpoints' own errors.
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(OutlierPolicy {
            max_ejection_percent: 100,
            ..policy(2)
        })
        .max_attempts(1)
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    for uri in URIS {
        backends.set(uri, Behaviour::Refuse);
    }
    for _ in 0..30 {
        let _ = upstream.clone().oneshot(0).await;
    }
    assert!(handle.all_out());
    let calls = backends.total();
    let err = upstream.clone().oneshot(0).await.unwrap_err();
    assert!(rejection_of(&*err).is_none(), "the endpoint's error: {err}");
    assert_eq!(backends.total(), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_keeps_attempts_off_an_endpoint_until_then() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(OutlierPolicy {
            enabled: false,
            ..OutlierPolicy::default()
        })
        .classify(HttpServerErrors::new())
        .pushback(HttpPushback)
        .clone_requests()
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    backends.set("c", Behaviour::Status(503, Some("2")));
    let mut pushed = None;
    for _ in 0..50 {
        let response = upstream.clone().oneshot(0).await.unwrap();
        assert_eq!(response.status(), 200, "retried on another endpoint");
        if pushed.is_none() && backends.calls_to("c") > 0 {
            pushed = Some(backends.last_call_to("c").unwrap());
            assert!(matches!(
                state(&handle, "c"),
                EndpointState::PushedBack { .. }
            ));
        }
        tokio::time::advance(Duration::from_millis(30)).await;
    }
    let pushed = pushed.expect("c was called once");
    assert_eq!(backends.calls_to("c"), 1, "no attempt while pushing back");
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..30 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    let next = backends.last_call_to("c").unwrap();
    assert!(
        next - pushed >= Duration::from_secs(2),
        "{:?}",
        next - pushed
    );
}

#[tokio::test(start_paused = true)]
async fn absurd_or_garbage_retry_after_never_keeps_an_endpoint_away_for_long() {
    for (value, away) in [
        ("99999999999", Some(Duration::from_secs(300))),
        ("-5", None),
        ("soon", None),
    ] {
        let backends = Backends::default();
        let b = backends.clone();
        let upstream = Upstream::builder("model")
            .outlier(OutlierPolicy {
                enabled: false,
                ..OutlierPolicy::default()
            })
            .classify(HttpServerErrors::new())
            .pushback(HttpPushback)
            .clone_requests()
            .build(["a"], move |uri| b.endpoint(uri));
        let handle = upstream.handle();
        backends.set("a", Behaviour::Status(503, Some(value)));
        let response = upstream.clone().oneshot(0).await.unwrap();
        assert_eq!(response.status(), 503, "the last answer, as it was");
        match (state(&handle, "a"), away) {
            (EndpointState::PushedBack { remaining }, Some(max)) => {
                assert!(remaining <= max, "{value}: {remaining:?}")
            }
            (EndpointState::Healthy, None) => {}
            (other, _) => panic!("{value}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_pushing_back_is_a_rejection_saying_when() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .classify(HttpServerErrors::new())
        .pushback(HttpPushback)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    backends.set("a", Behaviour::Status(429, Some("5")));
    backends.set("b", Behaviour::Status(503, Some("3")));
    // A 429 is no failure here, but its pushback is honoured all the same.
    let _ = upstream.clone().oneshot(0).await.unwrap();
    let _ = upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(backends.total(), 2);
    let err = upstream.clone().oneshot(0).await.unwrap_err();
    let rejection = rejection_of(&*err).expect("a rejection");
    assert_eq!(rejection.kind, RejectionKind::NoHealthyEndpoint);
    let after = rejection.retry_after.unwrap();
    assert!(
        after <= Duration::from_secs(3) && after > Duration::from_secs(2),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_negative_grpc_pushback_is_not_retried() {
    for (value, calls) in [("-1", 1), ("garbage", 1), ("100", 2)] {
        let backends = Backends::default();
        let b = backends.clone();
        let upstream = Upstream::builder("model")
            .classify(HttpServerErrors::new())
            .pushback(HttpPushback)
            .clone_requests()
            .build(["a", "b"], move |uri| b.endpoint(uri));
        backends.set("a", Behaviour::GrpcPushback(value));
        backends.set("b", Behaviour::GrpcPushback(value));
        let _ = upstream.clone().oneshot(0).await.unwrap();
        assert_eq!(backends.total(), calls, "pushback {value}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_over_a_slow_attempt_which_is_cancelled() {
    let backends = Backends::default();
    let b = backends.clone();
    let cancelled = Arc::new(AtomicU32::new(0));
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(30)), 1)
        .clone_requests()
        .build(["slow", "fast"], {
            let cancelled = cancelled.clone();
            move |uri| {
                let inner = b.endpoint(uri);
                let cancelled = cancelled.clone();
                service_fn(move |n: u32| {
                    let call = inner.clone().oneshot(n);
                    let guard = DropFlag(cancelled.clone(), Arc::new(AtomicBool::new(false)));
                    async move {
                        let response = call.await;
                        guard.1.store(true, Ordering::Relaxed);
                        response
                    }
                })
            }
        });
    backends.set("slow", Behaviour::Slow(Duration::from_millis(500)));
    let mut hedged = 0;
    for _ in 0..20 {
        let started = Instant::now();
        upstream.clone().oneshot(0).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "{took:?}");
        if took >= Duration::from_millis(30) {
            hedged += 1;
        }
    }
    assert!(
        hedged >= 1,
        "the slow endpoint was chosen at least once first"
    );
    assert_eq!(
        cancelled.load(Ordering::Relaxed),
        hedged,
        "each losing attempt was dropped unfinished"
    );
}

struct DropFlag(Arc<AtomicU32>, Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1.load(Ordering::Relaxed) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn hedges_spend_the_retry_budget_and_only_idempotent_requests_are_hedged() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(30)), 1)
        .budget(Duration::from_secs(10), 0, 0.0)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    backends.set("a", Behaviour::Slow(Duration::from_millis(200)));
    backends.set("b", Behaviour::Slow(Duration::from_millis(200)));
    upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(backends.total(), 1, "an empty budget sends no hedge");

    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(30)), 1)
        .idempotent(|n: &u32| n.is_multiple_of(2))
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    backends.set("a", Behaviour::Slow(Duration::from_millis(200)));
    backends.set("b", Behaviour::Slow(Duration::from_millis(200)));
    upstream.clone().oneshot(1).await.unwrap();
    assert_eq!(backends.total(), 1, "not idempotent: not hedged");
    upstream.clone().oneshot(2).await.unwrap();
    assert_eq!(backends.total(), 3, "idempotent: hedged");
}

#[tokio::test(start_paused = true)]
async fn p95_hedging_waits_for_enough_samples() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::P95, 1)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    for _ in 0..40 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(backends.total(), 40, "fast calls are not hedged");
    backends.set("a", Behaviour::Slow(Duration::from_millis(500)));
    backends.set("b", Behaviour::Slow(Duration::from_millis(500)));
    upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(backends.total(), 42, "a call slower than p95 is hedged");
}

/// A request that cannot be copied.
struct Upload(#[allow(dead_code)] u32);

#[tokio::test(start_paused = true)]
async fn a_request_without_a_copy_is_sent_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(1)), 1)
        .build(["a", "b"], move |_| {
            let calls = counted.clone();
            service_fn(move |_: Upload| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
                }
            })
        });
    let err = upstream.oneshot(Upload(1)).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some(), "{err}");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_may_have_reached_the_server_is_retried_only_when_idempotent() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .classify(HttpServerErrors::new())
        .idempotent(|_: &u32| false)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    backends.set("a", Behaviour::Status(500, None));
    backends.set("b", Behaviour::Status(500, None));
    let response = upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(backends.total(), 1, "a 500 may have done the work");
    backends.set("a", Behaviour::Refuse);
    backends.set("b", Behaviour::Refuse);
    let _ = upstream.clone().oneshot(0).await.unwrap_err();
    assert_eq!(
        backends.total(),
        4,
        "a refused connection never did: retried"
    );
}

#[tokio::test(start_paused = true)]
async fn endpoints_replaced_under_load_fail_nothing_in_flight() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    for uri in ["a", "b", "c", "d"] {
        backends.set(uri, Behaviour::Slow(Duration::from_millis(100)));
    }
    let mut calls = Vec::new();
    for n in 0..20 {
        calls.push(tokio::spawn(upstream.clone().oneshot(n)));
    }
    tokio::time::advance(Duration::from_millis(10)).await;
    handle.set_endpoints(["c", "d"]).unwrap();
    for n in 0..20 {
        calls.push(tokio::spawn(upstream.clone().oneshot(n)));
    }
    assert!(handle.remove("c"));
    assert!(!handle.remove("c"));
    handle.insert("e").unwrap();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let uris: Vec<_> = handle.endpoints().into_iter().map(|e| e.uri).collect();
    assert_eq!(uris, vec![Arc::from("d"), Arc::from("e")]);
    assert!(backends.calls_to("a") + backends.calls_to("b") >= 20);
}

#[tokio::test(start_paused = true)]
async fn endpoints_follow_a_discover_stream() {
    let backends = Backends::default();
    let upstream = Upstream::builder("model")
        .clone_requests()
        .build_with_services(Vec::<(&str, _)>::new());
    let handle = upstream.handle();
    let err = upstream.clone().oneshot(0).await.unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::NoHealthyEndpoint)
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Change<String, _>, BoxError>>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|change| (change, rx))
    });
    let follow = tokio::spawn(handle.clone().follow(Box::pin(stream)));
    tx.send(Ok(Change::Insert("a".to_owned(), backends.endpoint("a"))))
        .unwrap();
    tx.send(Ok(Change::Insert("b".to_owned(), backends.endpoint("b"))))
        .unwrap();
    tx.send(Ok(Change::Remove("a".to_owned()))).unwrap();
    tokio::task::yield_now().await;
    upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(backends.calls_to("b"), 1);
    assert_eq!(handle.endpoints().len(), 1);
    drop(tx);
    follow.await.unwrap().unwrap();
    assert!(handle.set_endpoints(["x"]).is_err(), "no endpoint maker");
}

/// A discovery stream that fails: the caller learns why (a `follow` that
/// just stopped would leave the endpoints frozen without a word).
#[tokio::test(start_paused = true)]
async fn a_failing_discover_stream_ends_follow_with_its_error() {
    let backends = Backends::default();
    let upstream = Upstream::<(), u32>::builder("model")
        .clone_requests()
        .build_with_services([("a", backends.endpoint("a"))]);
    let handle = upstream.handle();
    let changes: Vec<Result<Change<String, _>, BoxError>> = vec![
        Ok(Change::Insert("b".to_owned(), backends.endpoint("b"))),
        Err("dns lookup failed".into()),
        Ok(Change::Remove("a".to_owned())),
    ];
    let result = handle
        .clone()
        .follow(Box::pin(futures_util::stream::iter(changes)))
        .await;
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "dns lookup failed");
    let uris: Vec<_> = handle.endpoints().into_iter().map(|e| e.uri).collect();
    assert_eq!(uris, vec![Arc::from("a"), Arc::from("b")]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_is_avoided_by_the_load_aware_choice() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .clone_requests()
        .build(URIS, move |uri| b.endpoint(uri));
    backends.set("c", Behaviour::Slow(Duration::from_millis(300)));
    for _ in 0..30 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    let warm = backends.calls_to("c");
    for _ in 0..300 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    let share = (backends.calls_to("c") - warm) as f64 / 300.0;
    assert!(share < 0.05, "{share}");
}

#[tokio::test(start_paused = true)]
async fn attempts_that_time_out_are_failures_retried_elsewhere() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .attempt_timeout(Duration::from_millis(50))
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    backends.set("a", Behaviour::Slow(Duration::from_secs(10)));
    for _ in 0..10 {
        let started = Instant::now();
        upstream.clone().oneshot(0).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(100));
    }
    backends.set("b", Behaviour::Slow(Duration::from_secs(10)));
    let err = upstream.clone().oneshot(0).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn do_not_retry_from_one_attempt_holds_when_the_hedge_fails_too() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .classify(HttpServerErrors::new())
        .pushback(HttpPushback)
        .hedge(HedgeDelay::Fixed(Duration::from_millis(10)), 1)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    backends.set(
        "a",
        Behaviour::LateGrpcPushback(Duration::from_millis(50), "-1"),
    );
    backends.set("b", Behaviour::LateStatus(Duration::from_millis(100), 500));
    let response = upstream.oneshot(0).await.unwrap();
    assert_eq!(response.status(), 500, "the last answer");
    assert_eq!(backends.total(), 2, "no retry after a negative pushback");
}

#[tokio::test(start_paused = true)]
async fn a_hedge_never_goes_to_an_ejected_endpoint_while_one_is_in_rotation() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(OutlierPolicy {
            max_ejection_percent: 100,
            ..policy(2)
        })
        .max_attempts(1)
        .hedge(HedgeDelay::Fixed(Duration::from_millis(10)), 1)
        .clone_requests()
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    backends.set("b", Behaviour::Refuse);
    backends.set("c", Behaviour::Refuse);
    while !(matches!(state(&handle, "b"), EndpointState::Ejected { .. })
        && matches!(state(&handle, "c"), EndpointState::Ejected { .. }))
    {
        let _ = upstream.clone().oneshot(0).await;
    }
    backends.set("a", Behaviour::Slow(Duration::from_millis(100)));
    let (b_calls, c_calls) = (backends.calls_to("b"), backends.calls_to("c"));
    for _ in 0..10 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    assert!(backends.calls_to("a") >= 10);
    assert_eq!(
        (backends.calls_to("b"), backends.calls_to("c")),
        (b_calls, c_calls),
        "no hedge to an ejected endpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_giving_up_mid_hedge_cancels_both_attempts() {
    let cancelled = Arc::new(AtomicU32::new(0));
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(30)), 1)
        .clone_requests()
        .build(["a", "b"], {
            let cancelled = cancelled.clone();
            move |_| {
                let cancelled = cancelled.clone();
                service_fn(move |n: u32| {
                    let guard = DropFlag(cancelled.clone(), Arc::new(AtomicBool::new(false)));
                    async move {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        guard.1.store(true, Ordering::Relaxed);
                        Ok::<_, BoxError>(n)
                    }
                })
            }
        });
    let call = tokio::spawn(upstream.clone().oneshot(0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort();
    let _ = call.await;
    assert_eq!(
        cancelled.load(Ordering::Relaxed),
        2,
        "the attempt and its hedge"
    );
}

/// Reads a pushback of `Duration::MAX` from every answer.
#[derive(Clone)]
struct Forever;

impl tower_hardening_upstream::ReadPushback<http::Response<()>> for Forever {
    fn pushback(&self, _: &http::Response<()>) -> Option<tower_hardening_upstream::Pushback> {
        Some(tower_hardening_upstream::Pushback::RetryAfter(
            Duration::MAX,
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn durations_near_the_maximum_never_panic() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(OutlierPolicy {
            consecutive_failures: 1,
            base_ejection_time: Duration::MAX,
            max_ejection_time: Duration::MAX,
            max_ejection_percent: 100,
            ..OutlierPolicy::default()
        })
        .hedge(HedgeDelay::Fixed(Duration::MAX), 2)
        .attempt_timeout(Duration::MAX)
        .pushback(Forever)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    backends.set("a", Behaviour::Refuse);
    for _ in 0..4 {
        let _ = upstream.clone().oneshot(0).await;
    }
    assert!(
        handle
            .endpoints()
            .iter()
            .all(|e| e.state != EndpointState::Healthy)
    );
}

// ---- Review: ejection gauges and endpoints that left the list ----

/// A recorder keeping every gauge's value as set (the debugging
/// recorder's snapshot resets gauges as it reads them).
#[derive(Clone)]
struct Gauges(
    Arc<metrics_util::registry::Registry<metrics::Key, metrics_util::registry::AtomicStorage>>,
);

impl Gauges {
    fn new() -> Self {
        Gauges(Arc::new(metrics_util::registry::Registry::atomic()))
    }

    /// The `hardening_upstream_endpoint_ejected` gauge of `endpoint`.
    fn ejected(&self, endpoint: &str) -> f64 {
        self.0
            .get_gauge_handles()
            .into_iter()
            .find_map(|(key, gauge)| {
                let labelled = key
                    .labels()
                    .any(|l| l.key() == "endpoint" && l.value() == endpoint);
                (key.name() == tower_hardening_core::names::UPSTREAM_ENDPOINT_EJECTED && labelled)
                    .then(|| f64::from_bits(gauge.load(Ordering::SeqCst)))
            })
            .unwrap_or_else(|| panic!("no ejected gauge for {endpoint}"))
    }
}

impl metrics::Recorder for Gauges {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.0
            .get_or_create_counter(key, |c| metrics::Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.0
            .get_or_create_gauge(key, |g| metrics::Gauge::from_arc(g.clone()))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.0
            .get_or_create_histogram(key, |h| metrics::Histogram::from_arc(h.clone()))
    }
}

#[tokio::test(start_paused = true)]
async fn removing_an_ejected_endpoint_clears_its_ejected_gauge() {
    let gauges = Gauges::new();
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(policy(1))
        .recorder(Arc::new(gauges.clone()))
        .clone_requests()
        .build(URIS, move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    backends.set("a", Behaviour::Refuse);
    for n in 0..30 {
        upstream.clone().oneshot(n).await.unwrap();
    }
    assert!(matches!(state(&handle, "a"), EndpointState::Ejected { .. }));
    assert_eq!(gauges.ejected("a"), 1.0);
    assert!(handle.remove("a"));
    assert_eq!(
        gauges.ejected("a"),
        0.0,
        "an endpoint that left the upstream is not reported ejected forever"
    );
    // Replaced by `set_endpoints` while ejected: the same.
    backends.set("b", Behaviour::Refuse);
    for n in 0..30 {
        upstream.clone().oneshot(n).await.unwrap();
    }
    assert!(matches!(state(&handle, "b"), EndpointState::Ejected { .. }));
    handle.set_endpoints(["c"]).unwrap();
    assert_eq!(gauges.ejected("b"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_other_label_counts_every_ejected_endpoint_added_at_run_time() {
    let gauges = Gauges::new();
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(policy(1))
        .recorder(Arc::new(gauges.clone()))
        .clone_requests()
        .build(["a"], move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    handle.insert("x").unwrap();
    backends.set("x", Behaviour::Refuse);
    for n in 0..30 {
        upstream.clone().oneshot(n).await.unwrap();
    }
    assert!(matches!(state(&handle, "x"), EndpointState::Ejected { .. }));
    assert_eq!(gauges.ejected("other"), 1.0);
    // Another endpoint under the same label starts in rotation: the one
    // still ejected stays counted.
    handle.insert("y").unwrap();
    assert!(matches!(state(&handle, "x"), EndpointState::Ejected { .. }));
    assert_eq!(gauges.ejected("other"), 1.0, "x is still ejected");
}

#[tokio::test(start_paused = true)]
async fn a_late_failure_of_a_removed_endpoint_ejects_nothing() {
    let gauges = Gauges::new();
    let events = EventSink::new(16);
    let mut seen = events.subscribe();
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .outlier(policy(1))
        .max_attempts(1)
        .classify(HttpServerErrors::new())
        .recorder(Arc::new(gauges.clone()))
        .events(events)
        .clone_requests()
        .build(["a"], move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    backends.set("a", Behaviour::LateStatus(Duration::from_millis(100), 500));
    let call = tokio::spawn(upstream.clone().oneshot(0));
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle.set_endpoints(["b"]).unwrap();
    // The attempt in flight finishes (with its own answer), not failed by
    // the change.
    assert_eq!(call.await.unwrap().unwrap().status(), 500);
    assert!(
        seen.try_recv().is_err(),
        "no EndpointEjected for an endpoint that is no longer there"
    );
    assert_eq!(gauges.ejected("a"), 0.0);
}

#[test]
fn a_grpc_pushback_too_large_for_any_integer_type_is_a_long_pushback() {
    use tower_hardening_upstream::pushback::grpc_pushback;
    use tower_hardening_upstream::{MAX_PUSHBACK, Pushback};
    // Forty digits: a valid, non-negative number of milliseconds, as much
    // as twenty are; `Retry-After` reads all-digit values this way too.
    let value = http::HeaderValue::from_static("9999999999999999999999999999999999999999");
    assert_eq!(grpc_pushback(&value), Pushback::RetryAfter(MAX_PUSHBACK));
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_at_run_time_is_a_prompt_rejection_and_recovers() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(1)), 3)
        .clone_requests()
        .build(["a", "b"], move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    handle.set_endpoints(Vec::<&str>::new()).unwrap();
    assert!(handle.all_out());
    let started = Instant::now();
    let err = upstream.clone().oneshot(0).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "no wait, no hang");
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::NoHealthyEndpoint),
        "{err}"
    );
    assert!(err.to_string().contains("model"), "{err}");
    handle.insert("c").unwrap();
    upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(backends.calls_to("c"), 1);
}

/// The ejection count decays for each base ejection time the endpoint is
/// in rotation, counted from the end of its ejection: an upstream idle for
/// an hour after the ejection ended (nobody noticed the return) does not
/// keep the count, and the next ejection is the first one's length again.
#[tokio::test(start_paused = true)]
async fn the_ejection_count_decays_from_the_end_of_the_ejection_not_from_the_next_call() {
    let backends = Backends::default();
    let b = backends.clone();
    let events = EventSink::new(16);
    let mut seen = events.subscribe();
    let upstream = Upstream::builder("model")
        .outlier(policy(1))
        .clone_requests()
        .events(events)
        .build(URIS, move |uri| b.endpoint(uri));
    backends.set("a", Behaviour::Refuse);
    while backends.calls_to("a") == 0 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    assert!(matches!(
        seen.try_recv().unwrap().kind(),
        EventKind::EndpointEjected { ejections: 1, .. }
    ));
    // Idle for an hour: no call, no look at the endpoints.
    tokio::time::advance(Duration::from_secs(3_600)).await;
    while backends.calls_to("a") == 1 {
        upstream.clone().oneshot(0).await.unwrap();
    }
    let kinds: Vec<EventKind> = std::iter::from_fn(|| seen.try_recv().ok())
        .map(|e| e.kind().clone())
        .collect();
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            EventKind::EndpointEjected { ejections: 1, duration, .. } if *duration == Duration::from_secs(30)
        )),
        "{kinds:?}"
    );
}

/// An endpoint written with a base path (`http://10.0.0.2:7001/api`, which
/// the configuration accepts): the path is dropped without a word, and
/// every request goes to the server's root. It should be kept (joined
/// before the request's path) or refused.
#[tokio::test]
async fn an_endpoint_with_a_base_path_keeps_it_or_is_refused() {
    use tower_hardening_upstream::SetEndpoint;
    let client = service_fn(|request: http::Request<()>| async move {
        Ok::<_, std::convert::Infallible>(request.uri().to_string())
    });
    match SetEndpoint::new("http://10.0.0.2:7001/api", client) {
        Err(_) => {}
        Ok(endpoint) => {
            let request = http::Request::get("/v1/models").body(()).unwrap();
            assert_eq!(
                endpoint.oneshot(request).await.unwrap(),
                "http://10.0.0.2:7001/api/v1/models"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn endpoints_replaced_while_hedges_are_in_flight_fail_nothing() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(20)), 2)
        .clone_requests()
        .build(["a", "b", "c"], move |uri| b.endpoint(uri));
    let handle = upstream.handle();
    for uri in ["a", "b", "c"] {
        backends.set(uri, Behaviour::Slow(Duration::from_millis(100)));
    }
    let mut calls = Vec::new();
    for n in 0..10 {
        calls.push(tokio::spawn(upstream.clone().oneshot(n)));
    }
    // Both hedges of every call are out.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(backends.total(), 30);
    handle.set_endpoints(["d"]).unwrap();
    assert!(!handle.remove("a"));
    for call in calls {
        call.await.unwrap().unwrap();
    }
    upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(backends.calls_to("d"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_huge_max_hedges_stops_at_the_endpoints_there_are() {
    let backends = Backends::default();
    let b = backends.clone();
    let upstream = Upstream::builder("model")
        .hedge(HedgeDelay::Fixed(Duration::from_millis(1)), u32::MAX)
        .clone_requests()
        .build(URIS, move |uri| b.endpoint(uri));
    for uri in URIS {
        backends.set(uri, Behaviour::Slow(Duration::from_millis(100)));
    }
    let started = Instant::now();
    upstream.clone().oneshot(0).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(backends.total(), 3, "one attempt per endpoint, no more");
}
