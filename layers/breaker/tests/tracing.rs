//! One breaker cycle as a `tracing` subscriber sees it: levels, targets
//! and fields.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, SlidingWindow};
use tower_hardening_core::BoxError;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    level: tracing::Level,
    target: String,
    message: String,
    fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Fields(Vec<(String, String)>, String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = format!("{value:?}");
        } else {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.1 = value.to_owned();
        } else {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message: fields.1,
            fields: fields.0,
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_cycle_in_the_logs() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    // No event sink: tracing sees the story anyway.
    let layer = CircuitBreakerLayer::builder()
        .name("audio")
        .sliding_window(SlidingWindow::count(4))
        .minimum_calls(4)
        .wait_in_open(Duration::from_secs(1))
        .half_open_permits(1)
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("boom".into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    for _ in 0..100 {
        let _ = svc.ready().await.unwrap().call(false).await; // rejected
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let _ = svc.ready().await.unwrap().call(true).await; // the probe fails
    tokio::time::advance(Duration::from_secs(2)).await;
    svc.ready().await.unwrap().call(false).await.unwrap(); // the probe succeeds

    let seen = capture.0.lock().unwrap().clone();
    let summary: Vec<(tracing::Level, &str)> =
        seen.iter().map(|s| (s.level, s.message.as_str())).collect();
    use tracing::Level;
    assert_eq!(
        summary,
        [
            (Level::WARN, "circuit opened"),
            (Level::DEBUG, "calls rejected"), // once for the open period, not 100 times
            (Level::INFO, "circuit state changed"), // open -> half-open
            (Level::WARN, "half-open probe failed: circuit reopened"),
            (Level::INFO, "circuit state changed"),
            (Level::INFO, "circuit closed"),
        ],
        "{seen:#?}"
    );
    for event in &seen {
        assert_eq!(event.target, "tower_hardening::breaker");
        assert!(
            event
                .fields
                .contains(&("service".to_owned(), "audio".to_owned())),
            "{event:?}"
        );
    }
    assert!(
        seen[0]
            .fields
            .contains(&("to".to_owned(), "open".to_owned()))
    );
}
