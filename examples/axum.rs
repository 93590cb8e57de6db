//! tower-hardening in an axum server, in the fewest lines: one hardened
//! route, the health/readiness/metrics/dashboard endpoints, and a clean
//! shutdown. Run: `cargo run --example axum`, then open
//! <http://127.0.0.1:3000/hardening/dashboard> (`--port N` for another
//! port; `--once` to start, answer one request and exit, as CI does).

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
    let once = std::env::args().any(|a| a == "--once");
    let shutdown = async move {
        if once {
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    handle.shutdown().await;
    Ok(())
}
