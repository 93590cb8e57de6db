//! The demo: an axum server with two hardened services, driven through a
//! healthy phase, an outage and a recovery by its own bounded load, about
//! 30 seconds in all.
//!
//! - `audio-processing` fails in bursts (a `FaultLayer` switched on for the
//!   outage): its breaker opens, probes, and closes when the outage ends.
//! - Memory follows the load. Each model request holds 32 MiB of a 1 GiB
//!   "memory" pool while it runs, and every audio upload that is not
//!   answered 200 stays buffered (448 KiB) until it can be replayed: the
//!   outage piles work up, memory climbs past the warning mark (LOW is
//!   shed), then past the next (NORMAL is shed too; HIGH only past the
//!   critical mark, which this outage does not reach). Once the breaker
//!   closes the buffered uploads are replayed, memory falls, and shedding
//!   clears in the reverse order.
//!
//! One status line a second (what was answered in that second), every
//! breaker transition and shed priority as it happens with its time since
//! the start, a summary at the end, and the dashboard's address.
//!
//! ```text
//! cargo run --release --example demo                 # ~30 s, then exits
//! cargo run --release --example demo -- --serve      # keeps serving the dashboard
//! cargo run --release --example demo -- --port 8080  # a fixed port
//! cargo run --release --example demo -- --repeat     # the story again and again
//! cargo run --release --example demo -- --write-metrics demo.prom  # /metrics at the end
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::EventKind;
use tower_hardening::limit::ResourcePool;
use tower_hardening::monitor::{CpuReading, MemoryReading, Readings, SysinfoReadings};
use tower_hardening::{BoxError, HardeningHandle, Priority, Requirements, SystemHardening};

/// Each model request holds this much of the memory pool while it runs.
const MODEL_BYTES: u64 = 32 << 20;
/// An audio upload not answered 200 stays buffered, this big, for replay.
const UPLOAD_BYTES: u64 = 448 << 10;
/// Each audio caller sends one upload this often.
const UPLOAD_EVERY: Duration = Duration::from_millis(25);
const PHASE: Duration = Duration::from_secs(10);
const PHASES: [&str; 3] = ["healthy", "outage", "recovery"];

/// The process's real readings, with simulated memory in place of its
/// resident memory: a baseline, what the "memory" pool has handed out to
/// running model requests, and the audio uploads buffered for replay.
struct DemoReadings {
    real: SysinfoReadings,
    memory: ResourcePool,
    buffered: Arc<AtomicU64>,
    baseline: u64,
}

impl Readings for DemoReadings {
    fn memory(&mut self) -> MemoryReading {
        let mut reading = self.real.memory();
        reading.process_rss = self.baseline
            + self.memory.stats().in_use
            + self.buffered.load(Ordering::Relaxed) * UPLOAD_BYTES;
        reading
    }

    fn cpu(&mut self) -> CpuReading {
        self.real.cpu()
    }
}

/// What the load sees, per service (and per priority for the model).
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Tally {
    fn record(&self, status: StatusCode, took: Duration) {
        match status.as_u16() {
            200 => &self.ok,
            429 | 503 | 504 => &self.rejected,
            _ => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.latencies.lock().unwrap().push(took);
    }

    /// (ok, failed, rejected, p99) since the last call.
    fn take(&self) -> (u64, u64, u64, Option<Duration>) {
        let mut latencies = std::mem::take(&mut *self.latencies.lock().unwrap());
        latencies.sort_unstable();
        let p99 = (!latencies.is_empty())
            .then(|| latencies[((latencies.len() as f64 * 0.99).ceil() as usize).max(1) - 1]);
        (
            self.ok.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
            self.rejected.swap(0, Ordering::Relaxed),
            p99,
        )
    }
}

#[derive(Clone)]
struct App {
    handle: HardeningHandle,
}

async fn audio() -> &'static str {
    "transcribed"
}

async fn model(State(app): State<App>, request: Request<Body>) -> Result<&'static str, StatusCode> {
    let priority = request
        .extensions()
        .get::<Priority>()
        .copied()
        .unwrap_or_default();
    // The model's working memory: refused under memory pressure for the
    // request's priority.
    let _memory = app
        .handle
        .request_resource(
            "memory",
            "model-inference",
            priority,
            Requirements::new().units(MODEL_BYTES),
        )
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    Ok("a cat")
}

/// The demo's own callers say how much their request matters; a real
/// service would decide this from who is calling (and never trust a
/// client's header for CRITICAL). Without the header, the service's
/// criticality decides (audio-processing's is HIGH).
async fn priority_from_header(mut request: Request<Body>) -> Request<Body> {
    let priority = request
        .headers()
        .get("x-priority")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Priority>().ok())
        .map(|p| p.min(Priority::HIGH));
    if let Some(priority) = priority {
        request.extensions_mut().insert(priority);
    }
    request
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve = std::env::args().any(|a| a == "--serve");
    let repeat = std::env::args().any(|a| a == "--repeat");
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    let config = SystemHardeningConfig::from_path(path)?;

    let memory = ResourcePool::builder("memory")
        .capacity(config.max_resource_memory.unwrap_or(1 << 30))
        .queue_timeout(Duration::from_millis(500))
        .build()?;
    // Audio uploads waiting for replay.
    let buffered = Arc::new(AtomicU64::new(0));
    let readings = DemoReadings {
        real: SysinfoReadings::new(),
        memory: memory.clone(),
        buffered: buffered.clone(),
        baseline: 64 << 20,
    };
    let hardening = SystemHardening::builder(config)
        .pool(memory)
        .readings(readings)
        .build()?;
    let audio_layer = hardening
        .http_layer("audio-processing")?
        .map_body(Body::new);
    let model_layer = hardening.http_layer("model-inference")?.map_body(Body::new);
    let handle = hardening.start();
    let faults = handle
        .faults("audio-processing")
        .expect("the audio stack is built");

    let app = Router::new()
        .route("/audio", get(audio).layer(audio_layer))
        .route("/model", get(model).layer(model_layer))
        .with_state(App {
            handle: handle.clone(),
        })
        .layer(axum::middleware::map_request(priority_from_header))
        .nest_service("/hardening", handle.endpoints());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    println!("serving on http://{address}");
    println!("dashboard: http://{address}/hardening/dashboard");
    println!();

    // Breaker transitions and shed priorities, as they happen.
    let mut events = handle.subscribe();
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => match event.kind() {
                    EventKind::CircuitTransition { from, to } => println!(
                        "  [{:5.1}s] {}: circuit {from} -> {to}",
                        started.elapsed().as_secs_f64(),
                        event.service()
                    ),
                    // The monitor's decisions (pools also report their
                    // refusals, once per priority per second).
                    EventKind::Shed { priority } if event.service() == "process" => println!(
                        "  [{:5.1}s] memory pressure: {} priority shed",
                        started.elapsed().as_secs_f64(),
                        priority.to_string().to_uppercase()
                    ),
                    EventKind::MemoryPressure { active: false, .. } => println!(
                        "  [{:5.1}s] memory pressure over: nothing shed",
                        started.elapsed().as_secs_f64()
                    ),
                    EventKind::MemoryPressure {
                        active: true,
                        used_bytes,
                        limit_bytes,
                    } => println!(
                        "  [{:5.1}s] memory pressure changed at {} MiB of {} MiB",
                        started.elapsed().as_secs_f64(),
                        used_bytes >> 20,
                        limit_bytes >> 20
                    ),
                    _ => {}
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });

    // The load: bounded workers on a keep-alive client, loopback only.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let audio_tally = Arc::new(Tally::default());
    let model_tallies: Vec<(&str, Arc<Tally>)> = ["low", "normal", "high"]
        .into_iter()
        .map(|p| (p, Arc::new(Tally::default())))
        .collect();
    let phase = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    // Audio callers: one upload every 25 ms each; an upload not answered
    // 200 is buffered for replay.
    for _ in 0..4 {
        let (client, tally, phase) = (client.clone(), audio_tally.clone(), phase.clone());
        let buffered = buffered.clone();
        workers.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(UPLOAD_EVERY);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while phase.load(Ordering::Relaxed) < 3 {
                pace.tick().await;
                let uri = format!("http://{address}/audio");
                let request = Request::get(uri).body(Empty::new()).unwrap();
                let begun = Instant::now();
                let status = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        status
                    }
                    Err(_) => StatusCode::BAD_GATEWAY,
                };
                tally.record(status, begun.elapsed());
                if status != StatusCode::OK {
                    buffered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The replayer: while the breaker is closed, buffered uploads are sent
    // again, 10 every 50 ms; one that fails stays buffered.
    {
        let (client, phase, buffered) = (client.clone(), phase.clone(), buffered.clone());
        let handle = handle.clone();
        workers.push(tokio::spawn(async move {
            while phase.load(Ordering::Relaxed) < 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let closed = handle
                    .breaker("audio-processing")
                    .is_some_and(|b| b.state() == tower_hardening::core::CircuitState::Closed);
                let batch = buffered.load(Ordering::Relaxed).min(10);
                if !closed || batch == 0 {
                    continue;
                }
                let replays = (0..batch).map(|_| {
                    let request = Request::get(format!("http://{address}/audio"))
                        .body(Empty::new())
                        .unwrap();
                    client.request(request)
                });
                for answer in futures_util::future::join_all(replays).await {
                    if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
                        buffered.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for (index, (priority, tally)) in model_tallies.iter().enumerate() {
        for _ in 0..2 {
            let (client, tally, phase) = (client.clone(), tally.clone(), phase.clone());
            let priority = priority.to_string();
            workers.push(tokio::spawn(async move {
                while phase.load(Ordering::Relaxed) < 3 {
                    let uri = format!("http://{address}/model");
                    let request = Request::get(uri)
                        .header("x-priority", &priority)
                        .body(Empty::new())
                        .unwrap();
                    let begun = Instant::now();
                    if let Ok(response) = client.request(request).await {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        tally.record(status, begun.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(10 + 5 * index as u64)).await;
                }
            }));
        }
    }

    println!(
        "{:>5} {:9} | {:36} | {:25} | process",
        "t", "phase", "audio-processing", "model ok/shed: low normal high"
    );
    let mut summary: Vec<(String, [u64; 3], [u64; 6])> = Vec::new();
    // One row per whole second since the start: what was answered in it.
    let mut rows = tokio::time::interval_at(
        tokio::time::Instant::from_std(started) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    rows.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = 0u64;
    // With --repeat the story runs again and again (for a Prometheus or a
    // dashboard to watch), until the process is stopped.
    let stories = if repeat { usize::MAX } else { 1 };
    let story = PHASES
        .iter()
        .enumerate()
        .cycle()
        .take(PHASES.len().saturating_mul(stories));
    for (index, name) in story {
        phase.store(index as u64, Ordering::Relaxed);
        match index {
            1 => faults.enable(),  // the outage: every audio call fails
            2 => faults.disable(), // the recovery
            _ => {}
        }
        let mut audio_totals = [0u64; 3];
        let mut model_totals = [0u64; 6];
        for _ in 0..PHASE.as_secs() {
            rows.tick().await;
            second += 1;
            let (ok, failed, rejected, p99) = audio_tally.take();
            audio_totals[0] += ok;
            audio_totals[1] += failed;
            audio_totals[2] += rejected;
            let total = (ok + failed + rejected).max(1);
            let circuit = handle
                .breaker("audio-processing")
                .map(|b| b.state().to_string())
                .unwrap_or_default();
            let mut model_line = String::new();
            for (i, (_, tally)) in model_tallies.iter().enumerate() {
                let (ok, _, rejected, _) = tally.take();
                model_totals[i * 2] += ok;
                model_totals[i * 2 + 1] += rejected;
                model_line.push_str(&format!("{ok:>3}/{rejected:<3} "));
            }
            let process = handle.performance().map_or_else(
                || "not measured yet".to_owned(),
                |performance| {
                    format!(
                        "cpu {:>5.1}% memory {:>4} MiB loop {:>5.1} ms",
                        performance.cpu.process,
                        performance.memory.rss >> 20,
                        performance.event_loop.p99.as_secs_f64() * 1e3,
                    )
                },
            );
            println!(
                "{:>4}s {:9} | {:9} {:>4} rps {:>3.0}% ok p99 {:>4} | {} | {}{}",
                second,
                name,
                circuit,
                total,
                ok as f64 * 100.0 / total as f64,
                p99.map_or("-".to_owned(), |d| format!("{}ms", d.as_millis())),
                model_line,
                process,
                handle
                    .health()
                    .shedding_below
                    .map_or(String::new(), |p| format!(" | shedding below {p}")),
            );
        }
        summary.push((name.to_string(), audio_totals, model_totals));
    }
    phase.store(3, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }

    println!();
    println!("summary");
    println!(
        "{:9} | {:>24} | {:>45}",
        "phase", "audio: ok / failed / 503", "model ok/shed: low | normal | high"
    );
    for (name, audio, model) in &summary {
        println!(
            "{:9} | {:>8} / {:>6} / {:>6} | {:>6}/{:<6} | {:>6}/{:<6} | {:>6}/{:<6}",
            name,
            audio[0],
            audio[1],
            audio[2],
            model[0],
            model[1],
            model[2],
            model[3],
            model[4],
            model[5]
        );
    }
    if let Some(audio) = handle.service_health("audio-processing") {
        println!(
            "audio-processing now: {} (circuit {})",
            audio.status,
            audio
                .circuit_state
                .map_or("-".to_owned(), |s| s.to_string())
        );
    }

    if let Some(path) = arg("--write-metrics") {
        // The live /metrics as a scraper sees it (checked by `.ci/run`
        // with `promtool check metrics`).
        let uri = format!("http://{address}/hardening/metrics");
        let response = client
            .request(Request::get(uri).body(Empty::new())?)
            .await?;
        let body = response.into_body().collect().await?.to_bytes();
        std::fs::write(&path, &body)?;
        println!("/metrics written to {path}");
    }

    if serve {
        println!();
        println!("still serving: http://{address}/hardening/dashboard (Ctrl-C to stop)");
        let _ = tokio::signal::ctrl_c().await;
    }
    handle.shutdown().await;
    printer.abort();
    server.abort();
    Ok(())
}
