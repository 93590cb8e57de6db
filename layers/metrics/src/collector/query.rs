use std::time::Duration;

use std::collections::HashMap;

use super::recorder::MetricsCollector;
use super::series::{Folded, Series, SeriesKind, Sketch};

/// One interval of a [`Query::history`]: the samples of every matching
/// series in it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HistoryPoint {
    /// How many intervals before the current one (0: the interval now
    /// filling).
    pub intervals_ago: u64,
    /// Samples in the interval (for a gauge: one per series, its value
    /// when the interval began).
    pub count: u64,
    /// Their sum (for a counter, its increase in the interval).
    pub sum: f64,
    /// The smallest sample.
    pub min: Option<f64>,
    /// The largest sample.
    pub max: Option<f64>,
    /// A histogram's median in the interval, from the finest sketch that
    /// holds it: the interval's own for the last 6 intervals, and for
    /// older ones the group of 6, 36, ... intervals it has been merged
    /// into (clamped to the interval's exact minimum and maximum).
    pub p50: Option<f64>,
    /// A histogram's 99th percentile, as `p50`.
    pub p99: Option<f64>,
}

impl HistoryPoint {
    /// The mean of the interval's samples (a gauge's value).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// A question about recent samples of one metric: filtered by labels,
/// over a window ending now, combined across every matching series.
///
/// What a sample is depends on the metric: an increment for a counter,
/// the new value for a gauge, an observation for a histogram.
///
/// ```
/// use std::time::Duration;
/// use tower_hardening_metrics::MetricsCollector;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let collector = MetricsCollector::builder()
///     .retention(Duration::from_secs(3600))
///     .resolution(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// metrics::with_local_recorder(&collector, || {
///     let latency = metrics::histogram!("hardening_request_duration_seconds", "service" => "audio-processing");
///     for ms in 1..=100 {
///         latency.record(f64::from(ms) / 1000.0);
///     }
/// });
/// let q = collector
///     .query("hardening_request_duration_seconds")
///     .label("service", "audio-processing")
///     .window(Duration::from_secs(60));
/// assert_eq!(q.count(), 100);
/// assert!((q.quantile(0.99).unwrap() - 0.099).abs() < 0.001);
/// assert_eq!(q.max(), Some(0.1));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Query<'a> {
    collector: &'a MetricsCollector,
    name: String,
    labels: Vec<(String, String)>,
    /// Labels that must have one of several values.
    any_of: Vec<(String, Vec<String>)>,
    window: Option<Duration>,
}

impl<'a> Query<'a> {
    pub(crate) fn new(collector: &'a MetricsCollector, name: &str) -> Self {
        Query {
            collector,
            name: name.to_owned(),
            labels: Vec::new(),
            any_of: Vec::new(),
            window: None,
        }
    }

    /// Only series with this label value (several calls: all must match).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Only series whose label `key` has one of `values` (the calls that
    /// reached a service: `outcome` success or failure, say).
    ///
    /// ```
    /// # use tower_hardening_metrics::MetricsCollector;
    /// # let (collector, _ticker) = MetricsCollector::builder().build_with_ticker().unwrap();
    /// metrics::with_local_recorder(&collector, || {
    ///     metrics::counter!("requests_total", "outcome" => "success").increment(3);
    ///     metrics::counter!("requests_total", "outcome" => "failure").increment(1);
    ///     metrics::counter!("requests_total", "outcome" => "rejected").increment(5);
    /// });
    /// let served = collector.query("requests_total").label_in("outcome", &["success", "failure"]);
    /// assert_eq!(served.sum(), 4.0);
    /// ```
    pub fn label_in(mut self, key: &str, values: &[&str]) -> Self {
        self.any_of.push((
            key.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        ));
        self
    }

    /// Only samples of the last `window` (default, and at most: the
    /// retention), in whole buckets: the bucket now filling and enough
    /// before it to cover the window.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    fn epochs(&self) -> (u64, u64) {
        let inner = &self.collector.inner;
        let now = inner.epoch.now();
        let buckets = match self.window {
            Some(window) => {
                let n = window.as_nanos().div_ceil(inner.resolution.as_nanos());
                (n as usize).clamp(1, inner.buckets)
            }
            None => inner.buckets,
        };
        (now.saturating_sub(buckets as u64 - 1), now)
    }

    fn fold(&self) -> (Folded, Option<SeriesKind>) {
        let (from, to) = self.epochs();
        let series = self
            .collector
            .inner
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut folded = Folded::default();
        let mut kind = None;
        for (key, s) in series.iter() {
            if key.name() != self.name || !self.matches(key) {
                continue;
            }
            kind = Some(s.kind);
            let part = s.fold(from, to);
            folded.count += part.count;
            folded.sum += part.sum;
            folded.min = match (folded.min, part.min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            folded.max = match (folded.max, part.max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let Some(sketch) = part.sketch {
                match &mut folded.sketch {
                    None => folded.sketch = Some(sketch),
                    Some(merged) => merged.merge(&sketch),
                }
            }
        }
        (folded, kind)
    }

    /// The window interval by interval, oldest first, the interval now
    /// filling last: what a chart over time draws. Exact counts, sums,
    /// minimums and maximums; quantiles as [`HistoryPoint::p99`] says.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_hardening_metrics::MetricsCollector;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let collector = MetricsCollector::builder()
    ///     .resolution(Duration::from_secs(1))
    ///     .build()
    ///     .unwrap();
    /// let done = metrics::with_local_recorder(&collector, || metrics::counter!("hardening_requests_total"));
    /// done.increment(3);
    /// tokio::time::sleep(Duration::from_millis(2_500)).await;
    /// done.increment(5);
    /// let history = collector
    ///     .query("hardening_requests_total")
    ///     .window(Duration::from_secs(3))
    ///     .history();
    /// let sums: Vec<f64> = history.iter().map(|p| p.sum).collect();
    /// assert_eq!(sums, [3.0, 0.0, 5.0]);
    /// assert_eq!(history[2].intervals_ago, 0);
    /// assert_eq!(history[1].max, None);
    /// # }
    /// ```
    pub fn history(&self) -> Vec<HistoryPoint> {
        let (from, to) = self.epochs();
        let mut slots = vec![Folded::default(); (to - from + 1) as usize];
        let mut sketches: HashMap<(u32, u64), Sketch> = HashMap::new();
        let mut histogram = false;
        {
            let series = self
                .collector
                .inner
                .series
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for (key, s) in series.iter() {
                if key.name() != self.name || !self.matches(key) {
                    continue;
                }
                histogram |= s.kind == SeriesKind::Histogram;
                s.history_into(from, to, &mut slots, &mut sketches);
            }
        }
        let epoch = &self.collector.inner.epoch;
        let mut quantiles: HashMap<(u32, u64), (Option<f64>, Option<f64>)> = HashMap::new();
        slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| {
                let at = from + index as u64;
                let (p50, p99) = if histogram && slot.count > 0 {
                    let key = Series::sketch_key(epoch, at);
                    let (p50, p99) = *quantiles.entry(key).or_insert_with(|| {
                        sketches
                            .get(&key)
                            .map_or((None, None), |s| (s.quantile(0.5), s.quantile(0.99)))
                    });
                    let clamp = |q: Option<f64>| match (q, slot.min, slot.max) {
                        (Some(q), Some(min), Some(max)) if min <= max => Some(q.clamp(min, max)),
                        (q, _, _) => q,
                    };
                    (clamp(p50), clamp(p99))
                } else {
                    (None, None)
                };
                HistoryPoint {
                    intervals_ago: to - at,
                    count: slot.count,
                    sum: slot.sum,
                    min: slot.min,
                    max: slot.max,
                    p50,
                    p99,
                }
            })
            .collect()
    }

    fn matches(&self, key: &metrics::Key) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == k && l.value() == v))
            && self.any_of.iter().all(|(k, values)| {
                key.labels()
                    .any(|l| l.key() == k && values.iter().any(|v| l.value() == v))
            })
    }

    /// Samples in the window.
    pub fn count(&self) -> u64 {
        self.fold().0.count
    }

    /// Sum of the samples in the window (for a counter, its increase).
    pub fn sum(&self) -> f64 {
        self.fold().0.sum
    }

    /// `sum()` per second of window (for a counter, its rate).
    pub fn rate_per_sec(&self) -> f64 {
        let (from, to) = self.epochs();
        let seconds = self.collector.inner.resolution.as_secs_f64() * (to - from + 1) as f64;
        self.sum() / seconds
    }

    /// Mean of the samples in the window; `None` with no sample.
    pub fn mean(&self) -> Option<f64> {
        let folded = self.fold().0;
        (folded.count > 0).then(|| folded.sum / folded.count as f64)
    }

    /// Largest sample in the window.
    pub fn max(&self) -> Option<f64> {
        self.fold().0.max
    }

    /// Smallest sample in the window.
    pub fn min(&self) -> Option<f64> {
        self.fold().0.min
    }

    /// The `q` quantile (0 to 1) of a histogram's samples in the window,
    /// from merged logarithmic sketches: within 1% of the true value, and
    /// never outside the window's exact minimum and maximum; `None` for
    /// other metrics or with no sample. A window reaching back more than
    /// 6 intervals rounds its far edge out to the sketch tier holding it
    /// (by 6, 36, 216 ... intervals). The 1% holds while the largest
    /// sample is less than about 2.5e4 times the smallest (512 bins):
    /// beyond, the smallest values are merged into one bin, so upper
    /// quantiles stay within 1% and the lowest ones do not (p50 of 20 us
    /// beside a 30 s timeout reads about 1 ms).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match self.fold() {
            (folded, Some(SeriesKind::Histogram)) => folded.quantile(q),
            _ => None,
        }
    }
}
