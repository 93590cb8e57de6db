//! gRPC's three servers measured in one run: tonic-health's `Check`
//! served bare, behind tower's built-ins (tonic's own concurrency limit
//! and timeout), and behind `grpc_layer`, each loaded in turn by a tonic
//! client on a runtime of its own (ghz is not packaged for Debian).
//!
//! `grpc-load [--rounds 3] [--seconds 5] [--concurrency 32] [--connections 4]`
//!
//! The servers run on one runtime (one worker), the client on another
//! (one worker), so each gets a core. Each round loads every server for
//! `seconds`, alternating; the table gives each server's median requests
//! per second and median latency over the rounds, and the ratios to bare.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_hardening::BoxError;
use tower_hardening_http_bench::{Mode, hardening, serve_grpc};

fn arg(name: &str, default: u64) -> Result<u64, String> {
    match std::env::args().skip_while(|a| a != name).nth(1) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|e| format!("{name} {value}: {e}")),
    }
}

/// `concurrency` tasks call `Check` over `connections` channels for
/// `duration`; returns requests per second and the median latency.
async fn load(
    address: SocketAddr,
    duration: Duration,
    concurrency: u64,
    connections: u64,
) -> Result<(f64, Duration), BoxError> {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            Channel::from_shared(format!("http://{address}"))?
                .connect()
                .await?,
        );
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = HealthClient::new(channels[(i % connections) as usize].clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    client
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map_err(|status| format!("{status}"))?;
                    latencies.push(begun.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    Ok((latencies.len() as f64 / elapsed.as_secs_f64(), median))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), BoxError> {
    let rounds = arg("--rounds", 3)?.max(1);
    let seconds = arg("--seconds", 5)?.clamp(1, 600);
    let concurrency = arg("--concurrency", 32)?.clamp(1, 10_000);
    let connections = arg("--connections", 4)?.clamp(1, concurrency);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    let (addresses, handle) = server_rt.block_on(async {
        let hardening = hardening()?;
        let mut addresses = Vec::new();
        for mode in Mode::ALL {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addresses.push(listener.local_addr()?);
            let layer = hardening.grpc_layer("hello")?;
            tokio::spawn(async move {
                if let Err(error) = serve_grpc(mode, layer, listener).await {
                    eprintln!("{} server: {error}", mode.name());
                }
            });
        }
        Ok::<_, BoxError>((addresses, hardening.start()))
    })?;

    println!(
        "gRPC Check, {rounds} rounds of {seconds} s per server, {concurrency} concurrent calls over {connections} connections"
    );
    let mut figures = vec![(Vec::new(), Vec::new()); Mode::ALL.len()];
    client_rt.block_on(async {
        for (i, _) in Mode::ALL.iter().enumerate() {
            load(
                addresses[i],
                Duration::from_secs(1),
                concurrency,
                connections,
            )
            .await?;
        }
        for round in 1..=rounds {
            for (i, mode) in Mode::ALL.iter().enumerate() {
                let (rps, p50) = load(
                    addresses[i],
                    Duration::from_secs(seconds),
                    concurrency,
                    connections,
                )
                .await?;
                println!(
                    "round {round} {:<9} {rps:>9.0} req/s  p50 {:>7.1} µs",
                    mode.name(),
                    p50.as_secs_f64() * 1e6
                );
                figures[i].0.push(rps);
                figures[i].1.push(p50.as_secs_f64() * 1e6);
            }
        }
        Ok::<_, BoxError>(())
    })?;
    println!();
    println!("| server | req/s (median) | p50 µs (median) | req/s vs bare | p50 vs bare |");
    println!("| --- | --- | --- | --- | --- |");
    let bare = (median(figures[0].0.clone()), median(figures[0].1.clone()));
    for (i, mode) in Mode::ALL.iter().enumerate() {
        let (rps, p50) = (median(figures[i].0.clone()), median(figures[i].1.clone()));
        println!(
            "| {} | {rps:.0} | {p50:.0} | {:.1}% | {:+.1}% |",
            mode.name(),
            rps * 100.0 / bare.0,
            (p50 / bare.1 - 1.0) * 100.0
        );
    }
    server_rt.block_on(handle.shutdown());
    Ok(())
}
