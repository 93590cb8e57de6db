//! 2 worker threads, 64 tasks, 100,000 calls with random outcomes and
//! random cancellations against one breaker: half-open never lets more
//! than `half_open_permits` calls into the inner service, and the run ends
//! with no permit held. Its own test binary, so nothing else competes for
//! the two threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, CircuitState, SlidingWindow};
use tower_hardening_core::{EventKind, EventSink};

const TASKS: u64 = 64;
const CALLS: u64 = 100_000;
const PERMITS: u32 = 3;

/// xorshift64*: enough randomness for a load test, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Yields to the scheduler `n` times.
struct YieldTimes(u8);

impl Future for YieldTimes {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Counts probes inside the inner service; decremented on drop so a
/// cancelled call leaves the count too.
struct Inside {
    probes: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
    probe: bool,
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.all.fetch_sub(1, Ordering::SeqCst);
        if self.probe {
            self.probes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[derive(Clone, Copy)]
struct Request {
    fail: bool,
    work: u8,
    /// The breaker's state just before this call's `poll_ready`.
    state_before: CircuitState,
}

#[test]
fn half_open_never_exceeds_its_permits_under_load() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let events = EventSink::new(1 << 16);
    let mut transitions = events.subscribe();
    let layer = CircuitBreakerLayer::builder()
        .name("load")
        .sliding_window(SlidingWindow::count(20))
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .wait_in_open(Duration::from_millis(50))
        .max_wait_in_open(Duration::from_millis(50))
        .half_open_permits(PERMITS)
        .events(events.clone())
        .build()
        .unwrap();
    let handle = layer.handle();

    let probes_inside = Arc::new(AtomicUsize::new(0));
    let all_inside = Arc::new(AtomicUsize::new(0));
    let max_probes_inside = Arc::new(AtomicUsize::new(0));
    let half_open_entries = Arc::new(AtomicU64::new(0));
    let inner = {
        let (probes_inside, all_inside, max_probes_inside) = (
            probes_inside.clone(),
            all_inside.clone(),
            max_probes_inside.clone(),
        );
        let (handle, half_open_entries) = (handle.clone(), half_open_entries.clone());
        service_fn(move |req: Request| {
            // Runs synchronously inside `call`, right after admission.
            let now = handle.state();
            // A call admitted as a probe saw open or half-open before its
            // poll_ready and half-open now.
            let probe = now == CircuitState::HalfOpen && req.state_before != CircuitState::Closed;
            all_inside.fetch_add(1, Ordering::SeqCst);
            if probe {
                half_open_entries.fetch_add(1, Ordering::Relaxed);
                let inside = probes_inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_probes_inside.fetch_max(inside, Ordering::SeqCst);
            }
            let guard = Inside {
                probes: probes_inside.clone(),
                all: all_inside.clone(),
                probe,
            };
            async move {
                YieldTimes(req.work).await;
                drop(guard);
                if req.fail {
                    Err(std::io::Error::other("boom"))
                } else {
                    Ok(())
                }
            }
        })
    };
    let svc = layer.layer(inner);

    let (completed, cancelled, rejected) = runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let mut svc = svc.clone();
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut rng =
                        Rng(0x9E37_79B9_7F4A_7C15 ^ (task + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
                    let (mut completed, mut cancelled, mut rejected) = (0u64, 0u64, 0u64);
                    let share = CALLS / TASKS + u64::from(task < CALLS % TASKS);
                    for i in 0..share {
                        // Alternate bad and good phases so the breaker
                        // opens, probes, closes and reopens many times.
                        let failure_percent = if (i / 200) % 2 == 0 { 80 } else { 5 };
                        let req = Request {
                            fail: rng.below(100) < failure_percent,
                            work: rng.below(4) as u8,
                            state_before: handle.state(),
                        };
                        let future = svc.ready().await.unwrap().call(req);
                        if rng.below(100) < 20 {
                            // Cancel after a random number of polls.
                            let mut future = Box::pin(future);
                            let polls = rng.below(4);
                            let mut finished = false;
                            for _ in 0..polls {
                                if futures_util::poll!(&mut future).is_ready() {
                                    finished = true;
                                    break;
                                }
                                tokio::task::yield_now().await;
                            }
                            if finished {
                                completed += 1
                            } else {
                                cancelled += 1
                            }
                        } else {
                            match future.await {
                                Err(e) if e.is::<tower_hardening_breaker::CircuitOpen>() => {
                                    // Back off a little, as a client would.
                                    rejected += 1;
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                _ => completed += 1,
                            }
                        }
                        assert!(handle.snapshot().probes_in_flight <= PERMITS);
                    }
                    (completed, cancelled, rejected)
                })
            })
            .collect();
        let mut totals = (0, 0, 0);
        for task in tasks {
            let (c, x, r) = task.await.unwrap();
            totals = (totals.0 + c, totals.1 + x, totals.2 + r);
        }
        totals
    });

    assert_eq!(completed + cancelled + rejected, CALLS);
    let (mut opens, mut closes) = (0, 0);
    loop {
        let event = match transitions.try_recv() {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        match event.kind() {
            EventKind::CircuitTransition {
                to: CircuitState::Open,
                ..
            } => opens += 1,
            EventKind::CircuitTransition {
                from: CircuitState::HalfOpen,
                to: CircuitState::Closed,
            } => closes += 1,
            _ => {}
        }
    }
    assert!(
        opens > 1 && closes > 1,
        "the run cycled the breaker: {opens} opens, {closes} closes"
    );
    assert!(
        half_open_entries.load(Ordering::Relaxed) > 0,
        "the run probed in half-open"
    );
    assert!(cancelled > 0 && rejected > 0);
    let max = max_probes_inside.load(Ordering::SeqCst);
    assert!(
        (1..=PERMITS as usize).contains(&max),
        "at most {PERMITS} probes inside the inner service at once, saw {max}"
    );
    assert_eq!(
        all_inside.load(Ordering::SeqCst),
        0,
        "every call left the inner service"
    );
    let snapshot = handle.snapshot();
    assert_eq!(
        snapshot.probes_in_flight, 0,
        "no permit held at the end: {snapshot:?}"
    );
    if snapshot.state == CircuitState::HalfOpen {
        // Every permit is free: exactly PERMITS calls can be reserved.
        runtime.block_on(async {
            let mut holders: Vec<_> = (0..PERMITS).map(|_| svc.clone()).collect();
            for holder in holders.iter_mut() {
                holder.ready().await.unwrap();
            }
            assert_eq!(handle.snapshot().probes_in_flight, PERMITS);
        });
    }
    eprintln!(
        "completed {completed}, cancelled {cancelled}, rejected {rejected}, {opens} opens, {closes} closes, half-open entries {}, max probes inside {max}",
        half_open_entries.load(Ordering::Relaxed)
    );
}
