//! `SystemHardening`: the builder, the service registry, the per-service
//! stacks, and starting the monitor.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tower_hardening_core::{BoxError, ConfigError, EventSink, Priority};

use crate::config::{MEMORY_POOL, SystemHardeningConfig};
use crate::handle::{HardeningHandle, UnknownName};
use crate::health::HealthStatus;
use crate::limit::ResourcePool;
use crate::managed::ManagedService;
use crate::metrics::MetricsCollector;
use crate::monitor::{Monitor, Readings, SysinfoReadings};
use crate::shared::{Command, ServiceEntry, Shared};
use crate::stack::{Grpc, Http, HttpServiceLayer, ServiceLayer, StackParts};

/// Events each subscriber may fall behind by before it loses the oldest.
const EVENT_CAPACITY: usize = 1_024;

/// The seed's `SystemHardening`: one builder, one layer per service, one
/// handle to read and steer everything, one background task.
///
/// ```
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// use tower_hardening::config::SystemHardeningConfig;
/// use tower_hardening::{BoxError, SystemHardening};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     [services.model-inference]
///     timeout = "2s"
/// "#)?;
/// let hardening = SystemHardening::builder(config).build()?;
/// let mut model = ServiceBuilder::new()
///     .layer(hardening.layer("model-inference")?)
///     .service(service_fn(|prompt: String| async move { Ok::<_, BoxError>(prompt.len()) }));
/// let handle = hardening.start();
/// assert_eq!(model.ready().await?.call("hello".into()).await?, 5);
/// tokio::task::yield_now().await; // ready once the monitor has run every `initialize`
/// assert!(handle.ready());
/// handle.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct SystemHardening {
    pub(crate) shared: Arc<Shared>,
    monitor: Monitor,
}

impl fmt::Debug for SystemHardening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemHardening")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SystemHardening`]: the configuration, the services it
/// manages, the pools of `request_resource`.
#[must_use = "a builder does nothing until `build` is called"]
pub struct SystemHardeningBuilder {
    config: SystemHardeningConfig,
    services: Vec<(Arc<str>, Arc<dyn ManagedService>)>,
    pools: Vec<ResourcePool>,
    readings: Option<Box<dyn Readings>>,
    recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

impl fmt::Debug for SystemHardeningBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemHardeningBuilder")
            .field("config", &self.config)
            .field(
                "services",
                &self.services.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SystemHardening {
    /// A builder over `config` (validated again by `build`).
    pub fn builder(config: SystemHardeningConfig) -> SystemHardeningBuilder {
        SystemHardeningBuilder {
            config,
            services: Vec::new(),
            pools: Vec::new(),
            readings: None,
            recorder: None,
        }
    }

    /// The whole stack of `service` as a layer: metrics, admission, retry,
    /// breaker and timeout, from its configuration section (the defaults
    /// for a registered service without one). Every layer of one service
    /// shares one breaker, pool and retry budget, which the handle reads.
    ///
    /// A name never registered nor configured is an error naming it.
    ///
    /// **What it needs of your service** `S` for requests `Req`:
    /// `S: Service<Req> + Clone` with `S::Error: Into<BoxError>`, and
    /// `Req: Clone` (a retry sends a copy), even when the service's retries
    /// are off; [`without_retries`](ServiceLayer::without_retries) drops
    /// that bound. To spawn the call, `S`, `S::Future`, `S::Response` and
    /// `Req` must be `Send + 'static`. Nothing else: fault injection asks
    /// nothing of the response. Where the stack does not fit, the compiler
    /// names the stack's type, not the bound; call
    /// [`stack::fits_layer`](crate::stack::fits_layer) on your service and
    /// it names the bound.
    ///
    /// A rate limit keyed by peer address or header (`rate_limit.key`)
    /// needs an HTTP request: this stack refuses it with an error naming
    /// `services.<name>.rate_limit.key`; use `http_layer` or `grpc_layer`.
    pub fn layer(&self, service: &str) -> Result<ServiceLayer, BoxError> {
        parts(&self.shared, service).and_then(ServiceLayer::new)
    }

    /// The same stack for `http::Request<B>`, answering errors with HTTP
    /// statuses: see [`HttpServiceLayer`].
    ///
    /// **What it needs of your service** `S` (behind
    /// [`map_body`](HttpServiceLayer::map_body), which gives it its own
    /// request body type `ReqBody`): `S: Service<http::Request<ReqBody>,
    /// Response = http::Response<ResBody>> + Clone` with `S::Error:
    /// Into<BoxError>` and `ResBody: http_body::Body`; to spawn the call,
    /// `S`, `S::Future` and `ResBody` `Send + 'static`. Requests need not be
    /// `Clone`, and response bodies need not be `Default` (hyper's
    /// `Incoming` fits: an injected fault status is answered by the stack).
    /// [`stack::fits_http_layer`](crate::stack::fits_http_layer) names the
    /// missing bound where the stack does not fit.
    pub fn http_layer(&self, service: &str) -> Result<HttpServiceLayer<Http>, BoxError> {
        parts(&self.shared, service).map(|parts| HttpServiceLayer::new(parts, Http))
    }

    /// The same stack for gRPC (tonic): failing `grpc-status` codes count as
    /// failures, errors become gRPC statuses (see [`HttpServiceLayer`]).
    ///
    /// It needs of your service what [`http_layer`](Self::http_layer)
    /// needs (a tonic `Server`'s routes fit); see
    /// [`stack::fits_http_layer`](crate::stack::fits_http_layer).
    pub fn grpc_layer(&self, service: &str) -> Result<HttpServiceLayer<Grpc>, BoxError> {
        parts(&self.shared, service).map(|parts| HttpServiceLayer::new(parts, Grpc))
    }

    /// A handle, before starting (for building stacks and routes that need
    /// one).
    pub fn handle(&self) -> HardeningHandle {
        HardeningHandle {
            shared: self.shared.clone(),
        }
    }

    /// Spawns the monitor on the current tokio runtime (the seed's
    /// `initialize()`): it initializes every registered service, then
    /// runs the health and performance ticks and the recovery manager
    /// until [`HardeningHandle::shutdown`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; use [`into_parts`](Self::into_parts) to run
    /// the monitor yourself.
    pub fn start(self) -> HardeningHandle {
        let (handle, monitor) = self.into_parts();
        let task = tokio::spawn(monitor);
        *tower_hardening_core::sync::lock(&handle.shared.task) = Some(task);
        handle
    }

    /// The handle and the monitor as a future, for callers who run it
    /// themselves (on another runtime, in a `JoinSet`, ...). It ends after
    /// `shutdown()`.
    pub fn into_parts(self) -> (HardeningHandle, impl Future<Output = ()> + Send + 'static) {
        let shared = self.shared.clone();
        let monitor = self.monitor;
        let run = async move {
            shared.monitor_started.store(true, Ordering::Release);
            monitor.run().await;
        };
        (
            HardeningHandle {
                shared: self.shared,
            },
            run,
        )
    }
}

impl SystemHardeningBuilder {
    /// Registers a service the hardening manages (the seed's registered
    /// services): health-checked, restarted by the recovery manager when
    /// it is in `recoverable_services`, shut down with the hardening.
    pub fn service(mut self, name: impl Into<Arc<str>>, service: impl ManagedService) -> Self {
        self.services.push((name.into(), Arc::new(service)));
        self
    }

    /// A pool for `request_resource`, by its name. A pool named `memory`
    /// is made from `max_resource_memory` (in bytes) unless given here.
    pub fn pool(mut self, pool: ResourcePool) -> Self {
        self.pools.push(pool);
        self
    }

    /// Where the monitor reads memory and CPU (default: sysinfo). Tests
    /// give [`ManualReadings`](crate::monitor::ManualReadings).
    pub fn readings(mut self, readings: impl Readings) -> Self {
        self.readings = Some(Box::new(readings));
        self
    }

    /// Sends every metric to `recorder` too (metrics-exporter-prometheus's
    /// recorder, an OpenTelemetry bridge), besides the hardening's own
    /// collector. Without it, stacks record into the collector only,
    /// whether or not a global recorder is installed.
    pub fn metrics_recorder(
        mut self,
        recorder: impl metrics::Recorder + Send + Sync + 'static,
    ) -> Self {
        self.recorder = Some(Arc::new(recorder));
        self
    }

    /// Validates the configuration and the registry, makes the collector
    /// and the pools. Needs no runtime.
    pub fn build(self) -> Result<SystemHardening, ConfigError> {
        let config = self.config;
        config.validate()?;
        let events = EventSink::new(EVENT_CAPACITY);
        let (collector, ticker) = MetricsCollector::builder()
            .retention(config.metrics_retention)
            .resolution(config.metrics_resolution)
            .max_series(config.max_series())
            .build_with_ticker()?;
        let recorder: Arc<dyn metrics::Recorder + Send + Sync> = match self.recorder {
            Some(other) => Arc::new(Fanout {
                collector: collector.clone(),
                other,
            }),
            None => Arc::new(collector.clone()),
        };

        let mut managed: BTreeMap<Arc<str>, Arc<dyn ManagedService>> = BTreeMap::new();
        for (name, service) in self.services {
            crate::config::check_service_name("service", &name)?;
            if managed.insert(name.clone(), service).is_some() {
                return Err(ConfigError::invalid(
                    "service",
                    format_args!("{name:?}"),
                    "each service registered once",
                ));
            }
        }
        // A recoverable service is rebuilt through its `ManagedService`:
        // a name that matches none (a typo, a service registered under
        // another name) would leave recovery silently off.
        for (index, name) in config.recoverable_services.iter().enumerate() {
            if !managed.contains_key(name.as_str()) {
                let registered: Vec<&str> = managed.keys().map(|name| &**name).collect();
                return Err(ConfigError::invalid(
                    format!("recoverable_services[{index}]"),
                    format_args!("{name:?}"),
                    format!(
                        "the name of a service registered with `.service(name, ..)` (registered: {})",
                        if registered.is_empty() {
                            "none".to_owned()
                        } else {
                            registered.join(", ")
                        }
                    ),
                ));
            }
        }
        let mut names: Vec<Arc<str>> = managed.keys().cloned().collect();
        names.extend(config.services.keys().map(|name| Arc::from(name.as_str())));
        names.extend(config.upstreams.keys().map(|name| Arc::from(name.as_str())));
        names.sort();
        names.dedup();
        let services: BTreeMap<Arc<str>, ServiceEntry> = names
            .into_iter()
            .map(|name| {
                let mut section = config.service(&name);
                // Admission is resource management: off with it.
                section.limit.enabled &= config.enable_resource_management;
                let entry = ServiceEntry {
                    managed: managed.get(&name).cloned(),
                    critical: section.criticality >= Priority::CRITICAL,
                    recoverable: config.recoverable_services.iter().any(|r| **r == *name),
                    config: section,
                    stack: OnceLock::new(),
                    steering: Arc::default(),
                    upstream: config.upstreams.get(&*name).cloned(),
                    endpoints: OnceLock::new(),
                    name: name.clone(),
                };
                (name, entry)
            })
            .collect();

        let mut pools = BTreeMap::new();
        for pool in self.pools {
            let name: Arc<str> = Arc::from(pool.name());
            if pools.insert(name.clone(), pool).is_some() {
                return Err(ConfigError::invalid(
                    "pool",
                    format_args!("{name:?}"),
                    "each pool given once",
                ));
            }
        }
        let mut memory_pool_made = false;
        if config.enable_resource_management && !pools.contains_key(MEMORY_POOL) {
            let mut readings = SysinfoReadings::new();
            let bytes = config.max_resource_memory.unwrap_or_else(|| {
                let memory = readings.memory();
                memory.cgroup_limit.unwrap_or(memory.system_total)
            });
            if bytes > 0 {
                let pool = ResourcePool::builder(MEMORY_POOL)
                    .capacity(bytes)
                    .events(events.clone())
                    .build()?;
                pools.insert(Arc::from(MEMORY_POOL), pool);
                memory_pool_made = true;
            }
        }

        let (shutdown, _) = watch::channel(false);
        let (stopped, _) = watch::channel(false);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let starting = HealthStatus::starting(
            services
                .values()
                .map(|entry: &ServiceEntry| (entry.name.clone(), entry.critical)),
        );
        let shared = Arc::new(Shared {
            health: ArcSwap::from_pointee(starting),
            performance: arc_swap::ArcSwapOption::empty(),
            services,
            pools,
            memory_pool_made,
            collector,
            recorder,
            events,
            shutdown,
            stopped,
            monitor_started: AtomicBool::new(false),
            initialized: AtomicBool::new(false),
            monitor_died: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            steps: Mutex::new(None),
            task: Mutex::new(None),
            commands,
            shedding: AtomicU8::new(0),
            recent_events: Mutex::new(std::collections::VecDeque::new()),
            config,
        });
        // The recovery figures of every registered service exist from the
        // start (at zero), so a dashboard or an alert finds them before the
        // first recovery.
        metrics::with_local_recorder(&*shared.recorder, || {
            // Help text and units for the application's own exporter too.
            crate::metrics::describe_all();
            // Figures set on change only exist from the start, at their
            // resting value, so alert rules find them.
            metrics::gauge!(tower_hardening_core::names::MEMORY_SHEDDING_LEVEL).set(0.0);
            metrics::gauge!(tower_hardening_core::names::MONITOR_ALIVE).set(0.0);
            metrics::counter!(tower_hardening_core::names::METRICS_DROPPED_SERIES_TOTAL)
                .absolute(0);
            for entry in shared.services.values() {
                metrics::gauge!(
                    tower_hardening_core::names::SERVICE_CRITICAL,
                    tower_hardening_core::names::LABEL_SERVICE => entry.name.clone()
                )
                .set(if entry.critical { 1.0 } else { 0.0 });
            }
            for entry in shared.services.values().filter(|e| e.managed.is_some()) {
                metrics::counter!(
                    tower_hardening_core::names::RECOVERY_GAVE_UP_TOTAL,
                    tower_hardening_core::names::LABEL_SERVICE => entry.name.clone()
                )
                .absolute(0);
                for result in ["success", "failure"] {
                    metrics::counter!(
                        tower_hardening_core::names::RECOVERY_ATTEMPTS_TOTAL,
                        tower_hardening_core::names::LABEL_SERVICE => entry.name.clone(),
                        tower_hardening_core::names::LABEL_RESULT => result
                    )
                    .absolute(0);
                }
            }
        });
        let readings = self
            .readings
            .unwrap_or_else(|| Box::new(SysinfoReadings::new()));
        let monitor = Monitor::new(shared.clone(), readings, commands_rx, Box::pin(ticker));
        Ok(SystemHardening { shared, monitor })
    }
}

/// The shared parts of `service`'s stacks, made on first use.
pub(crate) fn parts(shared: &Arc<Shared>, service: &str) -> Result<Arc<StackParts>, BoxError> {
    let entry = shared
        .services
        .get(service)
        .ok_or_else(|| UnknownName::Service(service.to_owned()))?;
    if let Some(parts) = entry.stack.get() {
        return Ok(parts.clone());
    }
    let built = metrics::with_local_recorder(&*shared.recorder, || {
        StackParts::build(&entry.name, &entry.config, &shared.events)
    })?;
    let parts = entry.stack.get_or_init(|| Arc::new(built)).clone();
    // Read after the parts are visible: the monitor applies a later change
    // itself, and this one it may have missed.
    if let Some(priority) = shared.shedding_below() {
        parts.pool.shed_below(priority);
    }
    if shared.closed.load(Ordering::Acquire) {
        parts.pool.shutdown();
    }
    let _ = shared.commands.send(Command::StackBuilt);
    Ok(parts)
}

/// Sends every metric to two recorders: the hardening's collector and the
/// application's own. (metrics-util's `Fanout` holds recorders that need
/// not be `Send`, and the hardening's state is shared across threads.)
struct Fanout {
    collector: MetricsCollector,
    other: Arc<dyn metrics::Recorder + Send + Sync>,
}

struct Both<T>(T, T);

impl metrics::CounterFn for Both<metrics::Counter> {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl metrics::GaugeFn for Both<metrics::Gauge> {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

impl metrics::HistogramFn for Both<metrics::Histogram> {
    fn record(&self, value: f64) {
        self.0.record(value);
        self.1.record(value);
    }
}

impl metrics::Recorder for Fanout {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.collector
            .describe_counter(key.clone(), unit, description.clone());
        self.other.describe_counter(key, unit, description);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.collector
            .describe_gauge(key.clone(), unit, description.clone());
        self.other.describe_gauge(key, unit, description);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.collector
            .describe_histogram(key.clone(), unit, description.clone());
        self.other.describe_histogram(key, unit, description);
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(Both(
            self.collector.register_counter(key, metadata),
            self.other.register_counter(key, metadata),
        )))
    }

    fn register_gauge(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(Both(
            self.collector.register_gauge(key, metadata),
            self.other.register_gauge(key, metadata),
        )))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(Arc::new(Both(
            self.collector.register_histogram(key, metadata),
            self.other.register_histogram(key, metadata),
        )))
    }
}
