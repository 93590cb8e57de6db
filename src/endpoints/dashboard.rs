//! The dashboard: one self-contained page, and the JSON it polls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tower_hardening_core::{CircuitState, HealthState};

use super::RecentEvent;
use crate::HardeningHandle;
use crate::monitor::service_figures;

/// Events the live view sends (the history sends every kept one in its
/// window).
const LIVE_EVENTS: usize = 50;

/// The page: HTML, CSS and script in one answer, nothing fetched from
/// elsewhere (no CDN, no font), so it works on an air-gapped network.
pub(crate) const PAGE: &str = include_str!("dashboard.html");

#[derive(Debug, Serialize)]
pub(crate) struct Data {
    #[serde(serialize_with = "crate::health::ser::time")]
    at: SystemTime,
    status: &'static str,
    reasons: Vec<Arc<str>>,
    shedding_below: Option<String>,
    process: Process,
    services: Vec<Service>,
    events: Vec<RecentEvent>,
}

/// `null` for a figure not measured yet (before the first performance
/// reading, or with performance monitoring off).
#[derive(Debug, Serialize)]
struct Process {
    cpu_percent: Option<f32>,
    rss_bytes: Option<u64>,
    memory_limit_bytes: u64,
    memory_percent: f64,
    event_loop_p99_ms: Option<f64>,
    event_loop_max_ms: Option<f64>,
    alive_tasks: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Service {
    name: Arc<str>,
    status: &'static str,
    critical: bool,
    circuit: Option<&'static str>,
    rate: f64,
    error_rate: Option<f64>,
    rejected_rate: f64,
    fallback_rate: f64,
    p99_ms: Option<f64>,
    in_flight: u64,
    queued: u64,
    failure_rate: Option<f64>,
    recovery: String,
    reason: Option<Arc<str>>,
    /// An upstream's endpoints, read live; empty for a plain service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    endpoints: Vec<crate::health::EndpointHealth>,
}

fn state_name(state: HealthState) -> &'static str {
    state.as_str()
}

pub(crate) fn data(handle: &HardeningHandle) -> Data {
    let shared = &handle.shared;
    let health = handle.health();
    let performance = handle.performance();
    let details = shared.config.expose_details;
    let window = (shared.config.metrics_resolution * 2).max(Duration::from_secs(5));
    let services = health
        .services
        .iter()
        .map(|(name, service)| {
            let entry = shared.services.get(name);
            let parts = entry.and_then(|e| e.stack.get());
            let circuit: Option<CircuitState> = parts.map(|p| p.breaker.state());
            let figures = service_figures(&shared.collector, name, window);
            Service {
                name: name.clone(),
                status: state_name(service.status),
                critical: service.critical,
                circuit: circuit.map(CircuitState::as_str),
                rate: figures.rate,
                error_rate: figures.error_rate,
                rejected_rate: figures.rejected_rate,
                fallback_rate: figures.fallback_rate,
                p99_ms: figures.p99.map(|d| d.as_secs_f64() * 1e3),
                in_flight: figures.in_flight,
                queued: parts.map_or(0, |p| p.pool.stats().queued as u64),
                failure_rate: service.failure_rate,
                recovery: format!("{:?}", service.recovery),
                reason: if details {
                    service.reason.clone()
                } else {
                    service.reason.as_ref().map(|_| Arc::from("see /health"))
                },
                endpoints: entry
                    .and_then(|e| e.endpoints.get())
                    .map(|view| view.endpoints())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let events = tower_hardening_core::sync::lock(&shared.recent_events)
        .iter()
        .rev()
        .take(LIVE_EVENTS)
        .map(|event| RecentEvent {
            detail: event.detail.clone().filter(|_| details),
            ..event.clone()
        })
        .collect();
    Data {
        at: SystemTime::now(),
        status: state_name(health.status),
        reasons: if details {
            health.reasons.clone()
        } else {
            health.without_details().reasons
        },
        shedding_below: health.shedding_below.map(|p| p.to_string()),
        process: Process {
            cpu_percent: performance.as_ref().map(|p| p.cpu.process),
            rss_bytes: performance.as_ref().map(|p| p.memory.rss),
            memory_limit_bytes: health.memory.limit,
            memory_percent: health.memory.percentage,
            event_loop_p99_ms: performance
                .as_ref()
                .map(|p| p.event_loop.p99.as_secs_f64() * 1e3),
            event_loop_max_ms: performance
                .as_ref()
                .map(|p| p.event_loop.max.as_secs_f64() * 1e3),
            alive_tasks: performance.as_ref().map(|p| p.runtime.alive_tasks),
        },
        services,
        events,
    }
}

/// Points a history series holds at most: longer windows fold
/// neighbouring intervals together.
const MAX_POINTS: usize = 360;

/// The windows the dashboard offers, in minutes.
pub(crate) const WINDOWS: [u64; 3] = [5, 15, 60];

/// The dashboard's charts: the collector's retained history over the last
/// `minutes`, interval by interval (or folded to at most [`MAX_POINTS`]).
/// `null` marks an interval without a sample.
#[derive(Debug, Serialize)]
pub(crate) struct History {
    /// Milliseconds since the Unix epoch at which each point's intervals
    /// end, oldest first (the last one is now: the last whole interval,
    /// as the interval now filling is left out).
    times: Vec<u64>,
    /// Seconds one point spans.
    step_seconds: f64,
    minutes: u64,
    services: Vec<ServiceHistory>,
    /// Per priority (`low`, `normal`, `high`, `critical`) over every pool.
    shed_per_second: Vec<Named>,
    queued: Vec<Named>,
    process: ProcessHistory,
    events: Vec<RecentEvent>,
}

#[derive(Debug, Serialize)]
struct Named {
    name: &'static str,
    values: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
struct ServiceHistory {
    name: Arc<str>,
    /// Requests per second by outcome: `success`, `failure`, `rejected`,
    /// `ignored`.
    outcomes: Vec<Named>,
    p50_ms: Vec<Option<f64>>,
    p99_ms: Vec<Option<f64>>,
    in_flight: Vec<Option<f64>>,
    queued: Vec<Option<f64>>,
    /// The breaker's state index (0 closed, 1 open, 2 half-open, 3 forced
    /// open, 4 disabled, 5 metrics only); `null` without a breaker.
    circuit: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
struct ProcessHistory {
    cpu_percent: Vec<Option<f64>>,
    memory_bytes: Vec<Option<f64>>,
    memory_limit_bytes: u64,
    memory_warning_bytes: u64,
    memory_critical_bytes: u64,
    event_loop_p99_ms: Vec<Option<f64>>,
}

/// How a series' intervals fold into one point.
#[derive(Clone, Copy)]
enum Fold {
    /// A counter: its increase per second.
    Rate,
    /// A gauge: the mean of its samples.
    Mean,
    /// A gauge: the largest sample.
    Max,
}

pub(crate) fn history(handle: &HardeningHandle, minutes: u64) -> History {
    use tower_hardening_core::names;
    let shared = &handle.shared;
    let collector = &shared.collector;
    let resolution = shared.config.metrics_resolution.max(Duration::from_millis(1));
    let window = Duration::from_secs(minutes * 60).min(shared.config.metrics_retention);
    let intervals = (window.as_nanos() / resolution.as_nanos()).max(1) as usize;
    let per_point = intervals.div_ceil(MAX_POINTS).max(1);
    let step = resolution * per_point as u32;
    let now = SystemTime::now();
    // Points fold `per_point` intervals, aligned so the last point ends
    // with the interval now filling.
    let fold = |mut points: Vec<tower_hardening_metrics::HistoryPoint>, how: Fold| -> Vec<Option<f64>> {
        // The interval now filling is left out: a part of an interval
        // would draw as a drop in every rate.
        if points.len() > 1 {
            points.pop();
        }
        let mut out: Vec<Option<f64>> = Vec::new();
        let first = points.len() % per_point;
        let mut chunks: Vec<&[tower_hardening_metrics::HistoryPoint]> = Vec::new();
        if first > 0 {
            chunks.push(&points[..first]);
        }
        chunks.extend(points[first..].chunks(per_point));
        for chunk in chunks {
            let count: u64 = chunk.iter().map(|p| p.count).sum();
            out.push(match how {
                // Per second of a whole step, the oldest point's too: its
                // missing intervals are before the window or the process.
                Fold::Rate => Some(
                    chunk.iter().map(|p| p.sum).sum::<f64>() / step.as_secs_f64(),
                ),
                _ if count == 0 => None,
                Fold::Mean => Some(chunk.iter().map(|p| p.sum).sum::<f64>() / count as f64),
                Fold::Max => chunk.iter().filter_map(|p| p.max).reduce(f64::max),
            });
        }
        out
    };
    let query = |name: &str, labels: &[(&str, &str)], how: Fold| {
        let mut q = collector.query(name).window(window);
        for (key, value) in labels {
            q = q.label(key, value);
        }
        fold(q.history(), how)
    };
    let times = {
        let points = collector.query(names::REQUESTS_TOTAL).window(window).history().len();
        let count = points.saturating_sub(1).max(1).div_ceil(per_point);
        let end = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        (0..count)
            .map(|i| end.saturating_sub((count - 1 - i) as u64 * step.as_millis() as u64))
            .collect()
    };
    let health = handle.health();
    let services = health
        .services
        .keys()
        .map(|name| {
            let service = [(names::LABEL_SERVICE, &**name)];
            let outcomes = ["success", "failure", "rejected", "fallback", "ignored"]
                .into_iter()
                .map(|outcome| Named {
                    name: outcome,
                    values: query(
                        names::REQUESTS_TOTAL,
                        &[(names::LABEL_SERVICE, name), (names::LABEL_OUTCOME, outcome)],
                        Fold::Rate,
                    ),
                })
                .collect();
            // The service's own latency: refusals answer in microseconds and
            // would pull the median down to nothing.
            let latency = collector
                .query(names::REQUEST_DURATION_SECONDS)
                .label(names::LABEL_SERVICE, name)
                .label(names::LABEL_OUTCOME, "success")
                .window(window)
                .history();
            // Quantiles do not add up: a folded point shows the largest.
            let quantile = |pick: fn(&tower_hardening_metrics::HistoryPoint) -> Option<f64>| {
                let as_max = latency
                    .iter()
                    .map(|p| tower_hardening_metrics::HistoryPoint {
                        count: u64::from(pick(p).is_some()),
                        max: pick(p).map(|s| s * 1e3),
                        ..*p
                    })
                    .collect();
                fold(as_max, Fold::Max)
            };
            let admission = format!("{name}/admission");
            let has_breaker = shared
                .services
                .get(name)
                .and_then(|e| e.stack.get())
                .is_some();
            ServiceHistory {
                name: name.clone(),
                outcomes,
                p50_ms: quantile(|p| p.p50),
                p99_ms: quantile(|p| p.p99),
                in_flight: query(names::REQUESTS_IN_FLIGHT, &service, Fold::Max),
                queued: query(names::POOL_QUEUED, &[(names::LABEL_POOL, &admission)], Fold::Max),
                circuit: if has_breaker {
                    query(names::CIRCUIT_STATE, &[(names::LABEL_BREAKER, name)], Fold::Max)
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    let priorities = ["low", "normal", "high", "critical"];
    let shed_per_second = priorities
        .into_iter()
        .map(|p| Named {
            name: p,
            values: query(
                names::POOL_REJECTED_BY_PRIORITY_TOTAL,
                &[(names::LABEL_PRIORITY, p)],
                Fold::Rate,
            ),
        })
        .collect();
    // Every pool's gauge is one sample per interval: the mean times the
    // pools is their sum.
    let queued = priorities
        .into_iter()
        .map(|p| {
            let points = collector
                .query(names::POOL_QUEUED_BY_PRIORITY)
                .label(names::LABEL_PRIORITY, p)
                .window(window)
                .history()
                .into_iter()
                .map(|point| tower_hardening_metrics::HistoryPoint {
                    count: u64::from(point.count > 0),
                    ..point
                })
                .collect();
            Named {
                name: p,
                values: fold(points, Fold::Mean),
            }
        })
        .collect();
    let limit = health.memory.limit;
    let config = &shared.config;
    let mark = |fraction: f64| (fraction * limit as f64) as u64;
    let events = tower_hardening_core::sync::lock(&shared.recent_events)
        .iter()
        .filter(|event| now.duration_since(event.at).is_ok_and(|ago| ago <= window))
        .map(|event| RecentEvent {
            detail: event.detail.clone().filter(|_| config.expose_details),
            ..event.clone()
        })
        .collect();
    History {
        times,
        step_seconds: step.as_secs_f64(),
        minutes,
        services,
        shed_per_second,
        queued,
        process: ProcessHistory {
            cpu_percent: query(names::PROCESS_CPU_PERCENT, &[], Fold::Mean),
            memory_bytes: query(names::PROCESS_RESIDENT_MEMORY_BYTES, &[], Fold::Max),
            memory_limit_bytes: limit,
            memory_warning_bytes: mark(config.memory_warning),
            memory_critical_bytes: mark(config.memory_critical),
            event_loop_p99_ms: query(
                names::EVENT_LOOP_LATENCY_SECONDS,
                &[(names::LABEL_STAT, "p99")],
                Fold::Max,
            )
            .into_iter()
            .map(|v| v.map(|s| s * 1e3))
            .collect(),
        },
        events,
    }
}
