//! `hardening`: the facade's costs.
//!
//! - `handle/health`, `handle/service_health`: reading the latest
//!   snapshots from a running hardening (the target: lock-free, under
//!   50 ns).
//! - `stack/*`: one `ready().call()` through the stack `layer(name)` builds
//!   (metrics into the collector, admission, retry on, breaker, no
//!   timeout) against the same layers composed by hand with the same
//!   settings, and the bare service, in the same run.
//!
//! Run: `cargo bench -p tower-hardening --bench hardening`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, ServiceBuilder};
use tower_hardening::breaker::CircuitBreakerLayer;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::limit::{ResourceLimitLayer, ResourcePool};
use tower_hardening::metrics::MetricsLayer;
use tower_hardening::recovery::RetryLayer;
use tower_hardening::{Priority, SystemHardening};
use tower_hardening_bench_support::{bare, criterion, current_thread, one_task};

const CONFIG: &str = r#"
    [services.model]
    [services.model.retry]
    enabled = true
    [services.model.limit]
    enabled = true
    max_concurrency = 64
"#;

fn handle_reads(c: &mut Criterion) {
    let rt = current_thread();
    let config = SystemHardeningConfig::from_toml_str(CONFIG).unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let _layer = hardening.layer("model").unwrap();
    let handle = rt.block_on(async {
        let handle = hardening.start();
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle
    });
    let mut group = c.benchmark_group("handle");
    group.bench_function("health", |b| b.iter(|| black_box(handle.health())));
    group.bench_function("service_health", |b| {
        b.iter(|| black_box(handle.service_health(black_box("model"))))
    });
    group.bench_function("ready", |b| b.iter(|| black_box(handle.ready())));
    group.finish();
    rt.block_on(handle.shutdown());
}

fn stack(c: &mut Criterion) {
    let rt = current_thread();
    let config = SystemHardeningConfig::from_toml_str(CONFIG).unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let collector = hardening.handle().metrics().clone();
    let mut ours = hardening.layer("model").unwrap().layer(bare());

    // The same layers, composed by hand, recording into a collector.
    let pool = ResourcePool::builder("model")
        .capacity(64)
        .max_queue(1_000)
        .queue_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let by_hand_metrics = metrics::with_local_recorder(&collector, || MetricsLayer::new("by-hand"));
    let mut by_hand = ServiceBuilder::new()
        .layer(by_hand_metrics)
        .layer(ResourceLimitLayer::new(pool).priority(|_: &u64| Priority::NORMAL))
        .layer(RetryLayer::builder().name("by-hand").build().unwrap())
        .layer(
            CircuitBreakerLayer::builder()
                .name("by-hand")
                .build()
                .unwrap(),
        )
        .service(bare());
    let mut bare = bare();

    let mut group = c.benchmark_group("stack");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| one_task(&rt, &mut bare, iters))
    });
    group.bench_function("layer(name)", |b| {
        b.iter_custom(|iters| one_task(&rt, &mut ours, iters))
    });
    group.bench_function("by_hand", |b| {
        b.iter_custom(|iters| one_task(&rt, &mut by_hand, iters))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = handle_reads, stack
}
criterion_main!(benches);
