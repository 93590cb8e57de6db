//! A tonic server behind the stack and a tonic client over loopback.

use tonic::Code;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::CircuitState;

fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(s, _)| s), listener))
    })
}

// 2. Rejections arrive as `Status` UNAVAILABLE, and an inner UNAVAILABLE
// status trips the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rejections_are_statuses_and_unavailable_trips_the_breaker() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.health.breaker]
        sliding_window = { count = 10 }
        minimum_calls = 5
        wait_in_open = "30s"
        [services.health.fault]
        status = 14
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let grpc = hardening
        .grpc_layer("health")
        .unwrap()
        .map_body(tonic::body::Body::new);
    let faults = grpc.faults();
    let handle = hardening.start();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(ServiceBuilder::new().layer(grpc))
            .add_service(health)
            .serve_with_incoming(incoming(listener)),
    );
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    for _ in 0..3 {
        client.check(check()).await.expect("serving");
    }
    let breaker = handle.breaker("health").unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);

    // The dependency answers UNAVAILABLE (a trailers-only status).
    faults.set_status_rate(1.0);
    faults.enable();
    let mut codes = Vec::new();
    for _ in 0..6 {
        let status = client.check(check()).await.unwrap_err();
        codes.push((status.code(), status.message().to_owned()));
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "UNAVAILABLE is a failure: {codes:?}"
    );
    assert!(
        codes.iter().all(|(code, _)| *code == Code::Unavailable),
        "{codes:?}"
    );
    let (_, last) = codes.last().unwrap();
    assert!(last.contains("circuit breaker `health` is open"), "{last}");
    // 3 successes and 3 UNAVAILABLE make 50% of 6 calls: open; the last
    // three calls were rejected without reaching the service.
    let fault_stats = faults.stats();
    assert_eq!(fault_stats.responses, 3);
    assert_eq!(breaker.snapshot().rejected_total, 3);

    // A rejection, not a dependency failure: nothing more recorded.
    faults.disable();
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("retry after"),
        "{}",
        status.message()
    );
    handle.shutdown().await;
}
