//! Prometheus text exposition (format 0.0.4) of a collector's series.

use std::collections::BTreeMap;
use std::fmt::Write;

use metrics::Key;

use super::recorder::MetricsCollector;
use super::series::SeriesKind;

/// The quantiles a histogram is exported with, over the retention period.
pub const EXPORTED_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

impl MetricsCollector {
    /// Renders every series in the Prometheus text format: counters as
    /// their total, gauges as their value, histograms as summaries (the
    /// [`EXPORTED_QUANTILES`] over the retention period, and `_sum` /
    /// `_count` of every sample ever recorded).
    pub fn render_prometheus(&self) -> String {
        let (from, to) = {
            let now = self.inner.epoch.now();
            (now.saturating_sub(self.inner.buckets as u64 - 1), now)
        };
        let series = self.inner.series.read().unwrap_or_else(|p| p.into_inner());
        let descriptions = self
            .inner
            .descriptions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut by_name: BTreeMap<&str, Vec<(&Key, _)>> = BTreeMap::new();
        for (key, s) in series.iter() {
            by_name.entry(key.name()).or_default().push((key, s));
        }
        let mut out = String::new();
        for (name, mut entries) in by_name {
            entries.sort_by_key(|(key, _)| labels(key, None));
            let kind = entries[0].1.kind;
            if let Some((_, description)) = descriptions.get(name) {
                let help = description.replace('\\', "\\\\").replace('\n', "\\n");
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let type_name = match kind {
                SeriesKind::Counter => "counter",
                SeriesKind::Gauge => "gauge",
                SeriesKind::Histogram => "summary",
            };
            let _ = writeln!(out, "# TYPE {name} {type_name}");
            for (key, s) in entries {
                match kind {
                    SeriesKind::Counter | SeriesKind::Gauge => {
                        let _ = writeln!(out, "{name}{} {}", labels(key, None), number(s.value()));
                    }
                    SeriesKind::Histogram => {
                        let folded = s.fold(from, to);
                        if folded.sketch.is_some() {
                            for q in EXPORTED_QUANTILES {
                                if let Some(value) = folded.quantile(q) {
                                    let _ = writeln!(
                                        out,
                                        "{name}{} {}",
                                        labels(key, Some(q)),
                                        number(value)
                                    );
                                }
                            }
                        }
                        let (count, sum) = s.totals();
                        let _ = writeln!(out, "{name}_sum{} {}", labels(key, None), number(sum));
                        let _ = writeln!(out, "{name}_count{} {count}", labels(key, None));
                    }
                }
            }
        }
        out
    }
}

fn labels(key: &Key, quantile: Option<f64>) -> String {
    let mut pairs: Vec<String> = key
        .labels()
        .map(|l| format!("{}=\"{}\"", l.key(), escape(l.value())))
        .collect();
    if let Some(q) = quantile {
        pairs.push(format!("quantile=\"{q}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}
