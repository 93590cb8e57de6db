//! A small quantile sketch (DDSketch's logarithmic bins, 32-bit counts,
//! a hard cap on bins): quantiles within [`ALPHA`] relative error of the
//! true value while the largest magnitude is less than about 2.5e4 times
//! the smallest (512 bins, each 2% wide); beyond that the smallest
//! magnitudes are merged, so the upper quantiles stay within `ALPHA`
//! and the lowest ones lose precision. Memory is at most
//! [`MAX_BYTES`] whatever arrives.
//!
//! Counts are 32-bit to halve the memory of a bin. A bin about to pass
//! 2^32 halves every bin and the addition (rounding up, so no seen value
//! vanishes): the proportions, and so the quantiles, stay within one
//! count per bin per halving; the exact count lives beside the sketch,
//! in the bucket.

/// The relative error of a quantile: the estimate is within 1% of the
/// true value.
pub(crate) const ALPHA: f64 = 0.01;
/// The most bins a sketch holds, positive and negative together.
pub(crate) const MAX_BINS: usize = 512;
/// Magnitudes below this count as zero.
const MIN_VALUE: f64 = 1.0e-9;
/// The most bytes one sketch takes (a store keeps at least one bin, so
/// the two may hold one bin more than `MAX_BINS` between them).
pub(crate) const MAX_BYTES: usize = std::mem::size_of::<Sketch>() + (MAX_BINS + 1) * 4;

/// Bins per doubling: a bin spans a factor `gamma = 2^(1/35)`
/// (1.0200), a hair under DDSketch's `(1 + ALPHA) / (1 - ALPHA)`
/// (1.0202), so a bin's middle is within 0.99% of every value in it.
/// A whole number of bins per doubling lets a key come from the float's
/// exponent and a table lookup on its significand, instead of a `ln`
/// (about 60 instructions with its `ceil`, on every sample).
const PER_DOUBLING: i32 = 35;

/// `2^(i/35)` for `i` in `0..=35`: the upper edges of a doubling's bins.
const EDGES: [f64; PER_DOUBLING as usize + 1] = [
    1.0,
    1.020001609421199,
    1.0404032832218364,
    1.0612130233333728,
    1.0824389917387767,
    1.1040895136738123,
    1.1261730808923576,
    1.148698354997035,
    1.1716741708364595,
    1.1951095399704377,
    1.2190136542044754,
    1.2433958891949821,
    1.2682658081265845,
    1.293633165462994,
    1.3195079107728942,
    1.3459001926323562,
    1.372820362605305,
    1.4002789793036055,
    1.4282868125283514,
    1.4568548474939929,
    1.4859942891369484,
    1.515716566510398,
    1.5460333372669801,
    1.5769564922311472,
    1.6084981600629789,
    1.640670712015276,
    1.673486766785806,
    1.706959195466601,
    1.7411011265922482,
    1.7759259512891563,
    1.8114473285278132,
    1.847679190480101,
    1.8846357479837614,
    1.9223314961161622,
    1.960781219879547,
    2.0,
];

/// For each of the 256 slices `[1 + s/256, 1 + (s+1)/256)` of a
/// significand, the first edge at or above the slice's start. Edges are
/// more than 1/256 apart, so a slice holds at most one: one comparison
/// finishes the lookup.
const FIRST_EDGE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut slice = 0;
    let mut edge = 0;
    while slice < 256 {
        let start = 1.0 + slice as f64 / 256.0;
        while EDGES[edge] < start {
            edge += 1;
        }
        table[slice] = edge as u8;
        slice += 1;
    }
    table
};

// A bin's middle is within ALPHA of both its edges.
const _: () = assert!((EDGES[1] - 1.0) / (EDGES[1] + 1.0) <= ALPHA);

fn gamma() -> f64 {
    EDGES[1]
}

/// `ceil(log_gamma(magnitude))`: the bin `(gamma^(k-1), gamma^k]` holding
/// `magnitude`, exactly (up to the rounding of `EDGES`), from its bits.
#[inline]
fn key_of(magnitude: f64) -> i32 {
    // Magnitudes are at least MIN_VALUE and finite, so normal floats: the
    // key is within about -1,050 and +35,900, far inside `i32`.
    const SIGNIFICAND: u64 = (1 << 52) - 1;
    let bits = magnitude.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let significand = f64::from_bits((bits & SIGNIFICAND) | (1023 << 52));
    let mut edge = FIRST_EDGE[((bits & SIGNIFICAND) >> 44) as usize] as usize;
    if significand > EDGES[edge] {
        edge += 1;
    }
    exponent * PER_DOUBLING + edge as i32
}

/// The value a bin stands for: within ALPHA of every value in it.
fn value_of(key: i32) -> f64 {
    let gamma = gamma();
    2.0 * gamma.powi(key) / (gamma + 1.0)
}

/// Bins of consecutive keys, `offset` being the key of `bins[0]`.
#[derive(Debug, Clone, Default)]
struct Store {
    offset: i32,
    bins: Vec<u32>,
}

impl Store {
    fn len(&self) -> usize {
        self.bins.len()
    }

    /// Adds `n` at `key`, growing to at most `cap` bins (at least 1): a
    /// key below what fits goes into the lowest bin, and a key above it
    /// merges the lowest bins upward. Returns `false`, and leaves the
    /// target bin as it was, when adding would take it past `u32::MAX`.
    fn add(&mut self, key: i32, n: u32, cap: usize) -> bool {
        let cap = cap.max(1);
        if self.bins.is_empty() {
            self.offset = key;
            self.bins.reserve_exact(1);
            self.bins.push(0);
        }
        let low = i64::from(self.offset);
        let high = low + self.bins.len() as i64 - 1;
        let key = i64::from(key);
        let index = if key < low {
            let grow = (low - key) as usize;
            if self.bins.len() + grow <= cap {
                let mut bins = Vec::with_capacity(self.bins.len() + grow);
                bins.resize(grow, 0);
                bins.extend_from_slice(&self.bins);
                self.bins = bins;
                self.offset = key as i32;
                0
            } else {
                // The smallest magnitudes are the ones given up.
                let room = cap.saturating_sub(self.bins.len());
                if room > 0 {
                    let mut bins = Vec::with_capacity(self.bins.len() + room);
                    bins.resize(room, 0);
                    bins.extend_from_slice(&self.bins);
                    self.bins = bins;
                    self.offset -= room as i32;
                }
                0
            }
        } else if key > high {
            let span = (key - low + 1) as usize;
            if span <= cap {
                self.bins.reserve_exact(span - self.bins.len());
                self.bins.resize(span, 0);
            } else {
                // Keep the top `cap` keys; fold everything below into the
                // new lowest bin.
                let new_low = key - cap as i64 + 1;
                let drop = ((new_low - low) as usize).min(self.bins.len());
                let folded = self.bins[..drop]
                    .iter()
                    .fold(0u64, |sum, &c| sum + u64::from(c));
                let mut bins = Vec::with_capacity(cap);
                bins.extend_from_slice(&self.bins[drop..]);
                bins.resize(cap, 0);
                self.bins = bins;
                self.offset = new_low as i32;
                // Saturates only past 2^32 folded samples: a lowest bin
                // that full is already far from exact.
                self.bins[0] = u32::try_from(u64::from(self.bins[0]) + folded).unwrap_or(u32::MAX);
            }
            self.bins.len() - 1
        } else {
            (key - low) as usize
        };
        self.add_at(index, n)
    }

    /// Adds `n` at `key` if its bin exists already (nearly every sample
    /// once a sketch has seen a few): `None` when it does not, else
    /// whether the bin had room.
    #[inline]
    fn add_existing(&mut self, key: i32, n: u32) -> Option<bool> {
        let index = usize::try_from(i64::from(key) - i64::from(self.offset)).ok()?;
        let bin = self.bins.get_mut(index)?;
        Some(match bin.checked_add(n) {
            Some(sum) => {
                *bin = sum;
                true
            }
            None => false,
        })
    }

    fn add_at(&mut self, index: usize, n: u32) -> bool {
        match self.bins[index].checked_add(n) {
            Some(bin) => {
                self.bins[index] = bin;
                true
            }
            None => false,
        }
    }

    fn halve(&mut self) {
        for bin in &mut self.bins {
            *bin = bin.div_ceil(2);
        }
    }

    fn total(&self) -> u64 {
        self.bins.iter().map(|&c| u64::from(c)).sum()
    }
}

/// A quantile sketch; see the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sketch {
    positive: Store,
    negative: Store,
    zero: u64,
}

impl Sketch {
    pub(crate) fn new() -> Self {
        Sketch::default()
    }

    /// Adds one finite value.
    #[inline]
    pub(crate) fn add(&mut self, value: f64) {
        self.add_n(value, 1);
    }

    #[inline]
    fn add_n(&mut self, value: f64, n: u32) {
        if value.abs() < MIN_VALUE || !value.is_finite() {
            self.zero = self.zero.saturating_add(u64::from(n));
            return;
        }
        self.add_key(key_of(value.abs()), value > 0.0, n);
    }

    #[inline]
    fn add_key(&mut self, key: i32, positive: bool, n: u32) {
        let store = if positive {
            &mut self.positive
        } else {
            &mut self.negative
        };
        if store.add_existing(key, n) != Some(true) {
            self.add_key_growing(key, positive, n);
        }
    }

    /// [`add_key`](Self::add_key) when the bin is not there yet (the store
    /// grows, or merges its lowest bins) or is full (everything halves).
    #[inline(never)]
    fn add_key_growing(&mut self, key: i32, positive: bool, mut n: u32) {
        loop {
            let added = if positive {
                let cap = MAX_BINS - self.negative.len();
                self.positive.add(key, n, cap)
            } else {
                let cap = MAX_BINS - self.positive.len();
                self.negative.add(key, n, cap)
            };
            if added {
                return;
            }
            // A bin would pass 2^32: halve everything, this addition
            // included, so the proportions hold.
            self.halve();
            n = n.div_ceil(2);
        }
    }

    fn largest_bin(&self) -> u64 {
        let largest = |store: &Store| store.bins.iter().copied().max().unwrap_or(0);
        u64::from(largest(&self.positive).max(largest(&self.negative)))
    }

    fn halve(&mut self) {
        self.positive.halve();
        self.negative.halve();
        self.zero = self.zero.div_ceil(2);
    }

    /// Adds every sample of `other`, key by key (no logarithm). When a
    /// bin could pass 2^32, both sides are halved first, so the whole
    /// merge keeps one scale.
    pub(crate) fn merge(&mut self, other: &Sketch) {
        let mut scaled: Option<Sketch> = None;
        while self.largest_bin() + scaled.as_ref().unwrap_or(other).largest_bin()
            > u64::from(u32::MAX)
        {
            self.halve();
            let mut next = scaled.take().unwrap_or_else(|| other.clone());
            next.halve();
            scaled = Some(next);
        }
        let other = scaled.as_ref().unwrap_or(other);
        self.zero = self.zero.saturating_add(other.zero);
        for (store, positive) in [(&other.positive, true), (&other.negative, false)] {
            for (i, &count) in store.bins.iter().enumerate() {
                if count > 0 {
                    self.add_key(store.offset + i as i32, positive, count);
                }
            }
        }
    }

    /// The samples held (after any halving).
    pub(crate) fn count(&self) -> u64 {
        self.positive.total() + self.negative.total() + self.zero
    }

    /// The `q` quantile (clamped to 0..=1); `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 || q.is_nan() {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        // Most negative first: the negative store's highest keys.
        for (i, &c) in self.negative.bins.iter().enumerate().rev() {
            seen += u64::from(c);
            if seen > rank {
                return Some(-value_of(self.negative.offset + i as i32));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (i, &c) in self.positive.bins.iter().enumerate() {
            seen += u64::from(c);
            if seen > rank {
                return Some(value_of(self.positive.offset + i as i32));
            }
        }
        // Unreachable with a consistent count; the largest bin otherwise.
        self.positive
            .bins
            .len()
            .checked_sub(1)
            .map(|i| value_of(self.positive.offset + i as i32))
    }

    /// Bytes this sketch takes.
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + (self.positive.bins.capacity() + self.negative.bins.capacity()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn keys_are_the_logarithmic_bins() {
        // Against `ceil(log_gamma(x))` over 11 decades, and every bin's
        // middle within ALPHA of the values that map to it.
        let ln_gamma = gamma().ln();
        let mut x = MIN_VALUE;
        while x < 1.0e2 {
            let key = key_of(x);
            let exact = x.ln() / ln_gamma;
            // Off by one only where float rounding puts `x` on an edge.
            if (exact - exact.round()).abs() > 1.0e-9 {
                assert_eq!(key, exact.ceil() as i32, "{x}");
            }
            let middle = value_of(key);
            assert!(
                (middle - x).abs() <= ALPHA * x,
                "{x} in bin {key} ({middle})"
            );
            x *= 1.000_37;
        }
        assert_eq!(key_of(1.0), 0);
        assert_eq!(key_of(2.0), PER_DOUBLING);
        assert_eq!(key_of(0.5), -PER_DOUBLING);
        assert_eq!(key_of(f64::from_bits(2.0f64.to_bits() - 1)), PER_DOUBLING);
        assert_eq!(key_of(f64::from_bits(1.0f64.to_bits() + 1)), 1);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let values: Vec<f64> = (1..=100_000).map(|i| 1.0 + f64::from(i) * 0.1).collect();
        let mut sketch = Sketch::new();
        values.iter().for_each(|&v| sketch.add(v));
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let truth = exact(&values, q);
            let estimate = sketch.quantile(q).unwrap();
            assert!(
                (estimate - truth).abs() <= ALPHA * truth,
                "q{q}: {estimate} vs {truth}"
            );
        }
        assert!(sketch.memory_bytes() <= MAX_BYTES);
    }

    #[test]
    fn merging_is_adding() {
        let mut a = Sketch::new();
        let mut b = Sketch::new();
        let mut all = Sketch::new();
        for i in 1..=10_000 {
            let v = f64::from(i).sqrt();
            if i % 3 == 0 { &mut a } else { &mut b }.add(v);
            all.add(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 10_000);
        for q in [0.1, 0.5, 0.99] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
    }

    #[test]
    fn a_huge_range_stays_bounded_and_keeps_the_top() {
        let mut sketch = Sketch::new();
        let mut values = Vec::new();
        for e in -300..300 {
            for m in [1.0, 3.0, 7.0] {
                let v = m * 10f64.powi(e);
                values.push(v);
                sketch.add(v);
                sketch.add(-v);
            }
        }
        assert!(
            sketch.memory_bytes() <= MAX_BYTES,
            "{}",
            sketch.memory_bytes()
        );
        assert!(sketch.positive.len() + sketch.negative.len() <= MAX_BINS);
        values.sort_by(f64::total_cmp);
        // Upper quantiles survive collapsing.
        let top = sketch.quantile(1.0).unwrap();
        assert!((top - values[values.len() - 1]).abs() <= ALPHA * top);
        assert_eq!(sketch.count(), 2 * values.len() as u64);
    }

    #[test]
    fn merging_near_full_bins_keeps_one_scale() {
        let mut a = Sketch::new();
        a.add_n(1.0, 3_000_000_000);
        let mut b = Sketch::new();
        b.add_n(1.0, 3_000_000_000);
        b.add_n(100.0, 3_000_000_000);
        a.merge(&b);
        // 6e9 at 1.0 and 3e9 at 100.0: the 60th percentile is 1.0.
        let p60 = a.quantile(0.6).unwrap();
        assert!((p60 - 1.0).abs() <= 0.02, "{p60}");
        let p80 = a.quantile(0.8).unwrap();
        assert!((p80 - 100.0).abs() <= 1.0, "{p80}");
    }

    #[test]
    fn zero_negative_and_garbage() {
        let mut sketch = Sketch::new();
        assert_eq!(sketch.quantile(0.5), None);
        for v in [-2.0, -1.0, 0.0, 1.0, 2.0] {
            sketch.add(v);
        }
        assert!((sketch.quantile(0.0).unwrap() + 2.0).abs() <= 0.02);
        assert_eq!(sketch.quantile(0.5), Some(0.0));
        assert!((sketch.quantile(1.0).unwrap() - 2.0).abs() <= 0.02);
        assert_eq!(sketch.quantile(f64::NAN), None);
        assert!(sketch.quantile(7.0).is_some());
    }

    #[test]
    fn counts_past_u32_halve_and_keep_proportions() {
        let mut sketch = Sketch::new();
        sketch.add_n(1.0, u32::MAX - 1);
        sketch.add_n(100.0, u32::MAX / 3);
        sketch.add_n(1.0, 10);
        let p50 = sketch.quantile(0.5).unwrap();
        let p90 = sketch.quantile(0.9).unwrap();
        assert!((p50 - 1.0).abs() <= 0.01, "{p50}");
        assert!((p90 - 100.0).abs() <= 1.0, "{p90}");
    }
}
