//! The fallback layer alone: which cases it answers, and what happens when
//! the fallback itself fails, panics or is cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_core::{
    BoxError, CircuitOpen, ClientBodyError, Outcome, Overloaded, QueueTimeout, RateLimited,
    fallback, rejection_of,
};
use tower_hardening_recovery::{Cause, FallbackCase, FallbackLayer, FallbackOn};

fn failing_with(
    error: impl Fn() -> BoxError + Clone + Send + 'static,
) -> impl Service<u32, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: u32| {
        let error = error.clone();
        async move { Err::<String, BoxError>(error()) }
    })
}

#[tokio::test]
async fn every_refusal_and_a_failure_fall_back() {
    let layer = FallbackLayer::new(|cause: Cause| format!("fallback: {}", cause.case()));
    let cases: Vec<(BoxError, &str)> = vec![
        (CircuitOpen::new("a").into(), "circuit_open"),
        (Overloaded::new("a").into(), "overloaded"),
        (
            RateLimited::new("a", Duration::from_secs(1)).into(),
            "rate_limited",
        ),
        (
            QueueTimeout::new("a", Duration::from_secs(1)).into(),
            "queue_timeout",
        ),
        ("connection reset".into(), "failure"),
    ];
    for (error, case) in cases {
        let error = Arc::new(std::sync::Mutex::new(Some(error)));
        let mut svc = layer.layer(failing_with(move || error.lock().unwrap().take().unwrap()));
        let (answer, marked) = {
            let future = svc.ready().await.unwrap().call(1);
            let mut future = std::pin::pin!(future);
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let (polled, marked) = fallback::watch(|| future.as_mut().poll(&mut cx));
            (polled, marked)
        };
        let std::task::Poll::Ready(answer) = answer else {
            panic!("a closure answers at once")
        };
        assert_eq!(answer.unwrap(), format!("fallback: {case}"));
        assert!(marked, "the answer is marked for metrics above");
    }
    assert_eq!(layer.stats().answered, 5);
}

#[tokio::test]
async fn only_the_configured_cases_fall_back() {
    let layer = FallbackLayer::new(|_: Cause| "cached".to_owned())
        .on(FallbackOn::none().with(FallbackCase::CircuitOpen));
    let mut open = layer.layer(failing_with(|| CircuitOpen::new("a").into()));
    assert_eq!(open.ready().await.unwrap().call(1).await.unwrap(), "cached");
    let mut limited = layer.layer(failing_with(|| {
        RateLimited::new("a", Duration::from_secs(1)).into()
    }));
    let err = limited.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<RateLimited>(), "{err}");
}

#[tokio::test]
async fn a_clients_broken_body_never_falls_back() {
    let layer = FallbackLayer::new(|_: Cause| "cached".to_owned());
    let mut svc = layer.layer(failing_with(|| {
        ClientBodyError::broken("reset by peer").into()
    }));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<ClientBodyError>(), "{err}");
    assert_eq!(layer.stats().answered, 0);
}

#[tokio::test]
async fn a_failed_response_falls_back_when_the_classifier_says_so() {
    let layer =
        FallbackLayer::new(|_: Cause| 200u16).classifier(|result: &Result<u16, BoxError>| {
            match result {
                Ok(status) if *status >= 500 => Outcome::Failure,
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure,
            }
        });
    let mut svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, BoxError>(status)
    }));
    assert_eq!(svc.ready().await.unwrap().call(503).await.unwrap(), 200);
    assert_eq!(svc.ready().await.unwrap().call(404).await.unwrap(), 404);
}

#[tokio::test]
async fn a_fallback_that_fails_or_panics_surfaces_the_original_error() {
    let panicking = FallbackLayer::new(|_: Cause| -> String { panic!("the cache is gone") });
    let mut svc = panicking.layer(failing_with(|| CircuitOpen::new("prices").into()));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(rejection_of(&*err).is_some(), "the original refusal: {err}");
    assert_eq!(panicking.stats().failed, 1);

    let failing = FallbackLayer::service(service_fn(|_: Cause| async {
        Err::<String, BoxError>("the cache is down too".into())
    }));
    let mut svc = failing.layer(failing_with(|| "upstream down".into()));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "upstream down");

    let panicking_service = FallbackLayer::service(service_fn(|_: Cause| async {
        if true {
            panic!("in the answer's future");
        }
        Ok::<String, BoxError>(String::new())
    }));
    let mut svc = panicking_service.layer(failing_with(|| "upstream down".into()));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "upstream down");
}

#[tokio::test(start_paused = true)]
async fn cancelled_mid_answer_holds_nothing() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let slow = FallbackLayer::service(service_fn(move |_: Cause| {
        let guard = Guard(flag.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(guard);
            Ok::<String, BoxError>("late".to_owned())
        }
    }));
    let mut svc = slow.layer(failing_with(|| CircuitOpen::new("a").into()));
    let future = svc.ready().await.unwrap().call(1);
    let timed_out = tokio::time::timeout(Duration::from_secs(1), future).await;
    assert!(timed_out.is_err());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the answer's future went with the request"
    );
    assert_eq!(slow.stats(), Default::default());
}
