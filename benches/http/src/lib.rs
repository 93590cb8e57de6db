//! The servers the HTTP and gRPC measurements compare, built the way a
//! user builds them: a hello-world axum route (or tonic-health's `Check`)
//! served bare, behind tower's built-ins, and behind
//! `SystemHardening::http_layer` / `grpc_layer` with every part on.
//!
//! The instruction counts (`.ci/instructions`), the allocation test and
//! `benches/http/run.sh` (wrk over loopback) all use these builders, so
//! the three measure the same servers.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use http::StatusCode;
use tower::ServiceBuilder;
use tower_hardening::config::SystemHardeningConfig;
#[cfg(feature = "servers")]
use tower_hardening::stack::{Grpc, HttpServiceLayer};
use tower_hardening::{BoxError, SystemHardening};

/// The configuration of the hardened servers: admission, retries and the
/// breaker on, a 2 s timeout; metrics record into the hardening's
/// collector; fault injection is present and off.
pub const HARDENED_CONFIG: &str = r#"
[services.hello]
timeout = "2s"
[services.hello.breaker]
enabled = true
[services.hello.retry]
enabled = true
[services.hello.limit]
enabled = true
max_concurrency = 1000
"#;

/// The route's handler.
pub async fn hello() -> &'static str {
    "hello, world"
}

/// Which server: the three every measurement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The route alone.
    Bare,
    /// tower's built-ins: `HandleErrorLayer` + `ConcurrencyLimit` (1000) +
    /// `Timeout` (2 s).
    Tower,
    /// `SystemHardening::http_layer` (or `grpc_layer`) with
    /// [`HARDENED_CONFIG`].
    Hardened,
}

impl Mode {
    /// Every mode, in the order tables list them.
    pub const ALL: [Mode; 3] = [Mode::Bare, Mode::Tower, Mode::Hardened];

    /// The mode's name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Tower => "tower",
            Mode::Hardened => "hardened",
        }
    }

    /// The mode named `name`, or an error that lists the names.
    pub fn parse(name: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| format!("unknown mode `{name}`: one of bare, tower, hardened"))
    }
}

/// The hardening behind the hardened servers (not started: a caller that
/// wants the monitor running starts it).
pub fn hardening() -> Result<SystemHardening, BoxError> {
    let config = SystemHardeningConfig::from_toml_str(HARDENED_CONFIG)?;
    Ok(SystemHardening::builder(config).build()?)
}

async fn overloaded(error: BoxError) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

/// The axum app of `mode`; `hardening` is used by [`Mode::Hardened`] only.
pub fn http_app(mode: Mode, hardening: &SystemHardening) -> Result<Router, BoxError> {
    Ok(match mode {
        Mode::Bare => Router::new().route("/", get(hello)),
        Mode::Tower => Router::new().route(
            "/",
            get(hello).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(overloaded))
                    .concurrency_limit(1_000)
                    .timeout(Duration::from_secs(2)),
            ),
        ),
        Mode::Hardened => Router::new().route(
            "/",
            get(hello).layer(hardening.http_layer("hello")?.map_body(Body::new)),
        ),
    })
}

/// A `GET /` for [`http_app`].
pub fn get_root() -> http::Request<Body> {
    http::Request::get("/")
        .body(Body::empty())
        .expect("a valid request")
}

/// Serves `app` on `listener` until the process ends.
#[cfg(feature = "servers")]
pub async fn serve_http(app: Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app).await
}

/// Serves tonic-health's `Health` service (its status: serving) on
/// `listener` as `mode` says; `layer` (from `grpc_layer`) is used by
/// [`Mode::Hardened`] only.
#[cfg(feature = "servers")]
pub async fn serve_grpc(
    mode: Mode,
    layer: HttpServiceLayer<Grpc>,
    listener: tokio::net::TcpListener,
) -> Result<(), BoxError> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = accepted(listener);
    match mode {
        Mode::Bare => {
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming)
                .await?
        }
        Mode::Tower => {
            tonic::transport::Server::builder()
                .concurrency_limit_per_connection(1_000)
                .timeout(Duration::from_secs(2))
                .add_service(health)
                .serve_with_incoming(incoming)
                .await?
        }
        Mode::Hardened => {
            tonic::transport::Server::builder()
                .layer(layer.map_body(tonic::body::Body::new))
                .add_service(health)
                .serve_with_incoming(incoming)
                .await?
        }
    }
    Ok(())
}

/// Accepted connections of `listener`, as tonic's `serve_with_incoming`
/// wants them.
#[cfg(feature = "servers")]
fn accepted(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
