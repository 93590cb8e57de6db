use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SetRecorderError, SharedString, Unit,
};
use tower_hardening_core::ConfigError;

use super::query::Query;
use super::series::{Epoch, Series, SeriesKind};

/// Builds a [`MetricsCollector`].
///
/// | setting | default |
/// | --- | --- |
/// | `retention` | 1 hour |
/// | `resolution` | 10 s (the width of one stored bucket) |
/// | `max_series` | 1,000 |
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CollectorBuilder {
    retention: Duration,
    resolution: Duration,
    max_series: usize,
}

impl Default for CollectorBuilder {
    fn default() -> Self {
        CollectorBuilder {
            retention: Duration::from_secs(3600),
            resolution: Duration::from_secs(10),
            max_series: 1_000,
        }
    }
}

impl CollectorBuilder {
    /// How long samples are kept (at least one `resolution`).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The width of one stored bucket: queries see time in steps of this
    /// (at least 1 ms).
    pub fn resolution(mut self, resolution: Duration) -> Self {
        self.resolution = resolution;
        self
    }

    /// The most series kept; samples for series beyond it are counted in
    /// [`MetricsCollector::dropped_series`] and dropped.
    pub fn max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series;
        self
    }

    /// Checks every setting without building anything: what
    /// [`build`](Self::build) refuses, this refuses (the facade's
    /// configuration checks `metrics_retention` and `metrics_resolution`
    /// with it).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.buckets().map(drop)
    }

    /// The number of buckets the settings need, or why they are refused.
    fn buckets(&self) -> Result<usize, ConfigError> {
        let invalid = |field, value: &dyn std::fmt::Debug, allowed| {
            ConfigError::new("metrics collector", field, format!("{value:?}"), allowed)
        };
        if self.resolution < Duration::from_millis(1) {
            return Err(invalid("resolution", &self.resolution, "at least 1ms"));
        }
        if self.retention < self.resolution {
            return Err(invalid(
                "retention",
                &self.retention,
                "at least one resolution",
            ));
        }
        let buckets = self
            .retention
            .as_nanos()
            .div_ceil(self.resolution.as_nanos());
        if buckets > 100_000 {
            return Err(invalid(
                "retention",
                &self.retention,
                "at most 100,000 resolutions (raise the resolution)",
            ));
        }
        if self.max_series == 0 {
            return Err(invalid("max_series", &self.max_series, "at least 1"));
        }
        // `buckets` is at most 100,000: the cast cannot truncate.
        Ok(buckets as usize)
    }

    /// Checks the settings, builds the collector and spawns its ticker (the
    /// task that moves its clock from one bucket to the next) on the
    /// current tokio runtime.
    pub fn build(self) -> Result<MetricsCollector, ConfigError> {
        let (collector, ticker) = self.build_with_ticker()?;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(ticker);
                Ok(collector)
            }
            Err(_) => Err(ConfigError::new(
                "metrics collector",
                "build",
                "outside a tokio runtime",
                "a tokio runtime to run the ticker on, or build_with_ticker()",
            )),
        }
    }

    /// Checks the settings and returns the collector and its ticker, a
    /// future to run on the runtime of your choice. It ends when every
    /// clone of the collector is dropped.
    pub fn build_with_ticker(
        self,
    ) -> Result<(MetricsCollector, impl Future<Output = ()> + Send + 'static), ConfigError> {
        let buckets = self.buckets()?;
        let inner = Arc::new(Inner {
            epoch: Arc::new(Epoch::new(buckets)),
            resolution: self.resolution,
            buckets,
            max_series: self.max_series,
            series: RwLock::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            // Every name the library emits is described from the start,
            // whichever recorder was in force when `describe_all` ran.
            descriptions: RwLock::new(
                tower_hardening_core::names::DESCRIPTIONS
                    .iter()
                    .map(|d| {
                        let help = SharedString::const_str(d.help);
                        (d.name.to_owned(), (Unit::from_string(d.unit), help))
                    })
                    .collect(),
            ),
        });
        let weak = Arc::downgrade(&inner);
        let resolution = self.resolution;
        let ticker = async move {
            let start = tokio::time::Instant::now();
            let mut interval = tokio::time::interval(resolution);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let elapsed = start.elapsed().as_nanos() / resolution.as_nanos();
                inner.epoch.set(u64::try_from(elapsed).unwrap_or(u64::MAX));
                let series = inner.series.read().unwrap_or_else(|p| p.into_inner());
                for s in series.values() {
                    s.tick();
                }
            }
        };
        Ok((MetricsCollector { inner }, ticker))
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) resolution: Duration,
    pub(crate) buckets: usize,
    max_series: usize,
    pub(crate) series: RwLock<HashMap<Key, Arc<Series>>>,
    dropped: AtomicU64,
    pub(crate) descriptions: RwLock<HashMap<String, (Option<Unit>, SharedString)>>,
}

/// An in-process `metrics::Recorder` that keeps recent history: a bounded
/// ring of time buckets per series, window queries and aggregations, and
/// Prometheus text export.
///
/// Cheap to clone; every clone is the same store.
#[derive(Debug, Clone)]
pub struct MetricsCollector {
    pub(crate) inner: Arc<Inner>,
}

impl MetricsCollector {
    /// A builder with the defaults listed on [`CollectorBuilder`].
    pub fn builder() -> CollectorBuilder {
        CollectorBuilder::default()
    }

    /// Installs this collector as the global `metrics` recorder.
    pub fn install(&self) -> Result<(), SetRecorderError<MetricsCollector>> {
        metrics::set_global_recorder(self.clone())
    }

    /// A recorder that sends everything both to this collector and to
    /// `other` (for example metrics-exporter-prometheus's recorder), to
    /// install in its place.
    pub fn fanout_with<R>(&self, other: R) -> metrics_util::layers::Fanout
    where
        R: Recorder + Sync + 'static,
    {
        metrics_util::layers::FanoutBuilder::default()
            .add_recorder(self.clone())
            .add_recorder(other)
            .build()
    }

    /// A query over the series called `name`.
    pub fn query(&self, name: &str) -> Query<'_> {
        Query::new(self, name)
    }

    /// Every series kept: its name and labels.
    pub fn series(&self) -> Vec<Key> {
        let series = self.inner.series.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<Key> = series.keys().cloned().collect();
        keys.sort_by(|a, b| a.name().cmp(b.name()));
        keys
    }

    /// Samples dropped because their series would have exceeded
    /// `max_series` (each registration of such a series counts once).
    pub fn dropped_series(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Bytes the collector's series take now, by its own accounting.
    pub fn memory_bytes(&self) -> usize {
        let series = self.inner.series.read().unwrap_or_else(|p| p.into_inner());
        series
            .iter()
            .map(|(key, s)| s.memory_bytes() + std::mem::size_of::<Key>() + key.name().len())
            .sum()
    }

    /// The most bytes the series can take with these settings (excluding
    /// label text): `max_series` times one series' worst case (its
    /// stripes, one bucket per interval, and every sketch tier full).
    /// Memory stays under it however long the process runs and however
    /// many samples arrive. With the defaults it is under 64 MiB.
    pub fn memory_bound_bytes(&self) -> usize {
        let per_series =
            Series::memory_bound_bytes(&self.inner.epoch) + std::mem::size_of::<Key>() + 256;
        self.inner.max_series * per_series
    }

    fn register(&self, key: &Key, kind: SeriesKind) -> Option<Arc<Series>> {
        if let Some(series) = self
            .inner
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return (series.kind == kind).then(|| series.clone());
        }
        let mut series = self.inner.series.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = series.get(key) {
            return (existing.kind == kind).then(|| existing.clone());
        }
        if series.len() >= self.inner.max_series {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let new = Arc::new(Series::new(kind, self.inner.epoch.clone()));
        series.insert(key.clone(), new.clone());
        Some(new)
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .descriptions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.as_str().to_owned(), (unit, description));
    }
}

struct CounterHandle(Arc<Series>);

impl CounterFn for CounterHandle {
    fn increment(&self, value: u64) {
        self.0.increment(value as f64);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value as f64);
    }
}

struct GaugeHandle(Arc<Series>);

impl GaugeFn for GaugeHandle {
    fn increment(&self, value: f64) {
        self.0.gauge(value, None);
    }

    fn decrement(&self, value: f64) {
        self.0.gauge(-value, None);
    }

    fn set(&self, value: f64) {
        self.0.gauge(0.0, Some(value));
    }
}

struct HistogramHandle(Arc<Series>);

impl HistogramFn for HistogramHandle {
    fn record(&self, value: f64) {
        self.0.observe(value);
    }
}

impl Recorder for MetricsCollector {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.register(key, SeriesKind::Counter) {
            Some(series) => Counter::from_arc(Arc::new(CounterHandle(series))),
            None => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.register(key, SeriesKind::Gauge) {
            Some(series) => Gauge::from_arc(Arc::new(GaugeHandle(series))),
            None => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.register(key, SeriesKind::Histogram) {
            Some(series) => Histogram::from_arc(Arc::new(HistogramHandle(series))),
            None => Histogram::noop(),
        }
    }
}
