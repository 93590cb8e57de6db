//! Sliding windows of call results, updated with atomics only.
//!
//! The count window keeps its three counts — calls, failures, slow calls —
//! packed in one `AtomicU64` (20 bits each; it never holds more than
//! 1,000,000 calls) above a flag bit, so a reader sees a consistent triple
//! with one load.
//! The time window's buckets hold any number of calls, so each keeps three
//! separate 64-bit counters, written and read in an order that keeps
//! `failures <= calls` and `slow <= calls` for every reader.
//!
//! Both windows carry an *epoch*: the low bits of the breaker generation
//! at which the window was last emptied. Every state that records calls
//! (closed, metrics-only) starts with an emptied window, so a call
//! admitted at generation `g` belongs to the window of epoch `g`; a call
//! whose epoch is no longer the window's is older than the last reset and
//! is never counted, however late it finishes.

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const FIELD_BITS: u32 = 20;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// The largest count window (the packed fields hold up to 2^20 - 1, which
/// leaves room for the calls writers add a moment before they subtract).
pub(crate) const MAX_COUNT_WINDOW: u32 = 1_000_000;

/// How many buckets a time window is cut into: a call is forgotten between
/// `period` and `period + period / TIME_BUCKETS` after it completed.
pub(crate) const TIME_BUCKETS: u32 = 20;

pub(crate) use tower_hardening_core::stripe::CachePadded;

/// Bits of the breaker generation a window keeps as its epoch.
const EPOCH_BITS: u32 = 13;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;

/// The window epoch of a breaker generation.
fn epoch_of_generation(generation: u64) -> u64 {
    generation & EPOCH_MASK
}

/// Whether epoch `a` is older than epoch `b` (wrapping: epochs are the
/// generation's low bits, and only the last few thousand are ever live).
fn epoch_is_older(a: u64, b: u64) -> bool {
    let ahead = b.wrapping_sub(a) & EPOCH_MASK;
    ahead != 0 && ahead < 1 << (EPOCH_BITS - 1)
}

/// Spins on a word another writer holds for a few instructions; yields the
/// thread after a while, in case that writer was descheduled.
fn back_off(spins: u32) {
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    if spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// One finished call, as the window stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallRecord {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl CallRecord {
    /// Slot encoding: bit 0 set for any recorded call, bit 1 failure, bit 2 slow.
    fn encode(self) -> u64 {
        1 | (u64::from(self.failure) << 1) | (u64::from(self.slow) << 2)
    }
}

/// A slot value holding a call that neither failed nor was slow.
const SUCCESS: u64 = 1;

/// The packed counts one slot value contributes (above the flag bit).
fn contribution(value: u64) -> u64 {
    ((value & 1) | (((value >> 1) & 1) << FIELD_BITS) | (((value >> 2) & 1) << (2 * FIELD_BITS)))
        << 1
}

/// Bit 0 of the count window's counts word: a trip check read torn counts
/// and asks the next writer to look again. Field arithmetic adds and
/// subtracts multiples of two, so it never carries into or out of it.
const RECHECK: u64 = 1;

/// Calls, failures and slow calls currently in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WindowCounts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl WindowCounts {
    fn unpack(word: u64) -> Self {
        let packed = word >> 1;
        WindowCounts {
            calls: packed & FIELD_MASK,
            failures: (packed >> FIELD_BITS) & FIELD_MASK,
            slow: (packed >> (2 * FIELD_BITS)) & FIELD_MASK,
        }
    }

    fn add(self, other: WindowCounts) -> Self {
        WindowCounts {
            calls: self.calls.saturating_add(other.calls),
            failures: self.failures.saturating_add(other.failures),
            slow: self.slow.saturating_add(other.slow),
        }
    }

    /// Whether the counts could be real: a reader of the packed count
    /// window that catches a writer between its slot and its counts sees
    /// a field below zero (read as a huge one), and must not act on it.
    pub(crate) fn is_consistent(self, capacity: u64) -> bool {
        self.failures <= self.calls && self.slow <= self.calls && self.calls <= capacity
    }
}

/// A window over the calls of the last `period` or the last N calls.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per breaker; boxing the padded count window would add a pointer chase to every call"
)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Records a call admitted at `generation`; returns whether the
    /// breaker should look at the counts now: a failure or slow call was
    /// recorded, a trip check asked for a second look, or the window is
    /// below its minimum with failures in it (see `set_below_minimum`).
    #[inline]
    pub(crate) fn record(&self, record: CallRecord, now_nanos: u64, generation: u64) -> bool {
        match self {
            Window::Count(window) => window.record(record, generation),
            Window::Time(window) => window.record(record, now_nanos, generation),
        }
    }

    /// Set by a trip check that found failures (or slow calls) in a
    /// window below `minimum_calls`: every recorded call then asks for a
    /// look, so the call that reaches the minimum decides whatever its
    /// outcome. (A count window whose every slot holds a success has no
    /// failure in it: its healthy path never reads the flag.)
    pub(crate) fn set_below_minimum(&self, below: bool) {
        let flag = match self {
            Window::Count(window) => &window.below_minimum,
            Window::Time(window) => &window.below_minimum,
        };
        if flag.load(Ordering::Relaxed) != below {
            flag.store(below, Ordering::Relaxed);
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> WindowCounts {
        match self {
            Window::Count(window) => window.counts(),
            Window::Time(window) => window.counts(now_nanos),
        }
    }

    /// Empties the window for the calls of `generation`. Call it (under
    /// the transition lock) *before* publishing `generation`: calls of
    /// older generations that finish from now on are not counted, and no
    /// call of `generation` can be admitted, so none is erased.
    pub(crate) fn reset(&self, generation: u64) {
        match self {
            Window::Count(window) => window.reset(generation),
            Window::Time(window) => window.reset(generation),
        }
    }

    /// The counts for a reader outside the request path (a snapshot, the
    /// monitor, `/metrics`): never a torn reading. Reads again while a
    /// writer is caught mid-update (a few instructions), and if one was
    /// descheduled right there, clamps to a possible reading.
    pub(crate) fn settled_counts(&self, now_nanos: u64) -> WindowCounts {
        let capacity = self.capacity();
        let mut counts = self.counts(now_nanos);
        for _ in 0..64 {
            if counts.is_consistent(capacity) {
                return counts;
            }
            std::hint::spin_loop();
            counts = self.counts(now_nanos);
        }
        let calls = counts.calls.min(capacity);
        WindowCounts {
            calls,
            failures: counts.failures.min(calls),
            slow: counts.slow.min(calls),
        }
    }

    /// The counts a trip check acts on, or `None` if they are torn by a
    /// writer caught mid-update: that writer then looks again once its
    /// update has landed (its `record` returns true), so no trip waits
    /// for the next failure.
    pub(crate) fn counts_for_trip(&self, now_nanos: u64) -> Option<WindowCounts> {
        match self {
            Window::Count(window) => window.counts_for_trip(),
            Window::Time(window) => Some(window.counts(now_nanos)),
        }
    }

    /// Whether recording needs the time of completion.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// The most calls the window can hold, for consistency checks. A time
    /// window has no bound: its counters are 64 bits wide.
    pub(crate) fn capacity(&self) -> u64 {
        match self {
            Window::Count(window) => window.slots.len() as u64,
            Window::Time(_) => u64::MAX,
        }
    }
}

/// The cursor and slot words of a count window: a call's position in the
/// order of claims (48 bits, wrapping) above the window's epoch; a slot
/// adds the call's value (`CallRecord::encode`) in the low three bits.
const POSITION_SHIFT: u32 = 16;
const POSITION_ONE: u64 = 1 << POSITION_SHIFT;
const POSITION_MASK: u64 = (1 << (64 - POSITION_SHIFT)) - 1;
const EPOCH_SHIFT: u32 = 3;
const VALUE_MASK: u64 = 0b111;

fn position(word: u64) -> u64 {
    word >> POSITION_SHIFT
}

fn slot_epoch(word: u64) -> u64 {
    (word >> EPOCH_SHIFT) & EPOCH_MASK
}

/// The last N calls: a ring of slots plus packed running counts.
///
/// Each finishing call claims the next position of one shared cursor
/// (`fetch_add`), so every call has a place of its own in a single order,
/// whichever thread it finishes on. It writes its slot only if the slot
/// holds an older position: a writer that stalled between its claim and
/// its write, while the ring went round past it, finds a newer call there
/// and drops its own (it is older than the last N). So the window holds
/// exactly the last N claimed calls, and a stall costs at most the
/// staller's own call. Whoever replaces a value subtracts its
/// contribution from the counts before its compare-and-swap, and adds the
/// new one's after it.
///
/// A healthy service's call (a success while the counts say every slot
/// holds one) claims nothing and writes nothing: one load of the counts.
///
/// What concurrent calls can do to it, exactly:
/// - A reading never counts a call the window does not hold: a value's
///   contribution is added after it is in its slot and subtracted before
///   it leaves. A writer part-way through makes a reading miss its call
///   (and the one it replaces), or shows a field below zero, which
///   [`WindowCounts::is_consistent`] refuses; a trip check refused so
///   sets a flag in the counts word that the torn update's own
///   `fetch_add` reads, and that writer looks again (`counts_for_trip`).
///   A failure writer always looks after its own update: no trip waits
///   for the next failure.
/// - A success that finishes while the counts read as a full ring of
///   successes is dropped (the ring would look the same with it); a
///   failure or slow call never is.
/// - A reset (see [`Window::reset`]) moves the cursor to a new epoch
///   before it sweeps: calls admitted before it are never counted after
///   it, and calls admitted after it are never swept. A writer of the old
///   epoch caught part-way while the reset runs can only make a reading
///   torn (refused), never count its call in the new epoch.
/// - The position wraps after 2^48 recorded calls; the ring then skips
///   ahead once, forgetting a few calls early.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU64]>,
    len: u64,
    cursor: CachePadded<AtomicU64>,
    /// The packed counts above the `RECHECK` flag.
    counts: AtomicU64,
    below_minimum: AtomicBool,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_COUNT_WINDOW);
        // Empty slots of epoch 0, one position before the first call's.
        let empty = POSITION_MASK << POSITION_SHIFT;
        CountWindow {
            slots: (0..size).map(|_| AtomicU64::new(empty)).collect(),
            len: u64::from(size),
            cursor: CachePadded(AtomicU64::new(0)),
            counts: AtomicU64::new(0),
            below_minimum: AtomicBool::new(false),
        }
    }

    /// Whether a slot word `new` belongs in a slot holding `old`: an older
    /// epoch, or the same epoch and an older position.
    fn replaces(new: u64, old: u64) -> bool {
        let (new_epoch, old_epoch) = (slot_epoch(new), slot_epoch(old));
        if new_epoch != old_epoch {
            return epoch_is_older(old_epoch, new_epoch);
        }
        let ahead = position(new).wrapping_sub(position(old)) & POSITION_MASK;
        ahead != 0 && ahead < 1 << (63 - POSITION_SHIFT)
    }

    #[inline]
    pub(crate) fn record(&self, record: CallRecord, generation: u64) -> bool {
        let value = record.encode();
        // Every slot holds a plain success and so does this call: the ring
        // would be the same with it, and the next call that is not a plain
        // success still stays exactly N calls. A healthy service's calls
        // write nothing another core reads.
        if value == SUCCESS
            && self.counts.load(Ordering::Relaxed) == contribution(SUCCESS) * self.len
        {
            return false;
        }
        self.record_claimed(value, generation) || record.failure || record.slow
    }

    /// Claims a position and writes the slot; returns whether a deferred
    /// trip check is due.
    fn record_claimed(&self, value: u64, generation: u64) -> bool {
        let claimed = self.cursor.fetch_add(POSITION_ONE, Ordering::AcqRel);
        if slot_epoch(claimed) != epoch_of_generation(generation) {
            // The window was reset since this call was admitted.
            return false;
        }
        let mine = claimed | value;
        let slot = &self.slots[(position(claimed) % self.len) as usize];
        let mut old = slot.load(Ordering::Acquire);
        loop {
            if !Self::replaces(mine, old) {
                // A newer call holds the slot: this one is older than the
                // last N.
                return false;
            }
            // The value replaced leaves the counts before it leaves its
            // slot, and this one joins them after it is in its slot: a
            // reading never counts a call the window does not hold (a
            // racing replacement shows as a field below zero instead).
            let gone = contribution(old & VALUE_MASK);
            let changes = gone != contribution(value);
            if changes && gone != 0 {
                self.counts.fetch_sub(gone, Ordering::AcqRel);
            }
            match slot.compare_exchange(old, mine, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => {
                    if changes && gone != 0 {
                        self.counts.fetch_add(gone, Ordering::AcqRel);
                    }
                    old = actual;
                }
            }
        }
        if contribution(old & VALUE_MASK) == contribution(value) {
            // The same value again (a success for a success): the counts
            // stay as they are.
            return self.below_minimum.load(Ordering::Relaxed);
        }
        let before = self.counts.fetch_add(contribution(value), Ordering::AcqRel);
        if before & RECHECK != 0 {
            // A trip check read torn counts before this update landed.
            self.counts.fetch_and(!RECHECK, Ordering::AcqRel);
            return true;
        }
        self.below_minimum.load(Ordering::Relaxed)
    }

    pub(crate) fn counts(&self) -> WindowCounts {
        WindowCounts::unpack(self.counts.load(Ordering::Acquire))
    }

    fn counts_for_trip(&self) -> Option<WindowCounts> {
        let counts = self.counts();
        if counts.is_consistent(self.len) {
            return Some(counts);
        }
        // One read-modify-write: either it reads the counts after the
        // torn update landed, or that update reads the flag.
        let counts = WindowCounts::unpack(self.counts.fetch_or(RECHECK, Ordering::AcqRel));
        if counts.is_consistent(self.len) {
            self.counts.fetch_and(!RECHECK, Ordering::AcqRel);
            return Some(counts);
        }
        None
    }

    /// Moves the cursor to `generation`'s epoch, then empties every slot
    /// of an older epoch.
    pub(crate) fn reset(&self, generation: u64) {
        let epoch = epoch_of_generation(generation);
        let epoch_bits = EPOCH_MASK << EPOCH_SHIFT;
        let mut current = self.cursor.load(Ordering::Acquire);
        let moved = loop {
            let moved = (current & !epoch_bits) | (epoch << EPOCH_SHIFT);
            match self.cursor.compare_exchange_weak(
                current,
                moved,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break moved,
                Err(actual) => current = actual,
            }
        };
        // One position before the first call of the new epoch.
        let empty = (position(moved).wrapping_sub(1) & POSITION_MASK) << POSITION_SHIFT
            | (epoch << EPOCH_SHIFT);
        for slot in self.slots.iter() {
            let mut old = slot.load(Ordering::Acquire);
            while Self::replaces(empty, old) {
                match slot.compare_exchange_weak(old, empty, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let gone = contribution(old & VALUE_MASK);
                        if gone != 0 {
                            self.counts.fetch_sub(gone, Ordering::SeqCst);
                        }
                        break;
                    }
                    Err(actual) => old = actual,
                }
            }
        }
    }
}

/// A time bucket's tag: the window epoch above the bucket-width interval
/// (since the breaker's start) it holds; `ROLLING_OVER` is set while one
/// writer replaces the bucket's interval.
const INTERVAL_BITS: u32 = 50;
const INTERVAL_MASK: u64 = (1 << INTERVAL_BITS) - 1;
const ROLLING_OVER: u64 = 1 << 63;
/// How long a writer waits for a bucket another writer holds before it
/// drops its own call rather than wait longer on the request path.
/// (A few under loom, whose models explore every wait.)
const MAX_SPINS: u32 = if cfg!(loom) { 3 } else { 10_000 };

fn bucket_tag(epoch: u64, interval: u64) -> u64 {
    (epoch << INTERVAL_BITS) | (interval & INTERVAL_MASK)
}

fn tag_epoch(tag: u64) -> u64 {
    (tag >> INTERVAL_BITS) & EPOCH_MASK
}

/// How many intervals `tag`'s interval lies behind `interval` (wrapping;
/// `None` if it lies ahead).
fn intervals_behind(tag: u64, interval: u64) -> Option<u64> {
    let behind = interval.wrapping_sub(tag) & INTERVAL_MASK;
    (behind < 1 << (INTERVAL_BITS - 1)).then_some(behind)
}

#[derive(Debug)]
struct Bucket {
    tag: AtomicU64,
    /// Writers adding to the bucket right now: a writer that rolls the
    /// bucket over waits for them before it zeroes it, so no call lands
    /// in an interval it does not belong to.
    pins: AtomicU32,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl Bucket {
    /// Adds `n` calls of one kind. `calls` goes first and is read last, so
    /// a reader that sees a failure (or slow call) also sees its call.
    fn add(&self, record: CallRecord, n: u64) {
        self.calls.fetch_add(n, Ordering::AcqRel);
        if record.failure {
            self.failures.fetch_add(n, Ordering::AcqRel);
        }
        if record.slow {
            self.slow.fetch_add(n, Ordering::AcqRel);
        }
    }

    fn read(&self) -> WindowCounts {
        let failures = self.failures.load(Ordering::Acquire);
        let slow = self.slow.load(Ordering::Acquire);
        let calls = self.calls.load(Ordering::Acquire);
        WindowCounts {
            calls,
            failures: failures.min(calls),
            slow: slow.min(calls),
        }
    }
}

/// The calls of the last `period`: `TIME_BUCKETS` buckets of 64-bit
/// counters, each tagged with the epoch and the interval it holds.
///
/// A writer pins the bucket of its interval; if the tag is its own it
/// adds with one `fetch_add` per counter it touches (one for a success).
/// The first writer of a newer interval (or epoch) marks the bucket
/// `ROLLING_OVER`, waits for pinned writers to finish, zeroes the
/// counters, adds its own call and publishes the new tag. A writer never
/// lands in an interval or epoch other than its own. Readers sum the
/// buckets of the window's epoch whose interval lies within the period
/// and whose tag was the same before and after the counters were read.
/// A reset only moves the window's epoch: older buckets are no longer
/// read, and are rolled over when their bucket is next written.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    epoch: AtomicU64,
    below_minimum: AtomicBool,
}

impl TimeWindow {
    pub(crate) fn new(period: Duration) -> Self {
        let bucket_nanos = (period.as_nanos() / u128::from(TIME_BUCKETS)).max(1);
        // Tagged with the epoch before the first, so never read.
        let unused = bucket_tag(EPOCH_MASK, 0);
        TimeWindow {
            buckets: (0..TIME_BUCKETS)
                .map(|_| Bucket {
                    tag: AtomicU64::new(unused),
                    pins: AtomicU32::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
            bucket_nanos: u64::try_from(bucket_nanos).unwrap_or(u64::MAX),
            epoch: AtomicU64::new(0),
            below_minimum: AtomicBool::new(false),
        }
    }

    fn interval_of(&self, now_nanos: u64) -> u64 {
        now_nanos / self.bucket_nanos
    }

    /// Whether a bucket tagged `tag` holds calls older than those tagged
    /// `mine`, so that `mine`'s writer may roll it over.
    fn is_older(tag: u64, mine: u64) -> bool {
        match intervals_behind(tag, mine) {
            // Ahead of this call: this call is older than the window.
            None => false,
            // Beyond any window, whatever its epoch.
            Some(behind) if behind >= u64::from(TIME_BUCKETS) => true,
            Some(behind) => {
                let (epoch, my_epoch) = (tag_epoch(tag), tag_epoch(mine));
                if epoch == my_epoch {
                    behind > 0
                } else {
                    epoch_is_older(epoch, my_epoch)
                }
            }
        }
    }

    pub(crate) fn record(&self, record: CallRecord, now_nanos: u64, generation: u64) -> bool {
        self.record_many(record, 1, now_nanos, generation)
            && (record.failure || record.slow || self.below_minimum.load(Ordering::Relaxed))
    }

    /// Records `n` identical calls at once; returns whether they were
    /// recorded.
    pub(crate) fn record_many(
        &self,
        record: CallRecord,
        n: u64,
        now_nanos: u64,
        generation: u64,
    ) -> bool {
        let interval = self.interval_of(now_nanos);
        let mine = bucket_tag(epoch_of_generation(generation), interval);
        let bucket = &self.buckets[(interval % u64::from(TIME_BUCKETS)) as usize];
        let mut spins = 0u32;
        loop {
            let seen = bucket.tag.load(Ordering::Acquire);
            if seen & ROLLING_OVER != 0 {
                // Another writer is zeroing the bucket: a few stores. Wait
                // without a pin (a pin would hold that writer up).
                spins += 1;
                if spins > MAX_SPINS {
                    return false;
                }
                back_off(spins);
                continue;
            }
            if seen == mine {
                // Pin, then confirm the tag with a read-modify-write: either
                // it reads the tag before a roller's swap (and the roller,
                // reading the pins the same way, waits for this add), or it
                // sees the swap and adds nothing.
                bucket.pins.fetch_add(1, Ordering::AcqRel);
                if bucket.tag.fetch_add(0, Ordering::AcqRel) == mine {
                    bucket.add(record, n);
                    bucket.pins.fetch_sub(1, Ordering::Release);
                    return true;
                }
                bucket.pins.fetch_sub(1, Ordering::Release);
                continue;
            }
            if !Self::is_older(seen, mine) {
                // A newer interval or epoch owns the bucket.
                return false;
            }
            if bucket
                .tag
                .compare_exchange(seen, ROLLING_OVER, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let mut waits = 0u32;
            while bucket.pins.fetch_add(0, Ordering::AcqRel) != 0 {
                waits += 1;
                if waits > MAX_SPINS {
                    // A pinned writer was descheduled: give the bucket back
                    // as it was and drop this call, rather than wait on
                    // the request path.
                    bucket.tag.store(seen, Ordering::Release);
                    return false;
                }
                back_off(waits);
            }
            bucket.calls.store(0, Ordering::Release);
            bucket.failures.store(0, Ordering::Release);
            bucket.slow.store(0, Ordering::Release);
            bucket.add(record, n);
            bucket.tag.store(mine, Ordering::Release);
            return true;
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> WindowCounts {
        let epoch = self.epoch.load(Ordering::Acquire);
        let newest = self.interval_of(now_nanos);
        let mut total = WindowCounts::default();
        for bucket in self.buckets.iter() {
            let tag = bucket.tag.load(Ordering::Acquire);
            if tag & ROLLING_OVER != 0
                || tag_epoch(tag) != epoch
                || intervals_behind(tag, newest)
                    .is_none_or(|behind| behind >= u64::from(TIME_BUCKETS))
            {
                continue;
            }
            let counts = bucket.read();
            // Rolled over while being read: the counts may mix two
            // intervals, and the newer one is not in this reading's
            // window anyway.
            if bucket.tag.load(Ordering::Acquire) != tag {
                continue;
            }
            total = total.add(counts);
        }
        total
    }

    /// Moves the window to `generation`'s epoch: from now on only calls
    /// admitted at or after it are read.
    pub(crate) fn reset(&self, generation: u64) {
        self.epoch
            .store(epoch_of_generation(generation), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const OK: CallRecord = CallRecord {
        failure: false,
        slow: false,
    };
    pub(super) const FAIL: CallRecord = CallRecord {
        failure: true,
        slow: false,
    };
    pub(super) const SLOW: CallRecord = CallRecord {
        failure: false,
        slow: true,
    };

    #[test]
    fn a_healthy_ring_is_not_written_and_stays_exact() {
        let window = CountWindow::new(100);
        (0..100).for_each(|_| {
            window.record(OK, 0);
        });
        let cursor = window.cursor.load(Ordering::Relaxed);
        (0..1_037).for_each(|_| {
            window.record(OK, 0);
        });
        assert_eq!(
            window.cursor.load(Ordering::Relaxed),
            cursor,
            "nothing written"
        );
        // A failure still stays exactly 100 calls, itself included.
        window.record(FAIL, 0);
        for i in 0..99 {
            window.record(OK, 0);
            assert_eq!(window.counts().failures, 1, "{i} successes after it");
        }
        window.record(OK, 0);
        assert_eq!(window.counts().failures, 0);
        // A slow success is not a plain one: it is written.
        window.record(SLOW, 0);
        assert_eq!(window.counts().slow, 1);
    }

    #[test]
    fn a_slow_threads_calls_weigh_their_share() {
        // Two threads take turns: a fast one succeeding, and one making
        // every 20th call and failing it. The window holds exactly the
        // failures among the last 100 calls (5), whichever thread made
        // them. (Cursors per thread, or slots claimed in batches, give a
        // slow thread's calls less than their share: a breaker would
        // miss failures that finish on one worker, as timeouts may.)
        let window = CountWindow::new(100);
        let (to_slow, slow_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let window = &window;
            s.spawn(move || {
                for () in slow_rx {
                    window.record(FAIL, 0);
                    done_tx.send(()).unwrap();
                }
            });
            for i in 0..10_000u32 {
                if i % 20 == 19 {
                    to_slow.send(()).unwrap();
                    done.recv().unwrap();
                } else {
                    window.record(OK, 0);
                }
                if i >= 99 {
                    assert_eq!(window.counts().failures, 5, "after {i}");
                }
            }
            drop(to_slow);
        });
    }

    /// Writers on many threads (more than cores) never erase each other's
    /// calls: with a window larger than all of them, every failure is in
    /// it. (A cursor advanced by a plain load and store let a writer that
    /// stalled between the two rewind it, and the calls after it
    /// overwrote those recorded during the stall: about 1% were lost.)
    #[test]
    fn a_stalled_writer_never_erases_other_calls() {
        let threads: u64 = 8;
        let per_thread: u64 = 10_000;
        let window = CountWindow::new(100_000);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for i in 0..per_thread {
                        window.record(if i % 3 == 0 { SLOW } else { FAIL }, 0);
                    }
                });
            }
        });
        let slow = threads * per_thread.div_ceil(3);
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: threads * per_thread,
                failures: threads * per_thread - slow,
                slow,
            }
        );
    }

    /// A writer that claimed its position before the ring went round past
    /// it drops its own call instead of replacing a newer one.
    #[test]
    fn a_writer_older_than_the_window_drops_its_own_call() {
        let window = CountWindow::new(2);
        let stale = window.cursor.fetch_add(POSITION_ONE, Ordering::AcqRel);
        // Two newer calls fill the ring (positions 1 and 2).
        window.record(FAIL, 0);
        window.record(FAIL, 0);
        // The stalled writer of position 0 now writes its success: slot 0
        // holds position 2, newer, so the ring keeps both failures.
        let slot = &window.slots[0];
        assert!(!CountWindow::replaces(
            stale | SUCCESS,
            slot.load(Ordering::Acquire)
        ));
        assert_eq!(window.counts().failures, 2);
    }

    #[test]
    fn a_count_window_forgets_calls_made_on_other_threads() {
        let window = CountWindow::new(100);
        std::thread::scope(|s| {
            s.spawn(|| {
                (0..100).for_each(|_| {
                    window.record(FAIL, 0);
                })
            });
        });
        assert_eq!(window.counts().failures, 100);
        std::thread::scope(|s| {
            s.spawn(|| {
                (0..100).for_each(|_| {
                    window.record(OK, 0);
                })
            });
        });
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 100,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn count_window_keeps_the_last_n() {
        let window = CountWindow::new(3);
        window.record(FAIL, 0);
        window.record(SLOW, 0);
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        window.record(OK, 0);
        window.record(OK, 0); // evicts the failure
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        window.record(OK, 0);
        window.record(OK, 0);
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        window.reset(1);
        assert_eq!(window.counts(), WindowCounts::default());
    }

    #[test]
    fn time_window_forgets_old_intervals() {
        let second = 1_000_000_000;
        let window = TimeWindow::new(Duration::from_secs(20)); // 1 s buckets
        window.record(FAIL, 0, 0);
        window.record(OK, 5 * second, 0);
        assert_eq!(
            window.counts(5 * second),
            WindowCounts {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        // At 19.9 s both are still inside the last 20 s.
        assert_eq!(window.counts(19 * second + second / 2).calls, 2);
        // At 20 s the bucket of second 0 has left the window.
        assert_eq!(
            window.counts(20 * second),
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        // A new call reuses the bucket of second 0 and drops what it held.
        window.record(SLOW, 40 * second, 0);
        assert_eq!(
            window.counts(40 * second),
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        window.reset(1);
        assert_eq!(window.counts(40 * second), WindowCounts::default());
    }

    #[test]
    fn time_window_counts_are_exact_at_volume() {
        // 2.2 million calls in one 60 s window used to overflow a 21-bit
        // field and report 102,848.
        let second = 1_000_000_000;
        let window = TimeWindow::new(Duration::from_secs(60));
        for i in 0..2_200_000u64 {
            window.record(OK, (i % 50) * second, 0);
        }
        window.record(FAIL, 59 * second, 0);
        assert_eq!(
            window.counts(59 * second),
            WindowCounts {
                calls: 2_200_001,
                failures: 1,
                slow: 0
            }
        );
        // And up to 2^40 calls per window and beyond.
        let big = 1u64 << 40;
        window.record_many(FAIL, big, 59 * second, 0);
        window.record_many(SLOW, big, 58 * second, 0);
        let counts = window.counts(59 * second);
        assert_eq!(counts.calls, 2_200_001 + 2 * big);
        assert_eq!(counts.failures, 1 + big);
        assert_eq!(counts.slow, big);
        assert!(
            counts.is_consistent(Window::Time(TimeWindow::new(Duration::from_secs(1))).capacity())
        );
    }

    #[test]
    fn time_window_readers_never_see_more_failures_than_calls() {
        let window = std::sync::Arc::new(TimeWindow::new(Duration::from_millis(20)));
        let writer = {
            let window = window.clone();
            std::thread::spawn(move || {
                for i in 0..200_000u64 {
                    // Moves through intervals quickly so buckets roll over.
                    window.record(if i % 2 == 0 { FAIL } else { SLOW }, i * 10_000, 0);
                }
            })
        };
        for i in 0..200_000u64 {
            let counts = window.counts(i * 10_000);
            assert!(
                counts.failures <= counts.calls && counts.slow <= counts.calls,
                "{counts:?}"
            );
        }
        writer.join().unwrap();
    }

    #[test]
    fn concurrent_writers_keep_counts_exact() {
        let window = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let failure = (i + t) % 3 == 0;
                        window.record(
                            CallRecord {
                                failure,
                                slow: i % 5 == 0,
                            },
                            0,
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // With writers done, the running counts equal the slots' contents.
        let from_slots = window
            .slots
            .iter()
            .map(|slot| {
                WindowCounts::unpack(contribution(slot.load(Ordering::Acquire) & VALUE_MASK))
            })
            .fold(WindowCounts::default(), WindowCounts::add);
        assert_eq!(window.counts(), from_slots);
        assert_eq!(window.counts().calls, 64);
    }
}

/// Model checks with loom (`RUSTFLAGS="--cfg loom" cargo test -p
/// tower-hardening-breaker --lib --release loom_`, as `.ci/run` does):
/// every interleaving of the atomics below, up to loom's preemption bound.
#[cfg(all(test, loom))]
mod loom_models {
    use super::tests::{FAIL, OK, SLOW};
    use super::*;
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    /// Four slow calls fill a four-slot ring; two writers add a failure
    /// and then a success each. Every serial order leaves the four new
    /// calls: (4 calls, 2 failures, 0 slow). A cursor advanced by a load
    /// and a store reached (4, 0, 2): both failures erased, two slow calls
    /// older than the window kept.
    #[test]
    fn loom_two_writers_keep_exactly_the_last_n() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(4));
            for _ in 0..4 {
                window.record(SLOW, 0);
            }
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let window = window.clone();
                    thread::spawn(move || {
                        window.record(FAIL, 0);
                        window.record(OK, 0);
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            assert_eq!(
                window.counts(),
                WindowCounts {
                    calls: 4,
                    failures: 2,
                    slow: 0
                }
            );
        });
    }

    /// A writer that stalls between its claim and its write while the ring
    /// goes round past it costs only its own call: the slots hold exactly
    /// the last N positions claimed, and the counts are theirs.
    #[test]
    fn loom_a_stalled_writer_costs_only_its_own_call() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(2));
            window.record(SLOW, 0);
            window.record(SLOW, 0);
            let staller = {
                let window = window.clone();
                thread::spawn(move || {
                    window.record(FAIL, 0);
                })
            };
            window.record(OK, 0);
            window.record(FAIL, 0);
            staller.join().unwrap();
            let next = position(window.cursor.load(Ordering::Acquire));
            let mut held: Vec<u64> = window
                .slots
                .iter()
                .map(|slot| position(slot.load(Ordering::Acquire)))
                .collect();
            held.sort_unstable();
            assert_eq!(held, vec![next - 2, next - 1], "the last two positions");
            let from_slots = window
                .slots
                .iter()
                .map(|slot| {
                    WindowCounts::unpack(contribution(slot.load(Ordering::Acquire) & VALUE_MASK))
                })
                .fold(WindowCounts::default(), WindowCounts::add);
            assert_eq!(window.counts(), from_slots);
        });
    }

    /// A call admitted before a reset (generation 0) racing the reset and
    /// a failing call admitted after it (generation 1): the window ends
    /// with exactly the later call, whatever the interleaving.
    #[test]
    fn loom_a_reset_keeps_later_calls_and_drops_earlier_ones() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(2));
            window.record(OK, 0);
            let stale = {
                let window = window.clone();
                thread::spawn(move || {
                    window.record(FAIL, 0);
                })
            };
            window.reset(1);
            window.record(FAIL, 1);
            stale.join().unwrap();
            assert_eq!(
                window.counts(),
                WindowCounts {
                    calls: 1,
                    failures: 1,
                    slow: 0
                }
            );
        });
    }

    /// A writer of the old epoch replacing a failure with a success while
    /// a reset runs: a reading after the reset never shows that failure
    /// (a phantom that could trip the freshly closed breaker), however the
    /// writer's steps interleave with the sweep.
    #[test]
    fn loom_no_reading_after_a_reset_counts_an_older_failure() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(1));
            window.record(FAIL, 0);
            let stale = {
                let window = window.clone();
                thread::spawn(move || {
                    window.record(OK, 0);
                })
            };
            window.reset(1);
            window.record(OK, 1);
            let counts = window.counts();
            assert!(
                !counts.is_consistent(window.len) || counts.failures == 0,
                "{counts:?}"
            );
            stale.join().unwrap();
        });
    }

    /// What the breaker does after recording (`BreakerState::check_trip`).
    fn check(window: &CountWindow, seen: &Mutex<Vec<WindowCounts>>) {
        if let Some(counts) = window.counts_for_trip() {
            seen.lock().unwrap().push(counts);
        }
    }

    /// A success and a failure race for a one-slot ring. When the failure
    /// wins the later position, the success writer's update can land after
    /// the failure writer read the counts (torn: a failure without its
    /// call); the failure writer then asks for a second look, and the
    /// success writer takes it. Some trip check always sees the failure:
    /// no trip waits for the next failure.
    #[test]
    fn loom_no_trip_check_is_lost_to_a_torn_reading() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(1));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let writers: Vec<_> = [OK, FAIL]
                .into_iter()
                .map(|record| {
                    let (window, seen) = (window.clone(), seen.clone());
                    thread::spawn(move || {
                        if window.record(record, 0) {
                            check(&window, &seen);
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            let last = window.counts();
            if last.failures > 0 {
                assert!(
                    seen.lock()
                        .unwrap()
                        .iter()
                        .any(|counts| counts.failures >= 1),
                    "no trip check saw the failure the window ends with"
                );
            }
        });
    }

    /// A writer of an old interval racing the writer that rolls its bucket
    /// over to a new one: the old call never lands in the new interval (a
    /// stray failure there would be counted for a whole period).
    #[test]
    fn loom_a_bucket_rolled_over_holds_only_its_own_interval() {
        loom::model(|| {
            let window = Arc::new(TimeWindow::new(Duration::from_nanos(20)));
            // 1 ns buckets: interval 0 and interval 20 share bucket 0.
            window.record(OK, 0, 0);
            let old = {
                let window = window.clone();
                thread::spawn(move || {
                    window.record(FAIL, 0, 0);
                })
            };
            window.record(OK, 20, 0);
            old.join().unwrap();
            // The new call may be dropped if the old writer held its pin
            // past the roller's patience; the old failure never lands.
            let counts = window.counts(20);
            assert!(counts.failures == 0 && counts.calls <= 1, "{counts:?}");
        });
    }
}
