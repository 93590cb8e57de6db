//! A tonic server behind tower-hardening, and a tonic client calling it.
//!
//! The service is tonic-health's generated `Health` service (so no protoc
//! is needed); `grpc_layer` puts the whole stack in front of it: failing
//! `grpc-status` codes count as failures, and a rejection reaches the
//! client as a proper `Status` (UNAVAILABLE, RESOURCE_EXHAUSTED or
//! DEADLINE_EXCEEDED). Run: `cargo run --example tonic`.

use std::time::Duration;

use tonic::transport::Server;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{BoxError, SystemHardening};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.health.breaker]
        sliding_window = { count = 10 }
        minimum_calls = 5
        wait_in_open = "5s"
        "#,
    )?;
    let hardening = SystemHardening::builder(config).build()?;
    // The stack for gRPC; the service below gets tonic's own body type.
    let grpc = hardening
        .grpc_layer("health")?
        .map_body(tonic::body::Body::new);
    let faults = grpc.faults();
    let handle = hardening.start();

    let (_reporter, health_service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(ServiceBuilder::new().layer(grpc))
            .add_service(health_service)
            .serve_with_incoming(tokio_stream_listener(listener)),
    );

    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    println!("healthy: {:?}", client.check(request()).await?.into_inner());

    // The dependency starts answering UNAVAILABLE (injected): the breaker
    // counts those as failures and opens; then rejections arrive as
    // UNAVAILABLE with the breaker's message.
    faults.set_status(14);
    faults.set_status_rate(1.0);
    faults.enable();
    for _ in 0..7 {
        let status = client.check(request()).await.unwrap_err();
        println!("{:?}: {}", status.code(), status.message());
    }
    println!("breaker: {:?}", handle.breaker("health").map(|b| b.state()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle.shutdown().await;
    Ok(())
}

/// Accepted connections of `listener`, as tonic's `serve_with_incoming`
/// wants them.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
