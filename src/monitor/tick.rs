//! The performance tick and memory readings: CPU, memory, the event-loop
//! probe, tokio's runtime figures, each service's traffic, alerts with
//! hysteresis, and memory pressure turned into shedding.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tower_hardening_core::{EventKind, Priority, names};

use super::pressure::Shedding;
use super::rules::PROCESS;
use super::{Monitor, emit};
use crate::health::MemoryStatus;
use crate::performance::{
    CpuUsage, MemoryUsage, PerformanceSnapshot, RuntimeFigures, ServicePerformance,
};

/// An alert clears once its figure falls below this share of the
/// threshold.
const ALERT_CLEAR: f64 = 0.9;

impl Monitor {
    /// Reads memory, updates the memory status and the shedding level.
    /// A panic in the readings source is a failed reading, as a panic in a
    /// health check is a failed check: the last good figures stay, and
    /// health says they are stale.
    pub(crate) fn read_memory(&mut self) -> crate::monitor::MemoryReading {
        let readings = &mut self.readings;
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| readings.memory()));
        self.failed_readings.memory = read.is_err();
        let Ok(reading) = read else {
            return self.last_memory;
        };
        self.last_memory = reading;
        let limit = self
            .shared
            .config
            .max_resource_memory
            .or(reading.cgroup_limit)
            .unwrap_or(reading.system_total)
            .max(1);
        let used = reading.process_rss;
        self.memory = MemoryStatus {
            used,
            limit,
            percentage: used as f64 * 100.0 / limit as f64,
        };
        self.apply_pressure();
        // Here, not in the performance tick: memory is read (and sheds)
        // after health checks too, and the memory alerts compare these.
        metrics::with_local_recorder(&*self.shared.recorder, || {
            metrics::gauge!(names::PROCESS_RESIDENT_MEMORY_BYTES).set(used as f64);
            metrics::gauge!(names::MEMORY_LIMIT_BYTES).set(limit as f64);
            for (mark, fraction) in [("warning", self.marks.warning), ("critical", self.marks.critical)] {
                metrics::gauge!(names::MEMORY_MARK_BYTES, names::LABEL_MARK => mark)
                    .set(fraction * limit as f64);
            }
        });
        reading
    }

    fn apply_pressure(&mut self) {
        if !self.shared.config.enable_resource_management {
            // Shedding is resource management: with it off, memory is
            // only reported.
            return;
        }
        let used = self.memory.used as f64 / self.memory.limit as f64;
        let next = self.marks.next(self.shedding, used);
        if next == self.shedding {
            return;
        }
        let previous = self.shedding;
        self.shedding = next;
        let shared = self.shared.clone();
        shared.shedding.store(next as u8, Ordering::Release);
        for pool in shared.pools.values() {
            apply_shedding(pool, next);
        }
        for entry in shared.services.values() {
            if let Some(parts) = entry.stack.get() {
                apply_shedding(&parts.pool, next);
            }
        }
        let process: Arc<str> = Arc::from(PROCESS);
        emit(
            &shared,
            &process,
            EventKind::MemoryPressure {
                active: next != Shedding::None,
                used_bytes: self.memory.used,
                limit_bytes: self.memory.limit,
            },
        );
        if next > previous {
            for (level, priority) in [
                (Shedding::Low, Priority::LOW),
                (Shedding::Normal, Priority::NORMAL),
                (Shedding::High, Priority::HIGH),
            ] {
                if previous < level && level <= next {
                    emit(&shared, &process, EventKind::Shed { priority });
                }
            }
        }
        metrics::with_local_recorder(&*shared.recorder, || {
            metrics::gauge!(names::MEMORY_SHEDDING_LEVEL).set(f64::from(next as u8));
        });
    }

    pub(crate) fn performance_tick(&mut self) {
        let config = self.shared.config.clone();
        let readings = &mut self.readings;
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| readings.cpu()));
        self.failed_readings.cpu = read.is_err();
        if let Ok(cpu) = read {
            self.last_cpu = cpu;
        }
        let cpu = self.last_cpu;
        let memory = self.read_memory();
        let event_loop = self.latency.take();
        let runtime = tokio::runtime::Handle::current().metrics();
        let runtime = RuntimeFigures {
            workers: runtime.num_workers(),
            alive_tasks: runtime.num_alive_tasks(),
            global_queue_depth: runtime.global_queue_depth(),
        };
        let window = config
            .performance_check_interval
            .max(config.metrics_resolution);
        let mut services = std::collections::BTreeMap::new();
        for (name, entry) in &self.shared.services {
            let mut figures = service_figures(&self.shared.collector, name, window);
            if let Some(parts) = entry.stack.get() {
                let stats = parts.pool.stats();
                figures.queued = stats.queued as u64;
            }
            services.insert(name.clone(), figures);
        }

        let thresholds = &config.performance_thresholds;
        let loop_p99 = event_loop.p99.as_secs_f64();
        let checks = [
            (
                "process_cpu_percent",
                f64::from(cpu.process),
                thresholds.process_cpu_percent,
            ),
            (
                "memory_percent",
                self.memory.percentage,
                thresholds.memory_percent,
            ),
            (
                "event_loop_p99_seconds",
                loop_p99,
                thresholds.event_loop_p99.as_secs_f64(),
            ),
        ];
        let mut alerts = Vec::new();
        for (metric, value, threshold) in checks {
            let on = match metric {
                "process_cpu_percent" => &mut self.alerts.cpu,
                "memory_percent" => &mut self.alerts.memory,
                _ => &mut self.alerts.event_loop,
            };
            let next = if *on {
                value >= threshold * ALERT_CLEAR
            } else {
                value >= threshold
            };
            if next != *on {
                *on = next;
                emit(
                    &self.shared,
                    &Arc::from(PROCESS),
                    EventKind::PerformanceAlert {
                        metric,
                        active: next,
                        value,
                        threshold,
                    },
                );
            }
            if next {
                alerts.push(Arc::from(format!(
                    "{metric} = {value:.3} (threshold {threshold})"
                )));
            }
        }

        metrics::with_local_recorder(&*self.shared.recorder, || {
            metrics::gauge!(names::PROCESS_CPU_PERCENT).set(f64::from(cpu.process));
            for (stat, value) in [
                ("mean", event_loop.mean),
                ("p99", event_loop.p99),
                ("max", event_loop.max),
            ] {
                metrics::gauge!(names::EVENT_LOOP_LATENCY_SECONDS, names::LABEL_STAT => stat)
                    .set(value.as_secs_f64());
            }
            metrics::gauge!(names::RUNTIME_WORKERS).set(runtime.workers as f64);
            metrics::gauge!(names::RUNTIME_ALIVE_TASKS).set(runtime.alive_tasks as f64);
            metrics::gauge!(names::RUNTIME_GLOBAL_QUEUE_DEPTH)
                .set(runtime.global_queue_depth as f64);
            // A service's admission pool is labelled `{service}/admission`,
            // apart from the resource pools, whatever their names. With
            // admission off it is an unlimited stand-in: not published.
            let stack_pools = self.shared.services.values().filter_map(|entry| {
                entry
                    .stack
                    .get()
                    .filter(|parts| parts.admission)
                    .map(|parts| (Arc::from(format!("{}/admission", entry.name)), &parts.pool))
            });
            let resource_pools = self
                .shared
                .pools
                .iter()
                .map(|(name, pool)| (name.clone(), pool));
            for (name, pool) in resource_pools.chain(stack_pools) {
                let name: Arc<str> = name;
                let stats = pool.stats();
                for (state, units) in [
                    ("capacity", stats.capacity),
                    ("in_use", stats.in_use),
                    ("available", stats.available),
                ] {
                    metrics::gauge!(names::POOL_UNITS, names::LABEL_POOL => name.clone(), names::LABEL_STATE => state)
                        .set(units as f64);
                }
                metrics::gauge!(names::POOL_QUEUED, names::LABEL_POOL => name.clone())
                    .set(stats.queued as f64);
                // By priority: every level from the start (at zero), so a
                // chart or an alert finds them before the first wait.
                for priority in [Priority::LOW, Priority::NORMAL, Priority::HIGH, Priority::CRITICAL] {
                    let label = priority.to_string();
                    let queued = stats.queued_by_priority.get(&priority).copied().unwrap_or(0);
                    metrics::gauge!(names::POOL_QUEUED_BY_PRIORITY, names::LABEL_POOL => name.clone(), names::LABEL_PRIORITY => label.clone())
                        .set(queued as f64);
                    let rejected = stats.rejected_by_priority.get(&priority).copied().unwrap_or(0);
                    metrics::counter!(names::POOL_REJECTED_BY_PRIORITY_TOTAL, names::LABEL_POOL => name.clone(), names::LABEL_PRIORITY => label)
                        .absolute(rejected);
                }
                metrics::counter!(names::POOL_REJECTED_TOTAL, names::LABEL_POOL => name)
                    .absolute(stats.rejected_total);
            }
        });

        self.shared.performance.store(Some(Arc::new(PerformanceSnapshot {
            cpu: CpuUsage {
                process: cpu.process,
                system: cpu.system,
            },
            memory: MemoryUsage {
                rss: memory.process_rss,
                virtual_bytes: memory.process_virtual,
                system_used: memory.system_used,
                system_total: memory.system_total,
                limit: self.memory.limit,
            },
            event_loop,
            runtime,
            services,
            alerts,
            measured_at: SystemTime::now(),
        })));
    }

}

/// A service's traffic over `window`, from the collector.
pub(crate) fn service_figures(
    collector: &crate::metrics::MetricsCollector,
    name: &str,
    window: Duration,
) -> ServicePerformance {
    {
        let requests = |outcome: &str| {
            collector
                .query(names::REQUESTS_TOTAL)
                .label(names::LABEL_SERVICE, name)
                .label(names::LABEL_OUTCOME, outcome)
                .window(window)
        };
        let success = requests("success").sum();
        let failure = requests("failure").sum();
        let rejected = requests("rejected");
        // The calls that reached the service: refusals answer in
        // microseconds and would pull its latency down to nothing.
        let durations = collector
            .query(names::REQUEST_DURATION_SECONDS)
            .label(names::LABEL_SERVICE, name)
            .label_in(names::LABEL_OUTCOME, &["success", "failure"])
            .window(window);
        let finished = success + failure;
        let seconds = |q: Option<f64>| q.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let in_flight = collector
            .query(names::REQUESTS_IN_FLIGHT)
            .label(names::LABEL_SERVICE, name)
            .window(window)
            .max()
            .unwrap_or(0.0);
        ServicePerformance {
            rate: requests("success").rate_per_sec() + requests("failure").rate_per_sec(),
            p50: seconds(durations.quantile(0.5)),
            p99: seconds(durations.quantile(0.99)),
            error_rate: (finished > 0.0).then(|| failure / finished),
            rejected_rate: rejected.rate_per_sec(),
            fallback_rate: requests("fallback").rate_per_sec(),
            in_flight: in_flight.max(0.0) as u64,
            queued: 0,
        }
    }
}

fn apply_shedding(pool: &crate::limit::ResourcePool, level: Shedding) {
    match level.below() {
        Some(priority) => pool.shed_below(priority),
        None => pool.stop_shedding(),
    }
}
