//! One stored series: a ring of time buckets, each holding the samples
//! recorded in one `resolution`-wide interval, folded as they arrive
//! (count, sum, min, max, last, and for histograms a DDSketch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics_util::storage::Summary;

/// The sketch's relative error: quantiles are within 0.5% of the true
/// value (DDSketch's guarantee, while fewer than `SKETCH_MAX_BINS` bins
/// are needed).
pub(crate) const SKETCH_ALPHA: f64 = 0.005;
/// The most bins one bucket's sketch keeps (8 bytes each); with alpha
/// 0.005 that covers a range of about 2^14 between the smallest and the
/// largest sample before the smallest ones are merged.
pub(crate) const SKETCH_MAX_BINS: u32 = 1_024;
/// The smallest value the sketch tells apart from zero.
const SKETCH_MIN_VALUE: f64 = 1.0e-9;

/// Bytes one time bucket can take at most: its fixed fields plus a full
/// sketch.
pub(crate) const BUCKET_MAX_BYTES: usize =
    std::mem::size_of::<Bucket>() + SKETCH_MAX_BINS as usize * 8 + 256;

/// What kind of metric a series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A counter: each sample is an increment.
    Counter,
    /// A gauge: its value is sampled once per resolution interval (so
    /// changing it costs one atomic operation), and each sample is the
    /// value at the start of an interval.
    Gauge,
    /// A histogram: each sample is one observation.
    Histogram,
}

/// The epoch (interval number) now, shared by the collector and every
/// series; advanced by the collector's ticker. Stored with its ring slot
/// (`epoch % buckets`, at most 2^20) in one word, so recording a sample
/// needs no division.
#[derive(Debug)]
pub(crate) struct Epoch {
    packed: AtomicU64,
    buckets: u64,
}

const SLOT_BITS: u32 = 20;

impl Epoch {
    pub(crate) fn new(buckets: usize) -> Self {
        Epoch {
            packed: AtomicU64::new(0),
            buckets: buckets as u64,
        }
    }

    /// The current epoch and its slot in a ring of `buckets`.
    fn now_with_slot(&self) -> (u64, usize) {
        let packed = self.packed.load(Ordering::Acquire);
        (
            packed >> SLOT_BITS,
            (packed & ((1 << SLOT_BITS) - 1)) as usize,
        )
    }

    pub(crate) fn now(&self) -> u64 {
        self.now_with_slot().0
    }

    pub(crate) fn set(&self, epoch: u64) {
        let packed = (epoch << SLOT_BITS) | (epoch % self.buckets);
        self.packed.fetch_max(packed, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Bucket {
    epoch: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    sketch: Option<Summary>,
}

impl Bucket {
    fn empty(epoch: u64) -> Self {
        Bucket {
            epoch,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: 0.0,
            sketch: None,
        }
    }
}

#[derive(Debug)]
struct Ring {
    buckets: Vec<Bucket>,
    /// Counter: the running total. Gauge: the current value.
    value: f64,
    /// Every sample ever recorded (for Prometheus `_count` / `_sum`).
    total_count: u64,
    total_sum: f64,
}

/// A series' samples over the retention period.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) kind: SeriesKind,
    /// A gauge's current value (f64 bits), changed without the lock.
    gauge: AtomicU64,
    ring: Mutex<Ring>,
    epoch: Arc<Epoch>,
}

/// The folded samples of some buckets of a series.
#[derive(Debug, Clone, Default)]
pub(crate) struct Folded {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) last: Option<(u64, f64)>,
    pub(crate) sketch: Option<Summary>,
}

impl Series {
    pub(crate) fn new(kind: SeriesKind, epoch: Arc<Epoch>) -> Self {
        Series {
            kind,
            gauge: AtomicU64::new(0f64.to_bits()),
            ring: Mutex::new(Ring {
                buckets: Vec::new(),
                value: 0.0,
                total_count: 0,
                total_sum: 0.0,
            }),
            epoch,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds to a counter.
    pub(crate) fn increment(&self, delta: f64) {
        let mut ring = self.lock();
        ring.value += delta;
        self.record(&mut ring, delta);
    }

    /// Sets a counter's absolute value (`Counter::absolute`).
    pub(crate) fn absolute(&self, value: f64) {
        let mut ring = self.lock();
        let delta = (value - ring.value).max(0.0);
        ring.value = ring.value.max(value);
        self.record(&mut ring, delta);
    }

    /// Changes a gauge by `delta`, or sets it when `set` is given.
    #[inline]
    pub(crate) fn gauge(&self, delta: f64, set: Option<f64>) {
        match set {
            Some(value) => self.gauge.store(value.to_bits(), Ordering::Release),
            None => {
                // `fetch_update` only fails when the closure returns None.
                let _ = self
                    .gauge
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                        Some((f64::from_bits(bits) + delta).to_bits())
                    });
            }
        }
    }

    /// Records a gauge's current value as a sample of the current interval
    /// (the collector's ticker calls this once per interval).
    pub(crate) fn sample_gauge(&self) {
        if self.kind == SeriesKind::Gauge {
            let value = f64::from_bits(self.gauge.load(Ordering::Acquire));
            let mut ring = self.lock();
            ring.value = value;
            self.record(&mut ring, value);
        }
    }

    /// Records one histogram observation.
    pub(crate) fn observe(&self, value: f64) {
        if value.is_finite() {
            let mut ring = self.lock();
            self.record(&mut ring, value);
        }
    }

    #[inline]
    fn record(&self, ring: &mut Ring, value: f64) {
        let (epoch, slot) = self.epoch.now_with_slot();
        ring.total_count += 1;
        ring.total_sum += value;
        if ring.buckets.len() <= slot {
            // Buckets are made as time reaches them, so a quiet series
            // stays small.
            let start = ring.buckets.len() as u64;
            ring.buckets
                .extend((start..=slot as u64).map(|_| Bucket::empty(u64::MAX)));
        }
        let bucket = &mut ring.buckets[slot];
        if bucket.epoch != epoch {
            // The interval this slot held has left the retention period.
            *bucket = Bucket::empty(epoch);
        }
        bucket.count += 1;
        bucket.sum += value;
        bucket.min = bucket.min.min(value);
        bucket.max = bucket.max.max(value);
        bucket.last = value;
        if self.kind == SeriesKind::Histogram {
            bucket.sketch.get_or_insert_with(new_sketch).add(value);
        }
    }

    /// Folds the buckets of epochs `from..=to`.
    pub(crate) fn fold(&self, from: u64, to: u64) -> Folded {
        let ring = self.lock();
        let mut folded = Folded::default();
        for bucket in ring
            .buckets
            .iter()
            .filter(|b| b.epoch >= from && b.epoch <= to)
        {
            if bucket.count == 0 {
                continue;
            }
            folded.count += bucket.count;
            folded.sum += bucket.sum;
            folded.min = Some(folded.min.map_or(bucket.min, |m| m.min(bucket.min)));
            folded.max = Some(folded.max.map_or(bucket.max, |m| m.max(bucket.max)));
            if folded.last.is_none_or(|(epoch, _)| bucket.epoch > epoch) {
                folded.last = Some((bucket.epoch, bucket.last));
            }
            if let Some(sketch) = &bucket.sketch {
                match &mut folded.sketch {
                    None => folded.sketch = Some(sketch.clone()),
                    Some(merged) => {
                        // Every sketch here is made by `new_sketch`, so
                        // they always merge.
                        let _ = merged.merge(sketch);
                    }
                }
            }
        }
        folded
    }

    /// The counter's total or the gauge's current value.
    pub(crate) fn value(&self) -> f64 {
        match self.kind {
            SeriesKind::Gauge => f64::from_bits(self.gauge.load(Ordering::Acquire)),
            _ => self.lock().value,
        }
    }

    /// Every sample ever recorded: (count, sum).
    pub(crate) fn totals(&self) -> (u64, f64) {
        let ring = self.lock();
        (ring.total_count, ring.total_sum)
    }

    /// Bytes this series takes now (its own accounting).
    pub(crate) fn memory_bytes(&self) -> usize {
        let ring = self.lock();
        std::mem::size_of::<Self>()
            + ring.buckets.capacity() * std::mem::size_of::<Bucket>()
            + ring
                .buckets
                .iter()
                .filter_map(|b| b.sketch.as_ref())
                .map(Summary::estimated_size)
                .sum::<usize>()
    }
}

fn new_sketch() -> Summary {
    Summary::new(SKETCH_ALPHA, SKETCH_MAX_BINS, SKETCH_MIN_VALUE)
}
