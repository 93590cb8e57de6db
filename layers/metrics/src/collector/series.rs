//! One stored series.
//!
//! - **Recording** touches only the calling thread's stripe: a lock no
//!   other core takes (unless threads outnumber stripes), folding the
//!   sample into the stripe's pending totals and, for a histogram, a
//!   buffer of 8 samples. The stripe is flushed into the shared ring
//!   when its interval ends, when its buffer fills, and before every
//!   read, so reads see every sample recorded before them.
//! - **The ring** keeps exact totals (count, sum, min, max) per
//!   `resolution`-wide interval for the whole retention period, and
//!   quantile sketches in tiers: one per interval for the last 6
//!   intervals, then one per 6 intervals, per 36, per 216, ... (each
//!   tier covers 6 times the span of the one before), older sketches
//!   being merged into the next tier as they age. A series thus keeps
//!   about `6 * log6(intervals)` sketches, not one per interval.
//!
//! Counts, sums, minimums and maximums over any window are exact. A
//! quantile over a window is within the sketch's 1% of the true value
//! for the samples it covers (while the largest is less than about 2.5e4
//! times the smallest; see `sketch.rs`), and the window's far edge rounds
//! outward to the tier holding it (the last minute by 10 s, the last 6
//! minutes by minute, the last 36 by 6 minutes, with the default
//! resolution).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tower_hardening_core::stripe::{CachePadded, Striped, stripes};
use tower_hardening_core::sync::lock;

use super::sketch;
pub(crate) use super::sketch::Sketch;

/// Each sketch tier spans this many times the intervals of the one
/// before it.
const TIER_FACTOR: u64 = 6;
/// Histogram samples a stripe holds before it flushes them.
const BUFFER: usize = 8;

/// What kind of metric a series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A counter: each sample is an increment.
    Counter,
    /// A gauge: its value is sampled once per resolution interval (so
    /// changing it costs one atomic operation on the thread's stripe),
    /// and each sample is the value at the start of an interval.
    Gauge,
    /// A histogram: each sample is one observation.
    Histogram,
}

/// The epoch (interval number) now, shared by the collector and every
/// series; advanced by the collector's ticker.
#[derive(Debug)]
pub(crate) struct Epoch {
    now: AtomicU64,
    /// Intervals kept.
    buckets: u64,
    /// The coarsest sketch tier: its groups never age into another.
    top: u32,
}

impl Epoch {
    pub(crate) fn new(buckets: usize) -> Self {
        let buckets = buckets.max(1) as u64;
        let mut top = 0;
        while TIER_FACTOR.saturating_pow(top + 1) < buckets {
            top += 1;
        }
        Epoch {
            now: AtomicU64::new(0),
            buckets,
            top,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, epoch: u64) {
        self.now.fetch_max(epoch, Ordering::AcqRel);
    }

    /// The oldest epoch kept when it is `now`.
    fn oldest(&self, now: u64) -> u64 {
        now.saturating_sub(self.buckets - 1)
    }

    /// Intervals one group of `tier` spans.
    fn span(tier: u32) -> u64 {
        TIER_FACTOR.saturating_pow(tier)
    }

    /// The tier holding the samples of `epoch` when it is `now`: the
    /// finest whose group of `epoch` started less than the next tier's
    /// span ago.
    fn tier_of(&self, epoch: u64, now: u64) -> u32 {
        (0..self.top)
            .find(|&tier| {
                let start = epoch - epoch % Self::span(tier);
                start.saturating_add(Self::span(tier + 1)) > now
            })
            .unwrap_or(self.top)
    }

    /// The most sketches a series keeps: `TIER_FACTOR` per tier below the
    /// top, and the top's groups that can meet the retention period.
    pub(crate) fn max_sketches(&self) -> usize {
        let lower = self.top as usize * TIER_FACTOR as usize;
        let top = self.buckets.div_ceil(Self::span(self.top)) as usize + 1;
        lower + top
    }

    pub(crate) fn buckets(&self) -> usize {
        self.buckets as usize
    }
}

/// A stripe's samples not yet in the ring, all of one epoch.
#[derive(Debug)]
struct Pending {
    epoch: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    len: usize,
    samples: [f64; BUFFER],
}

impl Pending {
    fn empty(epoch: u64) -> Self {
        Pending {
            epoch,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            len: 0,
            samples: [0.0; BUFFER],
        }
    }

    /// One sample of `value` (not kept for the sketch).
    fn one(epoch: u64, value: f64) -> Self {
        Pending {
            count: 1,
            sum: value,
            min: value,
            max: value,
            ..Pending::empty(epoch)
        }
    }
}

#[derive(Debug)]
struct Stripe {
    pending: Mutex<Pending>,
    /// This stripe's share of a gauge (f64 bits): the gauge is the base
    /// plus every stripe's share.
    gauge: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    epoch: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Bucket {
    fn empty(epoch: u64) -> Self {
        Bucket {
            epoch,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

#[derive(Debug)]
struct TierSketch {
    tier: u32,
    group: u64,
    sketch: Sketch,
}

impl TierSketch {
    /// The epochs the group spans.
    fn range(&self) -> (u64, u64) {
        let span = Epoch::span(self.tier);
        let start = self.group.saturating_mul(span);
        (start, start.saturating_add(span - 1))
    }
}

#[derive(Debug)]
struct Ring {
    buckets: Vec<Bucket>,
    sketches: Vec<TierSketch>,
    /// The epoch the sketches were last aged at.
    aged_at: u64,
    /// Counter: the running total.
    value: f64,
    /// Every sample ever recorded (for Prometheus `_count` / `_sum`).
    total_count: u64,
    total_sum: f64,
}

impl Ring {
    /// Moves sketches that have aged out of their tier into the next one,
    /// and drops those past the retention period.
    fn age(&mut self, epoch: &Epoch, now: u64) {
        if self.aged_at == now {
            return;
        }
        self.aged_at = now;
        let oldest = epoch.oldest(now);
        let mut i = 0;
        while i < self.sketches.len() {
            let entry = &self.sketches[i];
            let (start, end) = entry.range();
            if end < oldest {
                self.sketches.swap_remove(i);
            } else if entry.tier < epoch.top
                && start.saturating_add(Epoch::span(entry.tier + 1)) <= now
            {
                let mut moved = self.sketches.swap_remove(i);
                moved.tier += 1;
                moved.group = start / Epoch::span(moved.tier);
                match self
                    .sketches
                    .iter_mut()
                    .find(|s| s.tier == moved.tier && s.group == moved.group)
                {
                    Some(target) => target.sketch.merge(&moved.sketch),
                    // Looked at again when the loop reaches it: it may
                    // have to move further.
                    None => self.sketches.push(moved),
                }
            } else {
                i += 1;
            }
        }
    }

    fn sketch_for(&mut self, epoch: &Epoch, sample_epoch: u64, now: u64) -> &mut Sketch {
        let tier = epoch.tier_of(sample_epoch, now);
        let group = sample_epoch / Epoch::span(tier);
        let index = match self
            .sketches
            .iter()
            .position(|s| s.tier == tier && s.group == group)
        {
            Some(index) => index,
            None => {
                self.sketches.push(TierSketch {
                    tier,
                    group,
                    sketch: Sketch::new(),
                });
                self.sketches.len() - 1
            }
        };
        &mut self.sketches[index].sketch
    }
}

/// A series' samples over the retention period.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) kind: SeriesKind,
    stripes: Striped<Stripe>,
    /// A gauge's value apart from the stripes' shares (f64 bits).
    gauge_base: AtomicU64,
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
    pub(crate) sketch: Option<Sketch>,
}

impl Folded {
    /// The `q` quantile of the folded histogram samples, within the
    /// exact minimum and maximum.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let estimate = self.sketch.as_ref()?.quantile(q)?;
        match (self.min, self.max) {
            (Some(min), Some(max)) if min <= max => Some(estimate.clamp(min, max)),
            _ => Some(estimate),
        }
    }
}

impl Series {
    pub(crate) fn new(kind: SeriesKind, epoch: Arc<Epoch>) -> Self {
        Series {
            kind,
            stripes: Striped::new_with(|| Stripe {
                pending: Mutex::new(Pending::empty(0)),
                gauge: AtomicU64::new(0f64.to_bits()),
            }),
            gauge_base: AtomicU64::new(0f64.to_bits()),
            ring: Mutex::new(Ring {
                buckets: Vec::new(),
                sketches: Vec::new(),
                aged_at: u64::MAX,
                value: 0.0,
                total_count: 0,
                total_sum: 0.0,
            }),
            epoch,
        }
    }

    /// Adds to a counter.
    #[inline]
    pub(crate) fn increment(&self, delta: f64) {
        self.record(delta, false);
    }

    /// Sets a counter's absolute value (`Counter::absolute`).
    pub(crate) fn absolute(&self, value: f64) {
        self.flush_all();
        let now = self.epoch.now();
        let mut ring = lock(&self.ring);
        let delta = (value - ring.value).max(0.0);
        self.flush_into(&mut ring, &Pending::one(now, delta), now);
        ring.value = ring.value.max(value);
    }

    /// Changes a gauge by `delta`, or sets it when `set` is given. A
    /// non-finite value is ignored (one NaN would poison the gauge for
    /// good). A set racing another set and a change may land as either
    /// order of the two sets; a read adds the stripes one by one, so it
    /// may see a change on one stripe and not its undo on another.
    #[inline]
    pub(crate) fn gauge(&self, delta: f64, set: Option<f64>) {
        if !delta.is_finite() || set.is_some_and(|v| !v.is_finite()) {
            return;
        }
        match set {
            Some(value) => {
                // The base becomes what makes the sum `value` now; a
                // change landing on a stripe meanwhile still counts, after
                // the set.
                let shares: f64 = self
                    .stripes
                    .iter()
                    .map(|s| f64::from_bits(s.gauge.load(Ordering::Acquire)))
                    .sum();
                self.gauge_base
                    .store((value - shares).to_bits(), Ordering::Release);
            }
            None => {
                // `fetch_update` only fails when the closure returns None.
                let _ = self.stripes.local().gauge.fetch_update(
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    |bits| Some((f64::from_bits(bits) + delta).to_bits()),
                );
            }
        }
    }

    fn gauge_value(&self) -> f64 {
        f64::from_bits(self.gauge_base.load(Ordering::Acquire))
            + self
                .stripes
                .iter()
                .map(|s| f64::from_bits(s.gauge.load(Ordering::Acquire)))
                .sum::<f64>()
    }

    /// The ticker's work, once per interval: flushes every stripe, so
    /// that a quiet stripe's samples do not wait for a read, and records
    /// a gauge's current value as a sample of the new interval.
    pub(crate) fn tick(&self) {
        self.flush_all();
        if self.kind == SeriesKind::Gauge {
            let value = self.gauge_value();
            let now = self.epoch.now();
            let mut ring = lock(&self.ring);
            self.flush_into(&mut ring, &Pending::one(now, value), now);
            ring.value = value;
        }
    }

    /// Records one histogram observation.
    #[inline]
    pub(crate) fn observe(&self, value: f64) {
        if value.is_finite() {
            self.record(value, true);
        }
    }

    #[inline]
    fn record(&self, value: f64, keep_sample: bool) {
        let now = self.epoch.now();
        let mut pending = lock(&self.stripes.local().pending);
        if pending.epoch != now {
            self.flush(&mut pending, now);
        }
        pending.count += 1;
        pending.sum += value;
        pending.min = pending.min.min(value);
        pending.max = pending.max.max(value);
        if keep_sample {
            let len = pending.len;
            pending.samples[len] = value;
            pending.len = len + 1;
            if pending.len == BUFFER {
                self.flush(&mut pending, now);
            }
        }
    }

    /// Moves a stripe's pending samples into the ring and starts it over
    /// at `now`. Lock order: a stripe, then the ring.
    fn flush(&self, pending: &mut Pending, now: u64) {
        if pending.count > 0 {
            let mut ring = lock(&self.ring);
            self.flush_into(&mut ring, pending, self.epoch.now().max(now));
        }
        *pending = Pending::empty(now);
    }

    fn flush_all(&self) {
        for stripe in self.stripes.iter() {
            let mut pending = lock(&stripe.pending);
            let epoch = pending.epoch;
            self.flush(&mut pending, epoch);
        }
    }

    fn flush_into(&self, ring: &mut Ring, pending: &Pending, now: u64) {
        let epoch = &*self.epoch;
        ring.total_count += pending.count;
        ring.total_sum += pending.sum;
        if self.kind == SeriesKind::Counter {
            ring.value += pending.sum;
        }
        if pending.epoch < epoch.oldest(now) {
            // Held back past the retention period (a stripe quiet for an
            // hour): in the totals only.
            return;
        }
        ring.age(epoch, now);
        // Buckets are made as time reaches them, so a quiet series stays
        // small; exactly as many as needed, never more than `buckets`.
        let slot = (pending.epoch % epoch.buckets) as usize;
        if ring.buckets.len() <= slot {
            let missing = slot + 1 - ring.buckets.len();
            ring.buckets.reserve_exact(missing);
            ring.buckets
                .extend(std::iter::repeat_n(Bucket::empty(u64::MAX), missing));
        }
        let bucket = &mut ring.buckets[slot];
        if bucket.epoch != pending.epoch {
            if bucket.epoch != u64::MAX && bucket.epoch > pending.epoch {
                // The slot already holds a later interval.
                return;
            }
            *bucket = Bucket::empty(pending.epoch);
        }
        bucket.count += pending.count;
        bucket.sum += pending.sum;
        bucket.min = bucket.min.min(pending.min);
        bucket.max = bucket.max.max(pending.max);
        if pending.len > 0 {
            let sketch = ring.sketch_for(epoch, pending.epoch, now);
            for &sample in &pending.samples[..pending.len] {
                sketch.add(sample);
            }
        }
    }

    /// Folds the buckets of epochs `from..=to`.
    pub(crate) fn fold(&self, from: u64, to: u64) -> Folded {
        self.flush_all();
        let mut ring = lock(&self.ring);
        ring.age(&self.epoch, self.epoch.now());
        let mut folded = Folded::default();
        for bucket in ring
            .buckets
            .iter()
            .filter(|b| b.epoch >= from && b.epoch <= to && b.count > 0)
        {
            folded.count += bucket.count;
            folded.sum += bucket.sum;
            folded.min = Some(folded.min.map_or(bucket.min, |m| m.min(bucket.min)));
            folded.max = Some(folded.max.map_or(bucket.max, |m| m.max(bucket.max)));
        }
        let now = self.epoch.now();
        for entry in &ring.sketches {
            let (start, end) = entry.range();
            // A coarse group holds only its intervals that have aged into
            // its tier: it counts when the window's oldest interval in
            // the group is one of those, not merely when the group's
            // range meets the window.
            if start <= to
                && end >= from
                && self.epoch.tier_of(start.max(from).min(now), now) == entry.tier
            {
                folded
                    .sketch
                    .get_or_insert_with(Sketch::new)
                    .merge(&entry.sketch);
            }
        }
        folded
    }

    /// Adds the buckets of epochs `from..=to` into `slots` (index 0 is
    /// `from`), and the sketches holding them into `sketches`, by
    /// `(tier, group)`: what [`Query::history`](super::Query::history)
    /// merges across series.
    pub(crate) fn history_into(
        &self,
        from: u64,
        to: u64,
        slots: &mut [Folded],
        sketches: &mut HashMap<(u32, u64), Sketch>,
    ) {
        self.flush_all();
        let mut ring = lock(&self.ring);
        ring.age(&self.epoch, self.epoch.now());
        for bucket in ring
            .buckets
            .iter()
            .filter(|b| b.epoch >= from && b.epoch <= to && b.count > 0)
        {
            let slot = &mut slots[(bucket.epoch - from) as usize];
            slot.count += bucket.count;
            slot.sum += bucket.sum;
            slot.min = Some(slot.min.map_or(bucket.min, |m| m.min(bucket.min)));
            slot.max = Some(slot.max.map_or(bucket.max, |m| m.max(bucket.max)));
        }
        for entry in &ring.sketches {
            let (start, end) = entry.range();
            if start <= to && end >= from {
                sketches
                    .entry((entry.tier, entry.group))
                    .or_default()
                    .merge(&entry.sketch);
            }
        }
    }

    /// The sketch tier and group holding the samples of `epoch` now.
    pub(crate) fn sketch_key(epoch: &Epoch, sample_epoch: u64) -> (u32, u64) {
        let tier = epoch.tier_of(sample_epoch, epoch.now());
        (tier, sample_epoch / Epoch::span(tier))
    }

    /// The counter's total or the gauge's current value.
    pub(crate) fn value(&self) -> f64 {
        match self.kind {
            SeriesKind::Gauge => self.gauge_value(),
            _ => {
                self.flush_all();
                lock(&self.ring).value
            }
        }
    }

    /// Every sample ever recorded: (count, sum).
    pub(crate) fn totals(&self) -> (u64, f64) {
        self.flush_all();
        let ring = lock(&self.ring);
        (ring.total_count, ring.total_sum)
    }

    /// Bytes this series takes now (its own accounting).
    pub(crate) fn memory_bytes(&self) -> usize {
        let ring = lock(&self.ring);
        std::mem::size_of::<Self>()
            + self.stripes.len() * std::mem::size_of::<CachePadded<Stripe>>()
            + ring.buckets.capacity() * std::mem::size_of::<Bucket>()
            + ring.sketches.capacity() * std::mem::size_of::<TierSketch>()
            + ring
                .sketches
                .iter()
                .map(|s| s.sketch.memory_bytes() - std::mem::size_of::<Sketch>())
                .sum::<usize>()
    }

    /// The most bytes one series can take with `epoch`'s settings on
    /// this machine.
    pub(crate) fn memory_bound_bytes(epoch: &Epoch) -> usize {
        Self::memory_bound_with_stripes(epoch, stripes())
    }

    fn memory_bound_with_stripes(epoch: &Epoch, stripes: usize) -> usize {
        let sketches = epoch.max_sketches();
        std::mem::size_of::<Self>()
            + stripes * std::mem::size_of::<CachePadded<Stripe>>()
            + epoch.buckets() * std::mem::size_of::<Bucket>()
            // The vector of sketches may have grown to twice what it holds.
            + 2 * sketches * std::mem::size_of::<TierSketch>()
            + sketches * (sketch::MAX_BYTES - std::mem::size_of::<Sketch>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_for_an_hour_by_ten_seconds() {
        let epoch = Epoch::new(360);
        assert_eq!(epoch.top, 3);
        assert_eq!(epoch.max_sketches(), 3 * 6 + 3);
        // The last 6 intervals have sketches of their own.
        assert_eq!(epoch.tier_of(100, 100), 0);
        assert_eq!(epoch.tier_of(95, 100), 0);
        assert_eq!(epoch.tier_of(90, 100), 1);
        assert_eq!(epoch.tier_of(0, 359), 3);
        assert_eq!(Epoch::new(1).top, 0);
    }

    #[test]
    fn the_default_bound_is_under_64_mib_on_any_machine() {
        // One stripe is two cache lines and no more.
        assert_eq!(std::mem::size_of::<CachePadded<Stripe>>(), 128);
        let epoch = Epoch::new(360);
        let most = tower_hardening_core::stripe::MAX_STRIPES;
        // 1,000 series, plus the key overhead the collector adds (256
        // bytes of label text and the key itself).
        let per_series = Series::memory_bound_with_stripes(&epoch, most)
            + std::mem::size_of::<metrics::Key>()
            + 256;
        assert!(1_000 * per_series < 64 << 20, "{per_series} bytes a series");
    }

    #[test]
    fn sketches_stay_few_and_samples_are_kept_once() {
        let epoch = Arc::new(Epoch::new(360));
        let series = Series::new(SeriesKind::Histogram, epoch.clone());
        let mut most = 0;
        for now in 0..2_000u64 {
            epoch.set(now);
            for i in 0..20 {
                series.observe(f64::from(i) + 1.0);
            }
            let folded = series.fold(0, now);
            let ring = lock(&series.ring);
            most = most.max(ring.sketches.len());
            let kept: u64 = ring.sketches.iter().map(|s| s.sketch.count()).sum();
            let in_buckets: u64 = ring.buckets.iter().map(|b| b.count).sum();
            // The top tier's oldest group may reach past the retention.
            assert!(
                kept >= in_buckets && kept <= in_buckets + 216 * 20,
                "at {now}"
            );
            assert_eq!(folded.count, in_buckets);
            assert_eq!(folded.sketch.map_or(0, |s| s.count()), kept);
        }
        assert!(most <= epoch.max_sketches(), "{most} sketches");
        assert!(series.memory_bytes() <= Series::memory_bound_bytes(&epoch));
    }
}
