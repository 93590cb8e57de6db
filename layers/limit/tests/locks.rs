//! Shed and lease-reclaim events are traced and published after the
//! pool's lock is released: a log layer that reads the pool when it hears
//! of them does not deadlock, and a slow one does not stall the pool.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use tower_hardening_limit::{Acquire, Priority, ResourcePool};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// A tracing layer that reads the pool's stats on every event.
struct ReadsThePool(Arc<OnceLock<ResourcePool>>);

impl<S: tracing::Subscriber> Layer<S> for ReadsThePool {
    fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
        if let Some(pool) = self.0.get() {
            let _ = pool.stats();
        }
    }
}

#[test]
fn a_log_layer_may_read_the_pool_when_told_of_a_shed_or_a_reclaim() {
    let pool_slot = Arc::new(OnceLock::new());
    let subscriber = Registry::default().with(ReadsThePool(pool_slot.clone()));
    let (done, finished) = mpsc::channel();
    // On a thread of its own: with the old order it deadlocks for good.
    std::thread::spawn(move || {
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let _guard = runtime.enter();
            let pool = ResourcePool::builder("units").capacity(1).build().unwrap();
            pool_slot.set(pool.clone()).ok();
            let held = runtime
                .block_on(pool.acquire(Acquire::new("holder").priority(Priority::HIGH)))
                .unwrap()
                .detach();
            let mut low = Box::pin(pool.acquire(Acquire::new("low").priority(Priority::LOW)));
            assert!((&mut low).now_or_never().is_none(), "LOW waits");
            // Refuses the waiting LOW request: a `Shed` event.
            pool.shed_below(Priority::HIGH);
            // Takes the detached lease back: a `LeaseReclaimed` event.
            pool.shutdown();
            done.send((held, pool.stats().active_leases)).unwrap();
        });
    });
    let (_, active) = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("shed and shutdown finished: nothing was traced under the lock");
    assert_eq!(active, 0);
}
