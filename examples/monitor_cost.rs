//! How much CPU the monitor uses at the default intervals: runs a
//! hardening with two registered services for a while (60 s unless
//! `--seconds N`), on a runtime doing nothing else, and prints the
//! process's CPU time over that period against the same period with no
//! monitor.
//!
//! Run: `cargo run --release --example monitor_cost -- --seconds 60`
//! (Linux: reads `/proc/self/stat`).

use std::time::{Duration, Instant};

use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::managed::BoxFuture;
use tower_hardening::{BoxError, ManagedService, SystemHardening};

struct Backend;

impl ManagedService for Backend {
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 10) // USER_HZ is 100 on Linux
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() * 100.0 / wall.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let seconds = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let period = Duration::from_secs(seconds);

    let (cpu, wall) = (cpu_time(), Instant::now());
    tokio::time::sleep(period).await;
    let idle = (cpu_time() - cpu, wall.elapsed());

    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.audio-processing]
        [services.model-inference]
        criticality = "critical"
        "#,
    )?;
    let hardening = SystemHardening::builder(config)
        .service("audio-processing", Backend)
        .service("model-inference", Backend)
        .build()?;
    let _audio = hardening.layer("audio-processing")?;
    let _model = hardening.layer("model-inference")?;
    let handle = hardening.start();
    // The first reading of CPU and memory primes sysinfo; start measuring
    // after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu, wall) = (cpu_time(), Instant::now());
    tokio::time::sleep(period).await;
    let monitored = (cpu_time() - cpu, wall.elapsed());
    handle.shutdown().await;

    println!("period: {seconds} s (health every 30 s, performance every 5 s, probe every 50 ms)");
    println!(
        "idle runtime:      {:>6} ms CPU = {:.3}% of one core",
        idle.0.as_millis(),
        percent(idle.0, idle.1)
    );
    println!(
        "with the monitor:  {:>6} ms CPU = {:.3}% of one core",
        monitored.0.as_millis(),
        percent(monitored.0, monitored.1)
    );
    println!(
        "the monitor's own: {:.3}% of one core",
        percent(monitored.0.saturating_sub(idle.0), monitored.1)
    );
    Ok(())
}
