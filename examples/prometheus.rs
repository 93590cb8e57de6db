//! Prometheus through metrics-exporter-prometheus, fanned out with the
//! in-process collector: the hardening's stacks record into both, so
//! `handle.metrics()` answers window queries and the exporter renders
//! the same figures for Prometheus to scrape (here printed; in a server,
//! serve `handle.render()` or `handle.endpoints()`'s `/metrics`).
//!
//! Run: `cargo run --example prometheus`. One process exports its own
//! figures; many instances meet in Prometheus (or an OpenTelemetry
//! collector, see `examples/opentelemetry.rs`).

use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{BoxError, SystemHardening};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The exporter's recorder, not installed globally: the hardening fans
    // out to it (install it too if your own code records metrics).
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = prometheus.handle();

    let config = SystemHardeningConfig::from_toml_str("[services.audio-processing]")?;
    let hardening = SystemHardening::builder(config)
        .metrics_recorder(prometheus)
        .build()?;
    let layer = hardening.layer("audio-processing")?;
    let handle = hardening.start();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |x: u32| async move { Ok::<_, std::io::Error>(x) },
        ));
    for i in 0..10 {
        svc.clone().oneshot(i).await?;
    }

    // The exporter keeps histogram samples until upkeep folds them: in a
    // server, call this every few seconds (or let PrometheusBuilder's
    // `install` do it).
    scrape.run_upkeep();
    let text = scrape.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("hardening_requests_total") && l.contains("outcome=\"success\""))
        .unwrap_or("(none)");
    println!("metrics-exporter-prometheus: {line}");
    let ours = handle
        .metrics()
        .query("hardening_requests_total")
        .label("service", "audio-processing")
        .sum();
    println!("in-process collector: hardening_requests_total = {ours}");
    handle.shutdown().await;
    Ok(())
}
