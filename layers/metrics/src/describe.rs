//! Help text and units for every metric the library emits.

use metrics::Unit;
use tower_hardening_core::names::{self, MetricKind};

/// Describes every metric in [`names::ALL`] (its unit and help text) to
/// the recorder in force: call it once after installing a recorder, or
/// inside `metrics::with_local_recorder`. Exporters then print `# HELP`
/// (and the unit where their format has one). A [`MetricsCollector`]
/// knows these descriptions from the start without it.
///
/// [`MetricsCollector`]: crate::MetricsCollector
///
/// ```
/// let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
/// let scrape = recorder.handle();
/// metrics::with_local_recorder(&recorder, || {
///     tower_hardening_metrics::describe_all();
///     metrics::counter!("hardening_retries_total").increment(1);
/// });
/// assert!(scrape.render().contains("# HELP hardening_retries_total Retries made"));
/// ```
pub fn describe_all() {
    for d in names::DESCRIPTIONS {
        let unit = Unit::from_string(d.unit);
        match (d.kind, unit) {
            (MetricKind::Counter, Some(unit)) => metrics::describe_counter!(d.name, unit, d.help),
            (MetricKind::Counter, None) => metrics::describe_counter!(d.name, d.help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(d.name, unit, d.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(d.name, d.help),
            (MetricKind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(d.name, unit, d.help);
            }
            (MetricKind::Histogram, None) => metrics::describe_histogram!(d.name, d.help),
        }
    }
}
