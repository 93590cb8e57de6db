//! The dashboard: one self-contained page, and the JSON it polls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tower_hardening_core::{CircuitState, HealthState};

use super::RecentEvent;
use crate::HardeningHandle;
use crate::monitor::service_figures;

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
            }
        })
        .collect();
    let events = tower_hardening_core::sync::lock(&shared.recent_events)
        .iter()
        .rev()
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
