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
//!
//! ```
//! use tower_hardening_core::names;
//! assert!(names::ALL.iter().all(|name| name.starts_with("hardening_")));
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
];
