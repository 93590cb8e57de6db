//! Where the monitor's readings come from: sysinfo by default, or readings
//! a test sets.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tower_hardening_core::sync::lock;

/// Memory figures in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReading {
    /// Resident memory of this process.
    pub process_rss: u64,
    /// Virtual memory of this process.
    pub process_virtual: u64,
    /// Memory in use on the machine.
    pub system_used: u64,
    /// The machine's memory.
    pub system_total: u64,
    /// The cgroup's memory limit, where one applies.
    pub cgroup_limit: Option<u64>,
}

/// CPU use in percent since the previous reading.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuReading {
    /// This process, in percent of one core.
    pub process: f32,
    /// The machine, in percent of all cores.
    pub system: f32,
}

/// The monitor's source of machine readings. The default reads sysinfo;
/// tests give [`ManualReadings`] to inject memory pressure or CPU load
/// without allocating gigabytes.
pub trait Readings: Send + 'static {
    /// Memory now.
    fn memory(&mut self) -> MemoryReading;

    /// CPU use since the previous call. May return the previous figures
    /// when called again sooner than the platform can measure.
    fn cpu(&mut self) -> CpuReading;
}

/// Readings from sysinfo: this process and the global memory and CPU
/// figures only, never the whole process list.
#[derive(Debug)]
pub struct SysinfoReadings {
    system: Option<sysinfo::System>,
    pid: Option<sysinfo::Pid>,
    last_cpu: Option<Instant>,
    cpu: CpuReading,
}

impl SysinfoReadings {
    /// Readings of this process.
    pub fn new() -> Self {
        SysinfoReadings {
            system: sysinfo::System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
            last_cpu: None,
            cpu: CpuReading::default(),
        }
    }

    fn refresh_process(&mut self, cpu: bool) {
        let (Some(system), Some(pid)) = (self.system.as_mut(), self.pid) else {
            return;
        };
        let mut kind = sysinfo::ProcessRefreshKind::nothing().with_memory();
        if cpu {
            kind = kind.with_cpu();
        }
        system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::Some(&[pid]), true, kind);
    }
}

impl Default for SysinfoReadings {
    fn default() -> Self {
        SysinfoReadings::new()
    }
}

impl Readings for SysinfoReadings {
    fn memory(&mut self) -> MemoryReading {
        self.refresh_process(false);
        let Some(system) = self.system.as_mut() else {
            return MemoryReading::default();
        };
        system.refresh_memory();
        let process = self.pid.and_then(|pid| system.process(pid));
        MemoryReading {
            process_rss: process.map_or(0, |p| p.memory()),
            process_virtual: process.map_or(0, |p| p.virtual_memory()),
            system_used: system.used_memory(),
            system_total: system.total_memory(),
            cgroup_limit: system
                .cgroup_limits()
                .map(|limits| limits.total_memory)
                .filter(|&limit| limit > 0),
        }
    }

    fn cpu(&mut self) -> CpuReading {
        // sysinfo needs some time between two CPU refreshes to measure.
        if self
            .last_cpu
            .is_some_and(|last| last.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL)
        {
            return self.cpu;
        }
        self.last_cpu = Some(Instant::now());
        self.refresh_process(true);
        let Some(system) = self.system.as_mut() else {
            return CpuReading::default();
        };
        system.refresh_cpu_usage();
        self.cpu = CpuReading {
            process: self
                .pid
                .and_then(|pid| system.process(pid))
                .map_or(0.0, |p| p.cpu_usage()),
            system: system.global_cpu_usage(),
        };
        self.cpu
    }
}

/// Readings set by hand: for tests of memory pressure, CPU alerts and
/// health rules. Clones share the same figures.
///
/// ```
/// use tower_hardening::monitor::{ManualReadings, MemoryReading, Readings};
///
/// let readings = ManualReadings::default();
/// let mut monitor_side = readings.clone();
/// readings.set_memory(MemoryReading { process_rss: 900, system_total: 1_000, ..Default::default() });
/// assert_eq!(monitor_side.memory().process_rss, 900);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualReadings {
    figures: Arc<Mutex<(MemoryReading, CpuReading)>>,
}

impl ManualReadings {
    /// The memory figures every later reading returns.
    pub fn set_memory(&self, memory: MemoryReading) {
        lock(&self.figures).0 = memory;
    }

    /// The CPU figures every later reading returns.
    pub fn set_cpu(&self, cpu: CpuReading) {
        lock(&self.figures).1 = cpu;
    }
}

impl Readings for ManualReadings {
    fn memory(&mut self) -> MemoryReading {
        lock(&self.figures).0
    }

    fn cpu(&mut self) -> CpuReading {
        lock(&self.figures).1
    }
}
