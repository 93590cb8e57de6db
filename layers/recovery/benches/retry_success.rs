//! `retry_success`: the cost of the retry layer when nothing fails.
//!
//! Each iteration is `ready().await` + `call().await` on a trivial
//! `service_fn`, one task, current-thread runtime, layers built once
//! outside the loop. Peer in the same run: tower's own `Retry` with a
//! policy that never retries (it still clones the request, as any retry
//! must).
//!
//! Run: `cargo bench -p tower-hardening-recovery --bench retry_success`

use std::future::Ready;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower::retry::{Policy, Retry};
use tower_hardening_bench_support::{
    bare, criterion, current_thread, one_task, two_tasks, two_workers,
};
use tower_hardening_recovery::RetryLayer;

#[derive(Clone)]
struct NeverRetry;

impl<Req: Clone, Res, E> Policy<Req, Res, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn success_path(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("retry_success");

    let mut svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = Retry::new(NeverRetry, bare());
    group.bench_function("tower_retry_never", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = RetryLayer::builder().build().unwrap().layer(bare());
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = RetryLayer::builder()
        .without_budget()
        .build()
        .unwrap()
        .layer(bare());
    group.bench_function("tower_hardening_no_budget", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    group.finish();

    // Two tasks on two workers sharing one layer (one budget).
    let rt = two_workers();
    let mut group = c.benchmark_group("retry_success_two_tasks");
    let svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = Retry::new(NeverRetry, bare());
    group.bench_function("tower_retry_never", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = rt.block_on(async { RetryLayer::builder().build().unwrap().layer(bare()) });
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = success_path
}
criterion_main!(benches);
