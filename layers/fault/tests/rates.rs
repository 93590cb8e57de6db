//! Injected rates match the configured ones; switching takes effect on the
//! next call.

use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_fault::{FaultLayer, InjectedFault};

const CALLS: u32 = 10_000;

#[tokio::test(start_paused = true)]
async fn injected_rates_are_within_two_points_over_ten_thousand_calls() {
    let layer = FaultLayer::builder()
        .name("audio")
        .error_rate(0.2)
        .latency(0.3, Duration::from_millis(10))
        .http_status(0.1, http::StatusCode::SERVICE_UNAVAILABLE)
        .build()
        .unwrap();
    let faults = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async {
        Ok::<_, std::io::Error>(http::Response::new(String::from("ok")))
    }));
    let (mut errors, mut unavailable, mut slow) = (0u32, 0u32, 0u32);
    for _ in 0..CALLS {
        let started = tokio::time::Instant::now();
        match svc.ready().await.unwrap().call(()).await {
            Err(err) => {
                assert!(err.is::<InjectedFault>());
                errors += 1;
            }
            Ok(response) if response.status() == 503 => unavailable += 1,
            Ok(response) => assert_eq!(response.body(), "ok"),
        }
        if started.elapsed() >= Duration::from_millis(10) {
            slow += 1;
        }
    }
    let share = |n: u32| f64::from(n) / f64::from(CALLS);
    assert!(
        (share(errors) - 0.2).abs() <= 0.02,
        "errors {}",
        share(errors)
    );
    assert!(
        (share(unavailable) - 0.1).abs() <= 0.02,
        "503s {}",
        share(unavailable)
    );
    assert!((share(slow) - 0.3).abs() <= 0.02, "latency {}", share(slow));
    let stats = faults.stats();
    assert_eq!(
        (stats.errors, stats.responses, stats.latencies),
        (u64::from(errors), u64::from(unavailable), u64::from(slow))
    );
}

#[tokio::test(start_paused = true)]
async fn switching_off_takes_effect_on_the_next_call() {
    let layer = FaultLayer::builder().error_rate(1.0).build().unwrap();
    let faults = layer.handle();
    let mut svc = layer.layer(service_fn(
        |x: u32| async move { Ok::<_, std::io::Error>(x) },
    ));
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    faults.disable();
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
    faults.enable();
    faults.set_error_rate(0.0);
    faults.set_hang_rate(1.0);
    let hung =
        tokio::time::timeout(Duration::from_secs(60), svc.ready().await.unwrap().call(3)).await;
    assert!(hung.is_err(), "a hang never answers");
    faults.set_hang_rate(0.0);
    assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 4);
}

#[test]
fn bad_rates_are_refused_naming_the_field() {
    let err = FaultLayer::builder().hang_rate(-0.1).build().unwrap_err();
    assert_eq!(err.field(), "hang_rate");
    let err = FaultLayer::builder()
        .error_rate(0.7)
        .hang_rate(0.5)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("at most 1"), "{err}");
}
