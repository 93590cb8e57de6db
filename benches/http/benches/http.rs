//! `http`: one in-process axum request (`GET /`, `oneshot`, the body read
//! to the end) through each compared app: bare, tower's built-ins
//! (`HandleErrorLayer` + `ConcurrencyLimit` + `Timeout`), and `http_layer`
//! with every part on (metrics into the hardening's collector). One task,
//! and two tasks on two workers (wall time per request; perfect scaling
//! halves it).
//!
//! Run: `cargo bench -p tower-hardening-http-bench --bench http`

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_hardening_bench_support::{criterion, current_thread, two_workers};
use tower_hardening_http_bench::{Mode, get_root, hardening, http_app};

async fn requests(app: Router, n: u64) {
    for _ in 0..n {
        let response = app.clone().oneshot(get_root()).await.expect("infallible");
        black_box(response.into_body().collect().await.expect("a body"));
    }
}

fn one_task(rt: &tokio::runtime::Runtime, app: &Router, n: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        requests(app.clone(), n).await;
        start.elapsed()
    })
}

fn two_tasks(rt: &tokio::runtime::Runtime, app: &Router, n: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..2)
            .map(|_| tokio::spawn(requests(app.clone(), n / 2)))
            .collect();
        for task in tasks {
            task.await.expect("a task");
        }
        start.elapsed()
    })
}

fn http(c: &mut Criterion) {
    let one = current_thread();
    let two = two_workers();
    // One hardening per runtime: its collector's ticker runs there.
    let apps = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let hardening = hardening().expect("valid settings");
            Mode::ALL.map(|mode| {
                // As `axum::serve` does for each connection.
                (
                    mode,
                    http_app(mode, &hardening).expect("an app").with_state(()),
                )
            })
        })
    };

    let mut group = c.benchmark_group("http_one_task");
    for (mode, app) in apps(&one) {
        group.bench_function(mode.name(), |b| b.iter_custom(|n| one_task(&one, &app, n)));
    }
    group.finish();

    let mut group = c.benchmark_group("http_two_tasks");
    for (mode, app) in apps(&two) {
        group.bench_function(mode.name(), |b| b.iter_custom(|n| two_tasks(&two, &app, n)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = http
}
criterion_main!(benches);
