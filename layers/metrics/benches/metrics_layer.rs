//! `metrics_layer`: the per-call cost of `MetricsLayer`.
//!
//! One task, current-thread runtime, `ready().await` + `call().await` on a
//! trivial `service_fn`, layers built once outside the loop. The same layer
//! is measured with no recorder (noop handles), with a `MetricsCollector`,
//! and with metrics-exporter-prometheus's recorder (handles registered
//! once in both cases), all in the same run.
//!
//! Run: `cargo bench -p tower-hardening-metrics --bench metrics_layer`

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, service_fn};
use tower_hardening_bench_support::{
    bare, criterion, current_thread, one_task, two_tasks, two_workers,
};
use tower_hardening_metrics::{MetricsCollector, MetricsLayer};

fn per_call(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("metrics_layer");

    let mut svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let mut svc = MetricsLayer::new("bench").layer(bare());
    group.bench_function("no_recorder", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let collector = rt.block_on(async { MetricsCollector::builder().build().unwrap() });
    let layer = metrics::with_local_recorder(&collector, || MetricsLayer::new("bench"));
    let mut svc = layer.layer(bare());
    group.bench_function("collector", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let layer = metrics::with_local_recorder(&prometheus, || MetricsLayer::new("bench"));
    let mut svc = layer.layer(bare());
    group.bench_function("prometheus_exporter", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });

    // The same three metrics through the macros on every request (no
    // handles kept), as a service that does not register them once would.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let clock = quanta::Clock::new();
    let mut svc = service_fn(move |x: u64| {
        let clock = clock.clone();
        async move {
            metrics::gauge!("hardening_requests_in_flight", "service" => "bench").increment(1.0);
            let start = clock.raw();
            let out = black_box(x);
            let seconds = clock.delta_as_nanos(start, clock.raw()) as f64 / 1e9;
            metrics::counter!("hardening_requests_total", "service" => "bench", "outcome" => "success")
                .increment(1);
            metrics::histogram!("hardening_request_duration_seconds", "service" => "bench", "outcome" => "success")
                .record(seconds);
            metrics::gauge!("hardening_requests_in_flight", "service" => "bench").decrement(1.0);
            Ok::<_, Infallible>(out)
        }
    });
    group.bench_function("prometheus_exporter_macros_per_call", |b| {
        b.iter_custom(|n| metrics::with_local_recorder(&prometheus, || one_task(&rt, &mut svc, n)))
    });
    group.finish();

    // Two tasks on two workers sharing one layer (and one series each).
    let two = two_workers();
    let mut group = c.benchmark_group("metrics_layer_two_tasks");
    let svc = bare();
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| two_tasks(&two, &svc, n))
    });
    let svc = MetricsLayer::new("bench").layer(bare());
    group.bench_function("no_recorder", |b| {
        b.iter_custom(|n| two_tasks(&two, &svc, n))
    });
    let layer = metrics::with_local_recorder(&collector, || MetricsLayer::new("bench2"));
    let svc = layer.layer(bare());
    group.bench_function("collector", |b| b.iter_custom(|n| two_tasks(&two, &svc, n)));
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let layer = metrics::with_local_recorder(&prometheus, || MetricsLayer::new("bench"));
    let svc = layer.layer(bare());
    group.bench_function("prometheus_exporter", |b| {
        b.iter_custom(|n| two_tasks(&two, &svc, n))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = per_call
}
criterion_main!(benches);
