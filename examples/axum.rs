//! tower-hardening in an axum server, in the fewest lines: one hardened
//! route, the health/readiness/metrics/dashboard endpoints, and a clean
//! shutdown. Run: `cargo run --example axum`, then open
//! <http://127.0.0.1:3000/hardening/dashboard> (`--port N` for another
//! port, 0 for any; `--once` to call the route and the health endpoint
//! once, print the answers and exit, as CI does).

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{BoxError, SystemHardening};

async fn transcribe() -> &'static str {
    "hello world"
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // 1. Configuration: a file, the environment over it, or a string.
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.audio-processing]
        timeout = "2s"
        [services.audio-processing.limit]
        enabled = true
        max_concurrency = 64
        "#,
    )?;

    // 2. One hardening per process; one stack per service.
    let hardening = SystemHardening::builder(config).build()?;
    let audio = hardening
        .http_layer("audio-processing")? // metrics, admission, retry, breaker, timeout
        .map_body(Body::new); // hand axum's handlers their own body type
    let handle = hardening.start(); // the monitor

    // 3. The route behind its stack, and the endpoints for probes,
    //    Prometheus and people.
    let app = Router::new()
        .route("/transcribe", get(transcribe).layer(audio))
        .nest_service("/hardening", handle.endpoints());

    let port: u16 = std::env::args()
        .skip_while(|a| a != "--port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("http://{}/hardening/dashboard", listener.local_addr()?);

    // 4. Serve until Ctrl-C, then shut the hardening down (services,
    //    pools, the monitor).
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if std::env::args().any(|a| a == "--once") {
        for path in ["/transcribe", "/hardening/health"] {
            println!(
                "GET {path}: {}",
                fetch(&format!("http://{address}{path}")).await?
            );
        }
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
    server.abort();
    handle.shutdown().await;
    Ok(())
}

/// One GET with hyper's client: the status and the body.
async fn fetch(url: &str) -> Result<String, BoxError> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client
        .request(http::Request::get(url).body(http_body_util::Empty::new())?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(format!("{status} {}", String::from_utf8_lossy(&body)))
}
