//! `breaker_closed`: the cost of a circuit breaker on the closed path.
//!
//! Every breaker wraps the same trivial `service_fn`, is built once outside
//! the measured loop, and each iteration is `ready().await` +
//! `call().await` in one task on a current-thread runtime. The bare service
//! is measured in the same run, so overhead = breaker - bare.
//!
//! `two_tasks`: two tasks on a two-worker runtime share one breaker; each
//! makes half the calls. Reported as time per call (lower is better).
//!
//! Run: `cargo bench -p tower-hardening-breaker --bench breaker_closed`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_bench_support::{
    bare, criterion, current_thread, one_task, two_tasks, two_workers,
};
use tower_hardening_breaker::{CircuitBreakerLayer, SlidingWindow};

/// A handler that does `rounds` rounds of hashing (64 rounds is about
/// 75 ns here, 1,024 about 1 us), for the throughput ratio a service with
/// a non-trivial handler would see.
fn working(
    rounds: u64,
) -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(move |x: u64| async move {
        let mut h = x;
        for i in 0..black_box(rounds) {
            h = (h ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        }
        Ok::<_, Infallible>(black_box(h))
    })
}

fn ours() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("bench")
        .sliding_window(SlidingWindow::count(100))
        .minimum_calls(20)
        .build()
        .expect("valid settings")
}

fn ours_slow_calls() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("bench")
        .sliding_window(SlidingWindow::count(100))
        .slow_call_duration(Duration::from_secs(2))
        .build()
        .expect("valid settings")
}

fn ours_time_window() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("bench")
        .sliding_window(SlidingWindow::time(Duration::from_secs(60)))
        .build()
        .expect("valid settings")
}

fn theirs() -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .build()
        .expect("valid settings")
}

fn closed_one_task(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("breaker_closed");

    let mut svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = ours().layer(bare());
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = ours_slow_calls().layer(bare());
    group.bench_function("tower_hardening_slow_call_detection", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = ours_time_window().layer(bare());
    group.bench_function("tower_hardening_time_window", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = theirs().layer(bare());
    group.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    // recloser is not a tower layer: it wraps the inner future.
    let recloser = recloser::AsyncRecloser::from(
        recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(100)
            .build(),
    );
    let mut inner = bare();
    group.bench_function("recloser", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    let fut = inner.ready().await.unwrap().call(i);
                    black_box(recloser.call(fut).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn closed_two_tasks(c: &mut Criterion) {
    let rt = two_workers();
    let mut group = c.benchmark_group("breaker_closed_two_tasks");
    let svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = ours().layer(bare());
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = theirs().layer(bare());
    group.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });

    for rounds in [64, 1_024] {
        let svc = working(rounds);
        group.bench_function(format!("handler_{rounds}_rounds"), |b| {
            b.iter_custom(|n| two_tasks(&rt, &svc, n))
        });
        let svc = ours().layer(working(rounds));
        group.bench_function(format!("handler_{rounds}_rounds_tower_hardening"), |b| {
            b.iter_custom(|n| two_tasks(&rt, &svc, n))
        });
    }
    group.finish();
}

/// What one clock read costs here: the breaker reads the clock only for
/// slow-call detection (twice per call) and time windows (once). Benches
/// build with tokio's `test-util` (enabled by the tests' dev-dependency),
/// whose `Instant::now` also checks for a paused clock; measuring both
/// shows whether that skews the breaker figures.
fn clock(c: &mut Criterion) {
    let rt = current_thread();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("clock_read");
    group.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    group.bench_function("tokio_instant_now_test_util", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = closed_one_task, closed_two_tasks, clock
}
criterion_main!(benches);
