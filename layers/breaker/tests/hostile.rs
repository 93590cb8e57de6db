//! The breaker under what real traffic, composition and hostile clients
//! do: panics caught above it, rejections from layers below it, keys from
//! request data, and durations at the edge of what the clock holds.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use metrics_util::debugging::DebuggingRecorder;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, CircuitOpen, CircuitState, SlidingWindow};
use tower_hardening_core::{BoxError, Overloaded, QueueTimeout, names};

fn breaker() -> tower_hardening_breaker::BreakerBuilder {
    CircuitBreakerLayer::builder()
        .name("dep")
        .sliding_window(SlidingWindow::count(4))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .wait_in_open(Duration::from_secs(10))
        .max_wait_in_open(Duration::from_secs(10))
}

/// A panicking half-open probe reopens the breaker even when a
/// `catch_unwind` above it (tower-http's `CatchPanic`, futures'
/// `catch_unwind`) drops the future only after the unwind has ended.
#[tokio::test(start_paused = true)]
async fn a_probe_that_panics_under_catch_unwind_reopens_the_breaker() {
    let layer = breaker().half_open_permits(1).build().unwrap();
    let handle = layer.handle();
    let panic_now = Arc::new(AtomicBool::new(false));
    let flag = panic_now.clone();
    let mut svc = layer.layer(service_fn(move |fail: bool| {
        let flag = flag.clone();
        async move {
            if flag.load(Ordering::SeqCst) {
                panic!("inner service panicked");
            }
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }
    }));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;

    panic_now.store(true, Ordering::SeqCst);
    let future = svc.ready().await.unwrap().call(false);
    let mut caught = Box::pin(AssertUnwindSafe(future).catch_unwind());
    // Polled inside catch_unwind; the inner future is still alive (held by
    // `caught`) after the panic was caught, as under CatchPanic.
    let result = caught.as_mut().await;
    assert!(result.is_err(), "the panic reached catch_unwind");
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "the panicking probe counted as a failure where it unwound"
    );
    drop(caught);
    assert_eq!(handle.state(), CircuitState::Open);
}

/// A panicking call in the closed state counts as a failure too, once.
#[tokio::test(start_paused = true)]
async fn panics_count_as_failures_under_catch_unwind() {
    let layer = breaker().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async {
        panic!("boom");
        #[allow(unreachable_code)]
        Ok::<(), BoxError>(())
    }));
    for _ in 0..3 {
        let future = svc.ready().await.unwrap().call(());
        let mut caught = Box::pin(AssertUnwindSafe(future).catch_unwind());
        assert!(caught.as_mut().await.is_err());
        drop(caught);
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (3, 3));
}

/// Rejections from a layer below the breaker (an admission queue, another
/// breaker) say nothing about the dependency: not recorded, never trip.
#[tokio::test(start_paused = true)]
async fn rejections_from_below_are_not_failures() {
    let layer = breaker().build().unwrap();
    let handle = layer.handle();
    let mut n = 0u32;
    let mut svc = layer.layer(service_fn(move |_: ()| {
        n += 1;
        let err: BoxError = match n % 3 {
            0 => Overloaded::new("pool").into(),
            1 => QueueTimeout::new("pool", Duration::from_secs(1)).into(),
            _ => CircuitOpen::new("inner").into(),
        };
        async move { Err::<(), BoxError>(err) }
    }));
    for _ in 0..20 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.snapshot().calls, 0);
}

/// Every refusal carries a non-zero hint and names the real state: forced
/// open hints at the open wait (no end is known), and never "0ns".
#[tokio::test(start_paused = true)]
async fn rejections_carry_a_real_hint_and_their_state() {
    let layer = breaker().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    handle.force_open();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after(), Some(Duration::from_secs(10)));
    assert_eq!(open.state(), CircuitState::ForcedOpen);
    assert_eq!(
        err.to_string(),
        "circuit breaker `dep` is forced open; retry after 10s"
    );
}

/// `wait_in_open` of `Duration::MAX` (or doubling past what the clock
/// holds) keeps the breaker open instead of panicking on `Instant + MAX`.
#[tokio::test(start_paused = true)]
async fn huge_open_waits_do_not_panic() {
    for (wait, max) in [
        (Duration::MAX, Duration::MAX),
        (Duration::from_secs(u64::MAX / 4), Duration::MAX),
    ] {
        let layer = breaker()
            .wait_in_open(wait)
            .max_wait_in_open(max)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(service_fn(|_: ()| async {
            Err::<(), BoxError>("boom".into())
        }));
        for _ in 0..4 {
            let _ = svc.ready().await.unwrap().call(()).await;
        }
        assert_eq!(handle.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(3600 * 24 * 365)).await;
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.downcast_ref::<CircuitOpen>().is_some());
        assert!(handle.snapshot().until_probe.unwrap() > Duration::from_secs(3600));
        handle.reset();
        assert_eq!(handle.state(), CircuitState::Closed);
    }
}

type Request = (String, bool);

/// A flood of unique keys (from request data) neither evicts the breaker
/// of a real upstream that is in use nor grows beyond `max_keys`.
#[tokio::test(start_paused = true)]
async fn unique_keys_do_not_evict_real_upstreams() {
    let layer = CircuitBreakerLayer::builder()
        .name("upstream")
        .sliding_window(SlidingWindow::count(100))
        .minimum_calls(10)
        .build_keyed(|req: &Request| req.0.clone(), 50)
        .unwrap()
        .new_keys_per_second(10);
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|req: Request| async move {
        if req.1 {
            Err::<(), BoxError>("boom".into())
        } else {
            Ok(())
        }
    }));
    // The real upstream: in use, with some failures on record.
    for i in 0..6 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(("models.internal".into(), i % 2 == 0))
            .await;
    }
    for round in 0..20 {
        for i in 0..500 {
            let key = format!("junk-{round}-{i}.attacker.example");
            let _ = svc.ready().await.unwrap().call((key, false)).await;
        }
        // The real upstream keeps being used between bursts.
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(("models.internal".into(), false))
            .await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(handle.len() <= 50, "kept {} breakers", handle.len());
    let real = handle
        .get(&"models.internal".to_owned())
        .expect("the real upstream's breaker is still kept");
    let snapshot = real.snapshot();
    assert_eq!(snapshot.calls, 26, "its window survived the flood");
    assert_eq!(snapshot.failures, 3);
}

/// Metrics of a keyed breaker are labelled by the layer's name only: a
/// thousand keys make no more series than one.
#[test]
fn keyed_metrics_do_not_grow_with_keys() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let layer = CircuitBreakerLayer::builder()
                .name("upstream")
                .sliding_window(SlidingWindow::count(2))
                .minimum_calls(2)
                .wait_in_open(Duration::from_secs(1))
                .build_keyed(|req: &Request| req.0.clone(), 10_000)
                .unwrap()
                .new_keys_per_second(100_000);
            let handle = layer.handle();
            let mut svc = layer.layer(service_fn(|_: Request| async {
                Err::<(), BoxError>("boom".into())
            }));
            for i in 0..1_000 {
                for _ in 0..3 {
                    let _ = svc
                        .ready()
                        .await
                        .unwrap()
                        .call((format!("host-{i}"), true))
                        .await;
                }
            }
            assert_eq!(handle.len(), 1_000);
            assert!(
                handle
                    .states()
                    .iter()
                    .all(|(_, state)| *state == CircuitState::Open)
            );
        });
    });
    let series = snapshotter.snapshot().into_vec();
    for (key, ..) in &series {
        assert!(
            names::ALL.contains(&key.key().name()),
            "{} is not in names::ALL",
            key.key().name()
        );
        for label in key.key().labels() {
            assert!(
                !label.value().contains("host-"),
                "a key became a label: {label:?}"
            );
        }
    }
    // The rejection counter, and one transition counter per (from, to)
    // pair of states, registered once for the layer: never per key.
    assert!(
        series.len() <= 1 + 36,
        "{} series: {series:?}",
        series.len()
    );
}

/// `half_open()` hands the decision to probes at once, from any state.
#[tokio::test(start_paused = true)]
async fn half_open_from_forced_open_probes_and_closes() {
    let layer = breaker().half_open_permits(2).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    handle.force_open();
    handle.half_open();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    for _ in 0..2 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// gRPC statuses in trailers are classified at the end of the body: a
/// stream ending in UNAVAILABLE is a failure, one ending in OK a success,
/// one dropped unread nothing.
#[tokio::test(start_paused = true)]
async fn grpc_trailers_are_classified_at_end_of_stream() {
    use http_body_util::{BodyExt, StreamBody};
    use tower_hardening_core::GrpcErrors;

    type Frames = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>,
        >,
    >;
    fn streamed(status: &'static str) -> http::Response<Frames> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(status));
        let frames = vec![
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"chunk"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        http::Response::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    let layer = breaker()
        .classifier(GrpcErrors::default())
        .build()
        .unwrap()
        .at_end_of_stream();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|status: &'static str| async move {
        Ok::<_, std::io::Error>(streamed(status))
    }));
    // Read to the end: the trailers decide.
    for status in ["0", "14", "14"] {
        let response = svc.ready().await.unwrap().call(status).await.unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (3, 2));
    // Dropped unread: nothing recorded.
    let response = svc.ready().await.unwrap().call("14").await.unwrap();
    drop(response);
    assert_eq!(handle.snapshot().calls, 3);
    // One more UNAVAILABLE stream makes 3 of 4: the breaker opens.
    let response = svc.ready().await.unwrap().call("14").await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
}

/// A body that already says it has ended (hyper drops it unpolled) is
/// decided at once; a 5xx that is not gRPC at all is a failure.
#[tokio::test(start_paused = true)]
async fn ended_bodies_and_plain_server_errors_are_decided_at_the_head() {
    use tower_hardening_core::GrpcErrors;

    let layer = breaker()
        .classifier(GrpcErrors::default())
        .build()
        .unwrap()
        .at_end_of_stream();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|status: u16| async move {
        let mut response = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok::<_, std::io::Error>(response)
    }));
    let response = svc.ready().await.unwrap().call(200).await.unwrap();
    assert_eq!(
        handle.snapshot().calls,
        1,
        "decided before anyone reads the body"
    );
    drop(response);
    let _ = svc.ready().await.unwrap().call(503).await.unwrap();
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (2, 1));
}

/// A half-open gRPC probe is decided by its trailers, not its head: a
/// stream that ends in UNAVAILABLE reopens the breaker; one that stalls
/// past the probe deadline is a failed probe and frees its permit.
#[tokio::test(start_paused = true)]
async fn a_grpc_probe_is_decided_by_its_trailers_within_the_probe_deadline() {
    use http_body_util::BodyExt;
    use tower_hardening_core::GrpcErrors;

    let layer = breaker()
        .half_open_permits(1)
        .probe_timeout(Duration::from_secs(2))
        .classifier(GrpcErrors::default())
        .build()
        .unwrap()
        .at_end_of_stream();
    let handle = layer.handle();
    // Each call's body: the first frame now, trailers after `delay`.
    let mut svc = layer.layer(service_fn(
        |(status, delay): (&'static str, u64)| async move {
            let frames = futures_util::stream::unfold(0u8, move |step| async move {
                match step {
                    0 => Some((
                        Ok(http_body::Frame::data(bytes::Bytes::from_static(b"chunk"))),
                        1,
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_secs(delay)).await;
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                        Some((
                            Ok::<_, std::io::Error>(http_body::Frame::trailers(trailers)),
                            2,
                        ))
                    }
                    _ => None,
                }
            });
            let body = http_body_util::StreamBody::new(Box::pin(frames));
            Ok::<_, std::io::Error>(http::Response::new(body))
        },
    ));
    // Trip: four UNAVAILABLE streams read to the end.
    for _ in 0..4 {
        let response = svc.ready().await.unwrap().call(("14", 0)).await.unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(11)).await;

    // The probe's head is fine; its trailers say UNAVAILABLE.
    let response = svc.ready().await.unwrap().call(("14", 1)).await.unwrap();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(
        handle.snapshot().probes_in_flight,
        1,
        "held until the trailers"
    );
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open, "the trailers decide");

    // The next probe stalls past its deadline: a failed probe.
    tokio::time::advance(Duration::from_secs(21)).await;
    let response = svc.ready().await.unwrap().call(("0", 60)).await.unwrap();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let mut body = response.into_body();
    let _ = body.frame().await; // the first chunk
    let late = tokio::time::timeout(Duration::from_secs(3), body.frame()).await;
    assert!(late.is_err(), "the stream itself goes on");
    assert_eq!(handle.state(), CircuitState::Open, "a late probe failed");
    assert_eq!(handle.snapshot().probes_in_flight, 0);
}
