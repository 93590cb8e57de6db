//! `limit_uncontended`: admission through `ResourceLimitLayer` with free
//! capacity, against tower's `ConcurrencyLimit`, in the same run.
//!
//! One task: `ready().await` + `call().await` on a trivial `service_fn`
//! on a current-thread runtime. Two tasks: two tasks on a two-worker
//! runtime share one limiter (each with its own service clone), each
//! making half the calls; time per call. Both limiters have a capacity of
//! 1,000, so nobody ever waits.
//!
//! Run: `cargo bench -p tower-hardening-limit --bench limit_uncontended`

use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower::limit::ConcurrencyLimitLayer;
use tower_hardening_bench_support::{
    bare, criterion, current_thread, one_task, two_tasks, two_workers,
};
use tower_hardening_limit::{Priority, ResourceLimitLayer, ResourcePool};

fn uncontended(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("limit_uncontended");
    let mut svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    let mut svc = ConcurrencyLimitLayer::new(1_000).layer(bare());
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    let mut svc = rt.block_on(async { ours_layer() }).layer(bare());
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    group.finish();

    let rt = two_workers();
    let mut group = c.benchmark_group("limit_uncontended_two_tasks");
    let svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = ConcurrencyLimitLayer::new(1_000).layer(bare());
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = ours_layer().layer(bare());
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    group.finish();
}

fn ours_layer() -> ResourceLimitLayer<fn(&u64) -> Priority> {
    ResourceLimitLayer::new(
        ResourcePool::builder("bench")
            .capacity(1_000)
            .build()
            .unwrap(),
    )
    .priority(normal as fn(&u64) -> Priority)
}

fn normal(_: &u64) -> Priority {
    Priority::NORMAL
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = uncontended
}
criterion_main!(benches);
