//! What the monitor publishes about performance: CPU, memory, event-loop
//! latency, tokio runtime figures and each service's traffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One performance reading, from [`HardeningHandle::performance`](crate::HardeningHandle::performance),
/// measured every `performance_check_interval`. There is none before the
/// first reading (nor ever with `enable_performance_monitoring = false`):
/// `performance()` is `None` then, never a reading of zeros.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PerformanceSnapshot {
    /// CPU use in percent.
    pub cpu: CpuUsage,
    /// Memory of the process and the machine, in bytes.
    pub memory: MemoryUsage,
    /// How late the monitor's probe timer fired over the interval.
    pub event_loop: EventLoopLatency,
    /// Figures of the tokio runtime the monitor runs on.
    pub runtime: RuntimeFigures,
    /// Each service's traffic over the last interval.
    pub services: BTreeMap<Arc<str>, ServicePerformance>,
    /// Performance thresholds crossed now.
    pub alerts: Vec<Arc<str>>,
    /// When it was measured (wall clock).
    #[serde(serialize_with = "time")]
    pub measured_at: SystemTime,
}

/// CPU use in percent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct CpuUsage {
    /// This process, in percent of one core (two busy cores read 200).
    pub process: f32,
    /// The whole machine, in percent of all its cores.
    pub system: f32,
}

/// Memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct MemoryUsage {
    /// Resident memory of this process.
    pub rss: u64,
    /// Virtual memory of this process.
    pub virtual_bytes: u64,
    /// Memory in use on the machine.
    pub system_used: u64,
    /// The machine's memory.
    pub system_total: u64,
    /// The limit health and shedding are measured against.
    pub limit: u64,
}

/// Lateness of the monitor's probe timer: how long the runtime took to
/// run a task whose timer had fired. A blocked worker shows here.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct EventLoopLatency {
    /// Mean lateness.
    #[serde(serialize_with = "seconds")]
    pub mean: Duration,
    /// 99th percentile of lateness.
    #[serde(serialize_with = "seconds")]
    pub p99: Duration,
    /// The worst lateness.
    #[serde(serialize_with = "seconds")]
    pub max: Duration,
    /// Probe wake-ups measured.
    pub samples: u64,
}

/// Stable tokio runtime metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RuntimeFigures {
    /// Worker threads.
    pub workers: usize,
    /// Tasks alive (spawned, not finished).
    pub alive_tasks: usize,
    /// Tasks waiting in the global queue.
    pub global_queue_depth: usize,
}

/// One service's traffic, from the metrics collector.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ServicePerformance {
    /// Requests finished per second.
    pub rate: f64,
    /// Median duration of the calls that reached the service (successes
    /// and failures; refusals, answered at once, are left out).
    #[serde(serialize_with = "optional_seconds")]
    pub p50: Option<Duration>,
    /// 99th percentile duration, of the same calls.
    #[serde(serialize_with = "optional_seconds")]
    pub p99: Option<Duration>,
    /// Failures over finished requests (rejections excluded); `None`
    /// without requests.
    pub error_rate: Option<f64>,
    /// Requests rejected per second (breaker open, shed, queue timeout,
    /// rate limited).
    pub rejected_rate: f64,
    /// Requests a fallback answered per second, in place of a refusal or
    /// a failure.
    pub fallback_rate: f64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Requests waiting for admission now.
    pub queued: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_f64(d.as_secs_f64())
}

fn optional_seconds<S: serde::Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => seconds(d, ser),
        None => ser.serialize_none(),
    }
}

fn time<S: serde::Serializer>(t: &SystemTime, ser: S) -> Result<S::Ok, S::Error> {
    crate::health::ser::time(t, ser)
}
