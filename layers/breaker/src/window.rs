//! Sliding windows of call results, updated with atomics only.
//!
//! The count window keeps its three counts — calls, failures, slow calls —
//! packed in one `AtomicU64` (21 bits each; it never holds more than
//! 1,000,000 calls), so a reader sees a consistent triple with one load.
//! The time window's buckets hold any number of calls, so each keeps three
//! separate 64-bit counters, written and read in an order that keeps
//! `failures <= calls` and `slow <= calls` for every reader.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// The largest count window (the packed fields hold up to 2^21 - 1).
pub(crate) const MAX_COUNT_WINDOW: u32 = 1_000_000;

/// How many buckets a time window is cut into: a call is forgotten between
/// `period` and `period + period / TIME_BUCKETS` after it completed.
pub(crate) const TIME_BUCKETS: u32 = 20;

pub(crate) use tower_hardening_core::stripe::CachePadded;

/// One finished call, as the window stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallRecord {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl CallRecord {
    /// Slot encoding: bit 0 set for any recorded call, bit 1 failure, bit 2 slow.
    fn encode(self) -> u8 {
        1 | (u8::from(self.failure) << 1) | (u8::from(self.slow) << 2)
    }
}

/// A slot holding a call that neither failed nor was slow.
const SUCCESS: u8 = 1;

/// The packed counts one slot value contributes.
fn contribution(slot: u8) -> u64 {
    let slot = u64::from(slot);
    (slot & 1) | (((slot >> 1) & 1) << FIELD_BITS) | (((slot >> 2) & 1) << (2 * FIELD_BITS))
}

/// Calls, failures and slow calls currently in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WindowCounts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl WindowCounts {
    fn unpack(packed: u64) -> Self {
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
    /// window that catches two writers mid-update may see a borrowed field,
    /// and must not act on it.
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
    #[inline]
    pub(crate) fn record(&self, record: CallRecord, now_nanos: u64) {
        match self {
            Window::Count(window) => window.record(record),
            Window::Time(window) => window.record(record, now_nanos),
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> WindowCounts {
        match self {
            Window::Count(window) => window.counts(),
            Window::Time(window) => window.counts(now_nanos),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(window) => window.reset(),
            Window::Time(window) => window.reset(),
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

/// The last N calls: a ring of one-byte slots plus packed running counts.
///
/// A healthy service's call (a success while every slot holds one) costs
/// one load of the counts and writes nothing: the cursor stays, since
/// every slot is alike. Otherwise a success replacing a success costs a
/// load and a store of the cursor (a line every core writes) and a load
/// of the slot: no locked instruction.
///
/// Writers keep one rule that makes the counts never underflow: a value's
/// contribution is added to the counts *before* the value is written into
/// a slot, so whoever later swaps it out subtracts something already
/// added. A slot that already holds the same value is left alone.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// Lemire's fastmod constant for `slots.len()`: `next % len` without a
    /// division on the hot path.
    fastmod: u64,
    next: CachePadded<AtomicU32>,
    counts: AtomicU64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_COUNT_WINDOW);
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            fastmod: (u64::MAX / u64::from(size)).wrapping_add(1),
            next: CachePadded(AtomicU32::new(0)),
            counts: AtomicU64::new(0),
        }
    }

    /// `n % slots.len()` by multiplication (exact for every `u32` n).
    #[inline]
    fn slot_index(&self, n: u32) -> usize {
        let low = self.fastmod.wrapping_mul(u64::from(n));
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    #[inline]
    pub(crate) fn record(&self, record: CallRecord) {
        let value = record.encode();
        // Every slot holds a plain success and so does this call: whichever
        // slot it took, the ring would be the same, and the next call that
        // is not a plain success still stays exactly N calls. So the cursor
        // stays where it is: a healthy service's calls write nothing that
        // another core reads, only read the counts. (Two writers racing,
        // or a reset part-way, can make the counts read as a full ring of
        // successes while a slot is still empty; a success dropped then
        // is lost as a colliding one would be. A failure or slow call is
        // never dropped: its field is never zero while one is in a slot.)
        if value == SUCCESS && self.counts.load(Ordering::Relaxed) == self.slots.len() as u64 {
            return;
        }
        // The cursor is advanced with a plain load and store, not a locked
        // `fetch_add`: that keeps a full barrier off every call. Two calls
        // finishing at the same instant on two threads may then take the
        // same slot, and the later one replaces the earlier; which one wins
        // does not depend on the outcome (except that a success on a ring
        // of successes takes no slot, so it never replaces a failure: the
        // safe side), and one thread alone is exact. The cursor wraps at
        // 2^32; unless the size divides 2^32 the ring then skips ahead
        // once, forgetting a few calls early.
        let cursor = self.next.load(Ordering::Relaxed);
        self.next.store(cursor.wrapping_add(1), Ordering::Relaxed);
        let slot = &self.slots[self.slot_index(cursor)];
        if slot.load(Ordering::Acquire) == value {
            return;
        }
        self.counts.fetch_add(contribution(value), Ordering::AcqRel);
        let old = slot.swap(value, Ordering::AcqRel);
        self.counts.fetch_sub(contribution(old), Ordering::AcqRel);
    }

    pub(crate) fn counts(&self) -> WindowCounts {
        WindowCounts::unpack(self.counts.load(Ordering::Acquire))
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::AcqRel);
            self.counts.fetch_sub(contribution(old), Ordering::AcqRel);
        }
        self.next.store(0, Ordering::Relaxed);
    }
}

const EMPTY: u64 = u64::MAX;
const ROLLING_OVER: u64 = u64::MAX - 1;

#[derive(Debug)]
struct Bucket {
    /// Which bucket-width interval since the breaker's start this bucket
    /// holds, or `EMPTY`, or `ROLLING_OVER` while one writer reuses it.
    epoch: AtomicU64,
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
        // A writer stalled for a whole period between its two adds can
        // land a failure in a bucket rolled over meanwhile; clamping keeps
        // one such stray from making the window inconsistent.
        WindowCounts {
            calls,
            failures: failures.min(calls),
            slow: slow.min(calls),
        }
    }
}

/// The calls of the last `period`: `TIME_BUCKETS` buckets of 64-bit
/// counters, each tagged with the interval (epoch) it holds.
///
/// A writer whose epoch matches adds with one `fetch_add` per counter it
/// touches (one for a success); the first writer of a new interval claims
/// the bucket by swinging its epoch to `ROLLING_OVER`, zeroes the counters,
/// adds its own call, then publishes the new epoch. Readers sum the buckets
/// whose epoch lies within the period and was the same before and after
/// the counters were read.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
}

impl TimeWindow {
    pub(crate) fn new(period: Duration) -> Self {
        let bucket_nanos = (period.as_nanos() / u128::from(TIME_BUCKETS)).max(1);
        TimeWindow {
            buckets: (0..TIME_BUCKETS)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(EMPTY),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
            bucket_nanos: u64::try_from(bucket_nanos).unwrap_or(u64::MAX),
        }
    }

    fn epoch_of(&self, now_nanos: u64) -> u64 {
        // Below `ROLLING_OVER` whatever the clock says.
        (now_nanos / self.bucket_nanos).min(ROLLING_OVER - 1)
    }

    pub(crate) fn record(&self, record: CallRecord, now_nanos: u64) {
        self.record_many(record, 1, now_nanos);
    }

    /// Records `n` identical calls at once.
    pub(crate) fn record_many(&self, record: CallRecord, n: u64, now_nanos: u64) {
        let epoch = self.epoch_of(now_nanos);
        let bucket = &self.buckets[(epoch % u64::from(TIME_BUCKETS)) as usize];
        let mut spins = 0u32;
        loop {
            let current = bucket.epoch.load(Ordering::Acquire);
            if current == epoch {
                bucket.add(record, n);
                return;
            }
            if current == ROLLING_OVER {
                // Another writer is zeroing the bucket: a few stores. If it
                // was descheduled meanwhile, drop this call rather than
                // spin on the request path.
                spins += 1;
                if spins > 1_000 {
                    return;
                }
                std::hint::spin_loop();
                continue;
            }
            if current != EMPTY && current > epoch {
                // A newer interval already owns the bucket: this call is
                // older than the whole window.
                return;
            }
            if bucket
                .epoch
                .compare_exchange(current, ROLLING_OVER, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                bucket.calls.store(0, Ordering::Release);
                bucket.failures.store(0, Ordering::Release);
                bucket.slow.store(0, Ordering::Release);
                bucket.add(record, n);
                bucket.epoch.store(epoch, Ordering::Release);
                return;
            }
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> WindowCounts {
        let newest = self.epoch_of(now_nanos);
        let oldest = newest.saturating_sub(u64::from(TIME_BUCKETS) - 1);
        let mut total = WindowCounts::default();
        for bucket in self.buckets.iter() {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if epoch == EMPTY || epoch == ROLLING_OVER || epoch < oldest || epoch > newest {
                continue;
            }
            let counts = bucket.read();
            // Rolled over to a newer interval while being read: the counts
            // may mix two intervals, and the newer one is not in this
            // reading's window anyway.
            if bucket.epoch.load(Ordering::Acquire) != epoch {
                continue;
            }
            total = total.add(counts);
        }
        total
    }

    pub(crate) fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.epoch.store(EMPTY, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: CallRecord = CallRecord {
        failure: false,
        slow: false,
    };
    const FAIL: CallRecord = CallRecord {
        failure: true,
        slow: false,
    };
    const SLOW: CallRecord = CallRecord {
        failure: false,
        slow: true,
    };

    #[test]
    fn a_healthy_ring_is_not_written_and_stays_exact() {
        let window = CountWindow::new(100);
        (0..100).for_each(|_| window.record(OK));
        let cursor = window.next.load(Ordering::Relaxed);
        (0..1_037).for_each(|_| window.record(OK));
        assert_eq!(
            window.next.load(Ordering::Relaxed),
            cursor,
            "nothing written"
        );
        // A failure still stays exactly 100 calls, itself included.
        window.record(FAIL);
        for i in 0..99 {
            window.record(OK);
            assert_eq!(window.counts().failures, 1, "{i} successes after it");
        }
        window.record(OK);
        assert_eq!(window.counts().failures, 0);
        // A slow success is not a plain one: it is written.
        window.record(SLOW);
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
                    window.record(FAIL);
                    done_tx.send(()).unwrap();
                }
            });
            for i in 0..10_000u32 {
                if i % 20 == 19 {
                    to_slow.send(()).unwrap();
                    done.recv().unwrap();
                } else {
                    window.record(OK);
                }
                if i >= 99 {
                    assert_eq!(window.counts().failures, 5, "after {i}");
                }
            }
            drop(to_slow);
        });
    }

    #[test]
    fn a_count_window_forgets_calls_made_on_other_threads() {
        let window = CountWindow::new(100);
        std::thread::scope(|s| {
            s.spawn(|| (0..100).for_each(|_| window.record(FAIL)));
        });
        assert_eq!(window.counts().failures, 100);
        std::thread::scope(|s| {
            s.spawn(|| (0..100).for_each(|_| window.record(OK)));
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
        window.record(FAIL);
        window.record(SLOW);
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        window.record(OK);
        window.record(OK); // evicts the failure
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        window.record(OK);
        window.record(OK);
        assert_eq!(
            window.counts(),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        window.reset();
        assert_eq!(window.counts(), WindowCounts::default());
    }

    #[test]
    fn time_window_forgets_old_intervals() {
        let second = 1_000_000_000;
        let window = TimeWindow::new(Duration::from_secs(20)); // 1 s buckets
        window.record(FAIL, 0);
        window.record(OK, 5 * second);
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
        window.record(SLOW, 40 * second);
        assert_eq!(
            window.counts(40 * second),
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        window.reset();
        assert_eq!(window.counts(40 * second), WindowCounts::default());
    }

    #[test]
    fn time_window_counts_are_exact_at_volume() {
        // 2.2 million calls in one 60 s window used to overflow a 21-bit
        // field and report 102,848.
        let second = 1_000_000_000;
        let window = TimeWindow::new(Duration::from_secs(60));
        for i in 0..2_200_000u64 {
            window.record(OK, (i % 50) * second);
        }
        window.record(FAIL, 59 * second);
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
        window.record_many(FAIL, big, 59 * second);
        window.record_many(SLOW, big, 58 * second);
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
                    window.record(if i % 2 == 0 { FAIL } else { SLOW }, i * 10_000);
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
    fn fastmod_matches_the_remainder() {
        for size in [1u32, 2, 3, 7, 10, 100, 999, 65_536, MAX_COUNT_WINDOW] {
            let window = CountWindow::new(size);
            for n in [
                0u32,
                1,
                2,
                size - 1,
                size,
                size + 1,
                12_345_678,
                u32::MAX - 1,
                u32::MAX,
            ] {
                assert_eq!(window.slot_index(n), (n % size) as usize, "{n} % {size}");
            }
        }
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
                        window.record(CallRecord {
                            failure,
                            slow: i % 5 == 0,
                        });
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
            .map(|slot| WindowCounts::unpack(contribution(slot.load(Ordering::Acquire))))
            .fold(WindowCounts::default(), WindowCounts::add);
        assert_eq!(window.counts(), from_slots);
        assert_eq!(window.counts().calls, 64);
    }
}
