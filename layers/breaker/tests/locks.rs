//! A transition is traced and published after the breaker's transition
//! lock is released: a subscriber (or log layer) that reads the breaker
//! when it hears of the transition does not deadlock, and a slow one
//! does not stall the calls that finish meanwhile.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tower_hardening_breaker::{BreakerHandle, CircuitBreakerLayer, CircuitState};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// A tracing layer that reads the breaker's snapshot on every event.
struct ReadsTheBreaker(Arc<OnceLock<BreakerHandle>>);

impl<S: tracing::Subscriber> Layer<S> for ReadsTheBreaker {
    fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
        if let Some(handle) = self.0.get() {
            let _ = handle.snapshot();
        }
    }
}

#[test]
fn a_subscriber_may_read_the_breaker_when_told_of_a_transition() {
    let handle_slot = Arc::new(OnceLock::new());
    let subscriber = Registry::default().with(ReadsTheBreaker(handle_slot.clone()));
    let (done, finished) = mpsc::channel();
    // On a thread of its own: with the old order it deadlocks for good.
    std::thread::spawn(move || {
        tracing::subscriber::with_default(subscriber, || {
            let layer = CircuitBreakerLayer::builder().build().unwrap();
            let handle = layer.handle();
            handle_slot.set(handle.clone()).ok();
            handle.force_open();
            handle.reset();
            done.send(handle.state()).unwrap();
        });
    });
    let state = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the transition finished: nothing was traced under the lock");
    assert_eq!(state, CircuitState::Closed);
}
