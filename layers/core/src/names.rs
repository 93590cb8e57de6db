//! Every metric name the library emits, in one place.
//!
//! Names follow `hardening_<thing>_<unit>`; labels are low-cardinality
//! (service, breaker or pool names, states, outcomes), never request data.
//!
//! | name | type | unit | labels | emitted by |
//! | --- | --- | --- | --- | --- |
//! | [`REQUESTS_TOTAL`] | counter | requests | `service`, `outcome` (`success`, `failure`, `rejected`, `ignored`, `fallback`) | metrics layer |
//! | [`REQUEST_DURATION_SECONDS`] | histogram | seconds | `service`, `outcome` | metrics layer |
//! | [`REQUESTS_IN_FLIGHT`] | gauge | requests | `service` | metrics layer |
//! | [`CIRCUIT_STATE`] | gauge | state index (0 closed, 1 open, 2 half-open, 3 forced-open, 4 disabled, 5 metrics-only) | `breaker` | breaker |
//! | [`CIRCUIT_TRANSITIONS_TOTAL`] | counter | transitions | `breaker`, `from`, `to` | breaker |
//! | [`CIRCUIT_REJECTED_TOTAL`] | counter | calls | `breaker` | breaker |
//! | [`RETRIES_TOTAL`] | counter | retries | `service` | retry |
//! | [`RETRY_BUDGET_EXHAUSTED_TOTAL`] | counter | requests | `service` | retry |
//! | [`RETRY_GAVE_UP_TOTAL`] | counter | requests | `service` | retry |
//! | [`RECOVERY_ATTEMPTS_TOTAL`] | counter | rebuild attempts | `service`, `result` (`success`, `failure`) | recover, recovery manager |
//! | [`RECOVERY_DURATION_SECONDS`] | histogram | seconds | `service`, `result` | recovery manager |
//! | [`SERVICE_HEALTH`] | gauge | 0 healthy, 1 degraded, 2 unhealthy | `service` | monitor |
//! | [`PROCESS_HEALTH`] | gauge | 0 healthy, 1 degraded, 2 unhealthy | | monitor |
//! | [`MEMORY_SHEDDING_LEVEL`] | gauge | 0 none, 1 low, 2 normal and below, 3 all but critical | | monitor |
//! | [`PROCESS_CPU_PERCENT`] | gauge | percent of one core | | monitor |
//! | [`PROCESS_RESIDENT_MEMORY_BYTES`] | gauge | bytes | | monitor |
//! | [`MEMORY_LIMIT_BYTES`] | gauge | bytes | | monitor |
//! | [`EVENT_LOOP_LATENCY_SECONDS`] | gauge | seconds | `stat` (`mean`, `p99`, `max`) | monitor |
//! | [`RUNTIME_WORKERS`] | gauge | threads | | monitor |
//! | [`RUNTIME_ALIVE_TASKS`] | gauge | tasks | | monitor |
//! | [`RUNTIME_GLOBAL_QUEUE_DEPTH`] | gauge | tasks | | monitor |
//! | [`POOL_UNITS`] | gauge | units | `pool`, `state` (`capacity`, `in_use`, `available`) | monitor |
//! | [`POOL_QUEUED`] | gauge | requests | `pool` | monitor |
//! | [`POOL_REJECTED_TOTAL`] | counter | requests | `pool` | monitor |
//! | [`POOL_QUEUED_BY_PRIORITY`] | gauge | requests | `pool`, `priority` | monitor |
//! | [`POOL_REJECTED_BY_PRIORITY_TOTAL`] | counter | requests | `pool`, `priority` | monitor |
//! | [`MEMORY_MARK_BYTES`] | gauge | bytes | `mark` (`warning`, `critical`) | monitor |
//! | [`SERVICE_CRITICAL`] | gauge | 1 critical, 0 not | `service` | facade |
//! | [`RECOVERY_GAVE_UP_TOTAL`] | counter | recoveries | `service` | recovery manager |
//! | [`MONITOR_ALIVE`] | gauge | 1 running, 0 stopped or dead | | monitor, `/metrics` |
//! | [`MONITOR_LAST_TICK_SECONDS`] | gauge | seconds since the Unix epoch | | monitor |
//! | [`UPSTREAM_ATTEMPTS_TOTAL`] | counter | attempts | `service`, `endpoint` (a configured endpoint, or `other`), `outcome` (`success`, `failure`, `ignored`) | upstream |
//! | [`UPSTREAM_HEDGES_TOTAL`] | counter | hedged attempts | `service` | upstream |
//! | [`UPSTREAM_ENDPOINT_EJECTED`] | gauge | endpoints ejected under the label (1 or 0 for a configured endpoint) | `service`, `endpoint` | upstream |
//! | [`METRICS_DROPPED_SERIES_TOTAL`] | counter | series | | `/metrics` |
//!
//! [`DESCRIPTIONS`] holds each name's kind, unit and help text, which
//! every exporter shows (`# HELP` in Prometheus text).
//!
//! ```
//! use tower_hardening_core::names;
//! assert!(names::ALL.iter().all(|name| name.starts_with("hardening_")));
//! assert_eq!(names::DESCRIPTIONS.len(), names::ALL.len());
//! ```

/// Counter: requests finished, labelled `outcome`.
pub const REQUESTS_TOTAL: &str = "hardening_requests_total";
/// Histogram: request duration in seconds, labelled `outcome`.
pub const REQUEST_DURATION_SECONDS: &str = "hardening_request_duration_seconds";
/// Gauge: requests started and not finished (completed, cancelled or
/// panicked).
pub const REQUESTS_IN_FLIGHT: &str = "hardening_requests_in_flight";

/// Gauge: the breaker's state as [`CircuitState::as_index`](crate::CircuitState::as_index).
pub const CIRCUIT_STATE: &str = "hardening_circuit_state";
/// Counter: state transitions, labelled `from` and `to`.
pub const CIRCUIT_TRANSITIONS_TOTAL: &str = "hardening_circuit_transitions_total";
/// Counter: calls the breaker rejected without calling the inner service.
pub const CIRCUIT_REJECTED_TOTAL: &str = "hardening_circuit_rejected_total";

/// Counter: retries made (attempts after the first).
pub const RETRIES_TOTAL: &str = "hardening_retries_total";
/// Counter: requests not retried because the retry budget was empty.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "hardening_retry_budget_exhausted_total";
/// Counter: requests that failed on their last allowed attempt.
pub const RETRY_GAVE_UP_TOTAL: &str = "hardening_retry_gave_up_total";
/// Counter: attempts to build or rebuild a service, labelled `result`.
pub const RECOVERY_ATTEMPTS_TOTAL: &str = "hardening_recovery_attempts_total";

/// Histogram: how long a rebuild attempt of the recovery manager took,
/// labelled `result`.
pub const RECOVERY_DURATION_SECONDS: &str = "hardening_recovery_duration_seconds";
/// Gauge: a service's health (0 healthy, 1 degraded, 2 unhealthy).
pub const SERVICE_HEALTH: &str = "hardening_service_health";
/// Gauge: the whole process's health (0 healthy, 1 degraded, 2 unhealthy).
pub const PROCESS_HEALTH: &str = "hardening_process_health";
/// Gauge: how much memory pressure sheds (0 nothing, 1 LOW, 2 NORMAL and
/// below, 3 everything but CRITICAL).
pub const MEMORY_SHEDDING_LEVEL: &str = "hardening_memory_shedding_level";
/// Gauge: the process's CPU use in percent of one core.
pub const PROCESS_CPU_PERCENT: &str = "hardening_process_cpu_percent";
/// Gauge: the process's resident memory in bytes.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "hardening_process_resident_memory_bytes";
/// Gauge: the memory limit health and shedding are measured against.
pub const MEMORY_LIMIT_BYTES: &str = "hardening_memory_limit_bytes";
/// Gauge: event-loop timer lateness over the last interval, labelled
/// `stat` (`mean`, `p99`, `max`).
pub const EVENT_LOOP_LATENCY_SECONDS: &str = "hardening_event_loop_latency_seconds";
/// Gauge: tokio worker threads.
pub const RUNTIME_WORKERS: &str = "hardening_runtime_workers";
/// Gauge: tokio tasks alive.
pub const RUNTIME_ALIVE_TASKS: &str = "hardening_runtime_alive_tasks";
/// Gauge: tasks waiting in tokio's global queue.
pub const RUNTIME_GLOBAL_QUEUE_DEPTH: &str = "hardening_runtime_global_queue_depth";

/// Gauge: a pool's units, labelled `state` (`capacity`, `in_use`,
/// `available`).
pub const POOL_UNITS: &str = "hardening_pool_units";
/// Gauge: requests waiting in a pool's queue.
pub const POOL_QUEUED: &str = "hardening_pool_queued";
/// Counter: requests a pool refused (full queue, shedding).
pub const POOL_REJECTED_TOTAL: &str = "hardening_pool_rejected_total";
/// Counter: attempts an upstream sent to one endpoint, labelled
/// `endpoint` and `outcome`.
pub const UPSTREAM_ATTEMPTS_TOTAL: &str = "hardening_upstream_attempts_total";
/// Counter: hedged attempts an upstream sent.
pub const UPSTREAM_HEDGES_TOTAL: &str = "hardening_upstream_hedges_total";
/// Gauge: whether an upstream's endpoint is ejected (1) or in rotation (0).
pub const UPSTREAM_ENDPOINT_EJECTED: &str = "hardening_upstream_endpoint_ejected";

/// Gauge: requests waiting in a pool's queue, labelled `priority`.
pub const POOL_QUEUED_BY_PRIORITY: &str = "hardening_pool_queued_by_priority";
/// Counter: requests a pool refused (full queue, shedding), labelled
/// `priority`.
pub const POOL_REJECTED_BY_PRIORITY_TOTAL: &str = "hardening_pool_rejected_by_priority_total";

/// Gauge: the memory marks in bytes, labelled `mark`: LOW is shed from
/// `warning`, everything but CRITICAL from `critical` (NORMAL halfway).
pub const MEMORY_MARK_BYTES: &str = "hardening_memory_mark_bytes";
/// Gauge: 1 for a service whose health is the process's (critical), 0
/// for the others; to join with per-service figures in alert rules.
pub const SERVICE_CRITICAL: &str = "hardening_service_critical";
/// Counter: recoveries the recovery manager gave up (after
/// `max_recovery_attempts`); the breaker stays forced open until a
/// person acts.
pub const RECOVERY_GAVE_UP_TOTAL: &str = "hardening_recovery_gave_up_total";

/// Gauge: 1 while the monitor task runs, 0 once it stopped or died (a
/// process whose monitor died still answers scrapes: this says so).
pub const MONITOR_ALIVE: &str = "hardening_monitor_alive";
/// Gauge: when the monitor last derived health (on every health and
/// performance tick), in seconds since the Unix epoch (`time() - this`
/// is how stale health is).
pub const MONITOR_LAST_TICK_SECONDS: &str = "hardening_monitor_last_tick_timestamp_seconds";
/// Counter: series the in-process collector refused because it held its
/// `max_series` already; their figures are missing everywhere (`/metrics`,
/// the dashboard, alerts), so this says so.
pub const METRICS_DROPPED_SERIES_TOTAL: &str = "hardening_metrics_dropped_series_total";

/// Label: the breaker's name.
pub const LABEL_BREAKER: &str = "breaker";
/// Label: the service's (or layer's) name.
pub const LABEL_SERVICE: &str = "service";
/// Label: how a request ended (`success`, `failure`, `rejected`, `ignored` or `fallback`).
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: how an attempt ended (`success` or `failure`).
pub const LABEL_RESULT: &str = "result";
/// Label: the state before a transition.
pub const LABEL_FROM: &str = "from";
/// Label: the state after a transition.
pub const LABEL_TO: &str = "to";
/// Label: the pool's name.
pub const LABEL_POOL: &str = "pool";
/// Label: which part of a whole (`capacity`, `in_use`, `available`).
pub const LABEL_STATE: &str = "state";
/// Label: which statistic of a distribution (`mean`, `p99`, `max`).
pub const LABEL_STAT: &str = "stat";
/// Label: which memory mark (`warning`, `critical`).
pub const LABEL_MARK: &str = "mark";
/// Label: a request's priority (`low`, `normal`, `high`, `critical`).
pub const LABEL_PRIORITY: &str = "priority";
/// Label: an upstream's endpoint, as configured (`other` for one added
/// at run time, so the label stays bounded).
pub const LABEL_ENDPOINT: &str = "endpoint";

/// Every metric name above.
pub const ALL: &[&str] = &[
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUESTS_IN_FLIGHT,
    CIRCUIT_STATE,
    CIRCUIT_TRANSITIONS_TOTAL,
    CIRCUIT_REJECTED_TOTAL,
    RETRIES_TOTAL,
    RETRY_BUDGET_EXHAUSTED_TOTAL,
    RETRY_GAVE_UP_TOTAL,
    RECOVERY_ATTEMPTS_TOTAL,
    RECOVERY_DURATION_SECONDS,
    SERVICE_HEALTH,
    PROCESS_HEALTH,
    MEMORY_SHEDDING_LEVEL,
    PROCESS_CPU_PERCENT,
    PROCESS_RESIDENT_MEMORY_BYTES,
    MEMORY_LIMIT_BYTES,
    EVENT_LOOP_LATENCY_SECONDS,
    RUNTIME_WORKERS,
    RUNTIME_ALIVE_TASKS,
    RUNTIME_GLOBAL_QUEUE_DEPTH,
    POOL_UNITS,
    POOL_QUEUED,
    POOL_REJECTED_TOTAL,
    POOL_QUEUED_BY_PRIORITY,
    POOL_REJECTED_BY_PRIORITY_TOTAL,
    MEMORY_MARK_BYTES,
    SERVICE_CRITICAL,
    RECOVERY_GAVE_UP_TOTAL,
    MONITOR_ALIVE,
    MONITOR_LAST_TICK_SECONDS,
    UPSTREAM_ATTEMPTS_TOTAL,
    UPSTREAM_HEDGES_TOTAL,
    UPSTREAM_ENDPOINT_EJECTED,
    METRICS_DROPPED_SERIES_TOTAL,
];

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (or is reset with the process).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// A metric's kind, unit and help text, for exporters to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    /// The metric's name (one of [`ALL`]).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit, spelled as `metrics::Unit`'s canonical labels (`count`,
    /// `seconds`, `bytes`, `percent`), or empty for a state index.
    pub unit: &'static str,
    /// One sentence for people reading the exposition.
    pub help: &'static str,
}

const fn describe(
    name: &'static str,
    kind: MetricKind,
    unit: &'static str,
    help: &'static str,
) -> Description {
    Description {
        name,
        kind,
        unit,
        help,
    }
}

/// Every metric in [`ALL`], described, in the same order.
pub const DESCRIPTIONS: &[Description] = {
    use MetricKind::{Counter, Gauge, Histogram};
    &[
        describe(
            REQUESTS_TOTAL,
            Counter,
            "count",
            "Requests finished, by outcome (success, failure, rejected by a hardening layer, ignored: not evidence either way, such as a client body that failed).",
        ),
        describe(
            REQUEST_DURATION_SECONDS,
            Histogram,
            "seconds",
            "Request duration in seconds, by outcome.",
        ),
        describe(
            REQUESTS_IN_FLIGHT,
            Gauge,
            "count",
            "Requests started and not yet finished, cancelled or panicked.",
        ),
        describe(
            CIRCUIT_STATE,
            Gauge,
            "",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only.",
        ),
        describe(
            CIRCUIT_TRANSITIONS_TOTAL,
            Counter,
            "count",
            "Circuit breaker state transitions, by from and to state.",
        ),
        describe(
            CIRCUIT_REJECTED_TOTAL,
            Counter,
            "count",
            "Calls the circuit breaker refused without calling the service.",
        ),
        describe(
            RETRIES_TOTAL,
            Counter,
            "count",
            "Retries made (attempts after the first).",
        ),
        describe(
            RETRY_BUDGET_EXHAUSTED_TOTAL,
            Counter,
            "count",
            "Requests not retried because the retry budget was empty.",
        ),
        describe(
            RETRY_GAVE_UP_TOTAL,
            Counter,
            "count",
            "Requests that failed on their last allowed attempt.",
        ),
        describe(
            RECOVERY_ATTEMPTS_TOTAL,
            Counter,
            "count",
            "Attempts to build or rebuild a service, by result.",
        ),
        describe(
            RECOVERY_DURATION_SECONDS,
            Histogram,
            "seconds",
            "How long a rebuild attempt of the recovery manager took, by result.",
        ),
        describe(
            SERVICE_HEALTH,
            Gauge,
            "",
            "A service's health: 0 healthy, 1 degraded, 2 unhealthy.",
        ),
        describe(
            PROCESS_HEALTH,
            Gauge,
            "",
            "The process's overall health: 0 healthy, 1 degraded, 2 unhealthy.",
        ),
        describe(
            MEMORY_SHEDDING_LEVEL,
            Gauge,
            "",
            "What memory pressure sheds: 0 nothing, 1 LOW, 2 NORMAL and below, 3 everything but CRITICAL.",
        ),
        describe(
            PROCESS_CPU_PERCENT,
            Gauge,
            "percent",
            "The process's CPU use in percent of one core over the last performance interval.",
        ),
        describe(
            PROCESS_RESIDENT_MEMORY_BYTES,
            Gauge,
            "bytes",
            "The process's memory as health and shedding measure it, in bytes.",
        ),
        describe(
            MEMORY_LIMIT_BYTES,
            Gauge,
            "bytes",
            "The memory limit health and shedding are measured against, in bytes.",
        ),
        describe(
            EVENT_LOOP_LATENCY_SECONDS,
            Gauge,
            "seconds",
            "Event-loop timer lateness over the last performance interval, by stat (mean, p99, max).",
        ),
        describe(RUNTIME_WORKERS, Gauge, "count", "Tokio worker threads."),
        describe(RUNTIME_ALIVE_TASKS, Gauge, "count", "Tokio tasks alive."),
        describe(
            RUNTIME_GLOBAL_QUEUE_DEPTH,
            Gauge,
            "count",
            "Tasks waiting in tokio's global queue.",
        ),
        describe(
            POOL_UNITS,
            Gauge,
            "count",
            "A pool's units, by state (capacity, in_use, available).",
        ),
        describe(
            POOL_QUEUED,
            Gauge,
            "count",
            "Requests waiting in a pool's queue.",
        ),
        describe(
            POOL_REJECTED_TOTAL,
            Counter,
            "count",
            "Requests a pool refused (full queue, shedding).",
        ),
        describe(
            POOL_QUEUED_BY_PRIORITY,
            Gauge,
            "count",
            "Requests waiting in a pool's queue, by priority.",
        ),
        describe(
            POOL_REJECTED_BY_PRIORITY_TOTAL,
            Counter,
            "count",
            "Requests a pool refused (full queue, shedding), by priority.",
        ),
        describe(
            MEMORY_MARK_BYTES,
            Gauge,
            "bytes",
            "The memory marks in bytes, by mark: LOW is shed from warning, everything but CRITICAL from critical, NORMAL halfway.",
        ),
        describe(
            SERVICE_CRITICAL,
            Gauge,
            "",
            "1 for a service whose health is the process's (critical), 0 for the others.",
        ),
        describe(
            RECOVERY_GAVE_UP_TOTAL,
            Counter,
            "count",
            "Recoveries the recovery manager gave up after its last allowed attempt.",
        ),
        describe(
            MONITOR_ALIVE,
            Gauge,
            "",
            "1 while the hardening's monitor task runs, 0 once it stopped or died.",
        ),
        describe(
            MONITOR_LAST_TICK_SECONDS,
            Gauge,
            "seconds",
            "When the monitor last derived health, in seconds since the Unix epoch.",
        ),
        describe(
            UPSTREAM_ATTEMPTS_TOTAL,
            Counter,
            "count",
            "Attempts an upstream sent to one endpoint, by endpoint and outcome.",
        ),
        describe(
            UPSTREAM_HEDGES_TOTAL,
            Counter,
            "count",
            "Hedged attempts an upstream sent.",
        ),
        describe(
            UPSTREAM_ENDPOINT_EJECTED,
            Gauge,
            "",
            "Endpoints of an upstream ejected now, under their label: 1 or 0 for a configured endpoint, how many for `other`.",
        ),
        describe(
            METRICS_DROPPED_SERIES_TOTAL,
            Counter,
            "count",
            "Metric series the in-process collector refused because it held max_series already: their figures are missing from /metrics, the dashboard and alerts.",
        ),
    ]
};

/// The description of `name`, if it is one of [`ALL`].
pub fn description(name: &str) -> Option<&'static Description> {
    DESCRIPTIONS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_described_once_in_order() {
        let described: Vec<&str> = DESCRIPTIONS.iter().map(|d| d.name).collect();
        assert_eq!(described, ALL);
        for d in DESCRIPTIONS {
            assert!(!d.help.is_empty() && !d.help.contains('\n'), "{}", d.name);
            assert_eq!(
                d.kind == MetricKind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
        }
    }
}
