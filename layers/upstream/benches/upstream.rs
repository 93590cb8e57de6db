//! `upstream`: the per-request cost of an upstream over three endpoints
//! when nothing fails, beside tower's `p2c::Balance` over the same three
//! endpoints (each in tower's `PeakEwma`), in one run.
//!
//! Each iteration is `ready().await` + `call().await` on a trivial
//! `service_fn` endpoint, one task, current-thread runtime, services
//! built once outside the loop.
//!
//! Run: `cargo bench -p tower-hardening-upstream --bench upstream`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower_hardening_bench_support::{bare, criterion, current_thread, one_task};
use tower_hardening_upstream::{HedgeDelay, Upstream};

const ENDPOINTS: [&str; 3] = ["http://a", "http://b", "http://c"];

fn success_path(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("upstream");

    let mut svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = rt.block_on(async {
        let endpoints = ENDPOINTS.map(|_| {
            PeakEwma::new(
                bare(),
                Duration::from_millis(30),
                10e9,
                CompleteOnResponse::default(),
            )
        });
        Balance::new(ServiceList::new(endpoints))
    });
    group.bench_function("tower_p2c_balance", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = rt.block_on(async {
        Upstream::builder("bench")
            .max_attempts(1)
            .build(ENDPOINTS, |_| bare())
    });
    group.bench_function("upstream_no_retries", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = rt.block_on(async {
        Upstream::builder("bench")
            .max_attempts(3)
            .hedge(HedgeDelay::Fixed(Duration::from_millis(30)), 1)
            .clone_requests()
            .build(ENDPOINTS, |_| bare())
    });
    group.bench_function("upstream_retries_and_hedging", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = success_path
}
criterion_main!(benches);
