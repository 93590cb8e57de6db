//! One of the compared HTTP servers on 127.0.0.1, for a load generator:
//! `http-server <bare|tower|hardened> [--port N] [--workers N]`.
//! Prints `listening on <address>` when it accepts; serves until killed.

use tower_hardening::BoxError;
use tower_hardening_http_bench::{Mode, hardening, http_app, serve_http};

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> Result<(), BoxError> {
    let mode = Mode::parse(&std::env::args().nth(1).unwrap_or_default())?;
    let port: u16 = arg("--port")
        .map_or(Ok(0), |p| p.parse())
        .map_err(|e| format!("--port: {e}"))?;
    let workers: usize = arg("--workers")
        .map_or(Ok(2), |w| w.parse())
        .map_err(|e| format!("--workers: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let hardening = hardening()?;
        let app = http_app(mode, &hardening)?;
        // The monitor runs, as in production.
        let handle = hardening.start();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        serve_http(app, listener).await?;
        handle.shutdown().await;
        Ok(())
    })
}
