//! OpenTelemetry through metrics-exporter-opentelemetry: the hardening's
//! stacks record into its collector and into an OpenTelemetry meter whose
//! OTLP exporter sends to a collector every minute. Here the exporter
//! points at 127.0.0.1:4317 where nothing listens, so the example runs
//! offline (the export at shutdown fails, which is reported and ignored).
//!
//! Run: `cargo run --example opentelemetry`. Where one process is not the
//! whole service, this is how many instances' figures meet in one place
//! (an OpenTelemetry collector, then any backend).

use std::time::Duration;

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::PeriodicReader;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{BoxError, SystemHardening};

// Multi-threaded: the SDK's blocking shutdown needs another thread to run
// the exporter on (see opentelemetry-rust#2583).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint("http://127.0.0.1:4317")
        .with_timeout(Duration::from_millis(200))
        .build()?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(60))
        .build();
    let (provider, recorder) =
        metrics_exporter_opentelemetry::Recorder::builder("tower-hardening-example")
            .with_meter_provider(|builder| builder.with_reader(reader))
            .build();

    let config = SystemHardeningConfig::from_toml_str("[services.model-inference]")?;
    let hardening = SystemHardening::builder(config)
        .metrics_recorder(recorder)
        .build()?;
    let layer = hardening.layer("model-inference")?;
    let handle = hardening.start();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |x: u32| async move { Ok::<_, std::io::Error>(x) },
        ));
    for i in 0..10 {
        svc.clone().oneshot(i).await?;
    }
    let ours = handle
        .metrics()
        .query("hardening_requests_total")
        .label("service", "model-inference")
        .sum();
    println!("in-process collector: hardening_requests_total = {ours}");
    handle.shutdown().await;
    match tokio::task::spawn_blocking(move || provider.shutdown()).await? {
        Ok(()) => println!("OpenTelemetry: exported"),
        Err(error) => println!("OpenTelemetry: nothing listens at 127.0.0.1:4317 ({error})"),
    }
    Ok(())
}
