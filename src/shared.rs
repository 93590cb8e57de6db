//! The state every handle and the monitor share: the published snapshots,
//! the service registry, the pools, the collector and the event stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tower_hardening_core::{EventSink, Priority};

use crate::config::{ServiceConfig, SystemHardeningConfig};
use crate::health::HealthStatus;
use crate::managed::ManagedService;
use crate::performance::PerformanceSnapshot;
use crate::stack::StackParts;

/// A request from a handle to the monitor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start a recovery of this service now (also after one gave up).
    TriggerRecovery(Arc<str>),
    /// A stack was built: its breaker now counts in the health rules.
    StackBuilt,
}

/// One service the hardening knows: registered, configured, or both.
pub(crate) struct ServiceEntry {
    pub(crate) name: Arc<str>,
    pub(crate) managed: Option<Arc<dyn ManagedService>>,
    pub(crate) config: ServiceConfig,
    pub(crate) critical: bool,
    pub(crate) recoverable: bool,
    /// The layers' shared parts, made by the first `layer(name)` or
    /// `http_layer(name)`: every stack of a service shares one breaker,
    /// one admission pool and one retry budget.
    pub(crate) stack: OnceLock<Arc<StackParts>>,
    /// Who set its breaker's state: the recovery manager undoes only its
    /// own hold.
    pub(crate) steering: Arc<crate::recovery_manager::Steering>,
    /// Its `[upstreams.<name>]` section, when it is an upstream.
    pub(crate) upstream: Option<crate::config::UpstreamConfig>,
    /// The upstream's endpoints, once it was built.
    pub(crate) endpoints: OnceLock<Arc<dyn crate::health::EndpointView>>,
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("name", &self.name)
            .field("managed", &self.managed.is_some())
            .field("critical", &self.critical)
            .field("recoverable", &self.recoverable)
            .field("stack", &self.stack.get().is_some())
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) config: SystemHardeningConfig,
    pub(crate) health: ArcSwap<HealthStatus>,
    /// `None` until the first performance reading.
    pub(crate) performance: arc_swap::ArcSwapOption<PerformanceSnapshot>,
    /// Fixed at build: every registered or configured service.
    pub(crate) services: BTreeMap<Arc<str>, ServiceEntry>,
    /// The pools of `request_resource`, by name.
    pub(crate) pools: BTreeMap<Arc<str>, crate::limit::ResourcePool>,
    /// Whether the hardening made the memory pool (bytes) itself, rather
    /// than the application giving a pool of that name.
    pub(crate) memory_pool_made: bool,
    pub(crate) collector: crate::metrics::MetricsCollector,
    /// What stacks and the monitor record into: the collector, or the
    /// collector fanned out to the application's own recorder.
    pub(crate) recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    pub(crate) events: EventSink,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) stopped: watch::Sender<bool>,
    pub(crate) monitor_started: AtomicBool,
    /// Set once the monitor has run every registered service's
    /// `initialize` (whatever the outcome): readiness waits for it.
    pub(crate) initialized: AtomicBool,
    /// Set when the monitor ended without `shutdown()`: readiness fails.
    pub(crate) monitor_died: AtomicBool,
    /// Set by whoever starts the shutdown steps (once).
    pub(crate) closed: AtomicBool,
    /// The task running the shutdown steps, for the first waiter to join.
    pub(crate) steps: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The monitor's task, when `start()` spawned it.
    pub(crate) task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// The last events, for the dashboard.
    pub(crate) recent_events: std::sync::Mutex<std::collections::VecDeque<crate::endpoints::RecentEvent>>,
    /// The shedding level now (`Shedding as u8`), so stacks built later
    /// start with it.
    pub(crate) shedding: AtomicU8,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Requests below this priority are refused now (memory pressure).
    pub(crate) fn shedding_below(&self) -> Option<Priority> {
        crate::monitor::pressure::Shedding::from_u8(self.shedding.load(Ordering::Acquire)).below()
    }
}
