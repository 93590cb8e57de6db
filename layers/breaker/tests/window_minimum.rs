//! The call that brings a window to its minimum number of calls checks
//! the rates, whatever its outcome: time windows as count windows.

use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, CircuitState, SlidingWindow};

// Six failures among the first 13 calls of a 60 s window, then successes
// up to `minimum_calls` = 20: a failure rate of 0.3 over a 0.25
// threshold. The 20th call, a success, opens the breaker (before, only a
// failure or slow call looked, so the breaker served on above its
// threshold until a later failure).
#[tokio::test(start_paused = true)]
async fn a_time_window_reaching_its_minimum_checks_the_rates() {
    let layer = CircuitBreakerLayer::builder()
        .name("time-min")
        .sliding_window(SlidingWindow::time(Duration::from_secs(60)))
        .minimum_calls(20)
        .failure_rate_threshold(0.25)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    }));
    for i in 0..20 {
        let fail = [0, 1, 2, 10, 11, 12].contains(&i);
        let _ = svc.ready().await.unwrap().call(fail).await;
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (20, 6));
    assert_eq!(
        snapshot.state,
        CircuitState::Open,
        "20 calls, failure rate {:?} over a 0.25 threshold, still closed",
        snapshot.failure_rate
    );
}
