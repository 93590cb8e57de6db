//! Striped state for the request path: each thread writes its own cache
//! line, and readers add the stripes up. A counter that every call bumps
//! is one shared cache line that every core must own in turn; striped, a
//! core keeps its line, and a call costs what it costs on one core.
//!
//! ```
//! use tower_hardening_core::stripe::StripedCounter;
//!
//! let calls = StripedCounter::new();
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| (0..1_000).for_each(|_| calls.add(1)));
//!     }
//! });
//! assert_eq!(calls.sum(), 4_000);
//! ```

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Keeps a value on cache lines of its own (128 bytes: two lines, since
/// x86's adjacent-line prefetcher pairs them), so that writes to it do not
/// evict its neighbours on another core.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The most stripes any striped value has: beyond 16, threads share
/// stripes (each still spreads the load 16 ways) and memory stays bounded.
pub const MAX_STRIPES: usize = 16;

/// How many stripes a striped value has on this machine: the number of
/// CPUs this process may use, rounded up to a power of two, at most
/// [`MAX_STRIPES`].
pub fn stripes() -> usize {
    static STRIPES: OnceLock<usize> = OnceLock::new();
    *STRIPES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .next_power_of_two()
            .min(MAX_STRIPES)
    })
}

/// The stripe of the calling thread, among `stripes()` (a mask of a
/// power of two). Threads take numbers in the order they first ask, so
/// threads started together (a runtime's workers, say) usually land on
/// different stripes; nothing guarantees it, and two threads on one
/// stripe are still correct, only slower.
#[inline]
pub fn index() -> usize {
    thread_number() & (stripes() - 1)
}

/// The calling thread's number, in the order threads first asked; every
/// striped value masks it with its own length (a power of two). Read it
/// once and pass it to [`Striped::at`] and [`PerStripe::stripe_at`] when
/// one call reaches several striped values (one thread-local read).
#[inline]
pub fn thread_number() -> usize {
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    NUMBER.with(|number| {
        let n = number.get();
        if n != usize::MAX {
            return n;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        number.set(n);
        n
    })
}

/// One value per stripe, each on cache lines of its own.
#[derive(Debug)]
pub struct Striped<T> {
    stripes: Box<[CachePadded<T>]>,
}

impl<T> Striped<T> {
    /// `stripes()` values made by `make`.
    pub fn new_with(mut make: impl FnMut() -> T) -> Self {
        Striped {
            stripes: (0..stripes()).map(|_| CachePadded(make())).collect(),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub fn local(&self) -> &T {
        self.at(thread_number())
    }

    /// The stripe of the thread numbered `thread` (from
    /// [`thread_number`]).
    #[inline]
    pub fn at(&self, thread: usize) -> &T {
        // The length is a power of two: the mask keeps the index in
        // bounds.
        &self.stripes[thread & (self.stripes.len() - 1)]
    }

    /// Every stripe.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|s| &s.0)
    }

    /// How many stripes there are.
    pub fn len(&self) -> usize {
        self.stripes.len()
    }

    /// Never true: there is at least one stripe.
    pub fn is_empty(&self) -> bool {
        self.stripes.is_empty()
    }
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Striped::new_with(T::default)
    }
}

/// A value each thread reaches through a reference count of its own
/// stripe: [`get`](Self::get) clones the `Arc` of the calling thread's
/// stripe, so a response future can hold the layer's shared parts
/// without every call, on every core, writing the one reference count
/// they would otherwise share. Each stripe holds a clone of the value
/// (for handles: a few more `Arc`s, cloned once, here).
///
/// ```
/// use tower_hardening_core::stripe::PerStripe;
///
/// let name = PerStripe::new(String::from("audio"));
/// let held = name.get(); // what a response future keeps
/// assert_eq!(held.as_str(), "audio");
/// ```
#[derive(Debug)]
pub struct PerStripe<T> {
    stripes: Box<[std::sync::Arc<CachePadded<T>>]>,
}

impl<T: Clone> PerStripe<T> {
    /// `stripes()` clones of `value`, each in an allocation of its own
    /// (its reference counts on lines of their own).
    pub fn new(value: T) -> Self {
        PerStripe {
            stripes: (0..stripes())
                .map(|_| std::sync::Arc::new(CachePadded(value.clone())))
                .collect(),
        }
    }
}

impl<T> PerStripe<T> {
    /// `stripes()` values made by `make`, each in an allocation of its
    /// own.
    pub fn new_with(mut make: impl FnMut() -> T) -> Self {
        PerStripe {
            stripes: (0..stripes())
                .map(|_| std::sync::Arc::new(CachePadded(make())))
                .collect(),
        }
    }

    /// A counted reference through the calling thread's stripe.
    #[inline]
    pub fn get(&self) -> std::sync::Arc<CachePadded<T>> {
        std::sync::Arc::clone(self.stripe())
    }

    /// The value, read through the calling thread's stripe without
    /// counting a reference.
    #[inline]
    pub fn local(&self) -> &T {
        &self.stripe().0
    }

    /// The calling thread's stripe: read the value through it, and clone
    /// it only when a reference must be kept (one thread lookup for both).
    #[inline]
    pub fn stripe(&self) -> &std::sync::Arc<CachePadded<T>> {
        self.stripe_at(thread_number())
    }

    /// The stripe of the thread numbered `thread` (from
    /// [`thread_number`]).
    #[inline]
    pub fn stripe_at(&self, thread: usize) -> &std::sync::Arc<CachePadded<T>> {
        &self.stripes[thread & (self.stripes.len() - 1)]
    }
}

impl<T> PerStripe<std::sync::Arc<T>> {
    /// A counted reference to the shared value through the calling
    /// thread's stripe.
    #[inline]
    pub fn held(&self) -> Held<T> {
        Held::Striped(self.get())
    }
}

/// A counted reference to a shared value: its own `Arc`, or a stripe's
/// (from [`PerStripe::held`]), whose count only that stripe's threads
/// write.
#[derive(Debug)]
pub enum Held<T> {
    /// The value's own `Arc`.
    Direct(std::sync::Arc<T>),
    /// A stripe's `Arc` of the value's `Arc`.
    Striped(std::sync::Arc<CachePadded<std::sync::Arc<T>>>),
}

impl<T> std::ops::Deref for Held<T> {
    type Target = std::sync::Arc<T>;

    #[inline]
    fn deref(&self) -> &std::sync::Arc<T> {
        match self {
            Held::Direct(value) => value,
            Held::Striped(stripe) => &stripe.0,
        }
    }
}

impl<T> From<std::sync::Arc<T>> for Held<T> {
    fn from(value: std::sync::Arc<T>) -> Self {
        Held::Direct(value)
    }
}

/// A counter that threads add to without sharing a cache line
/// (`LongAdder`): `add` is one uncontended atomic add on the calling
/// thread's stripe; `sum` reads every stripe. A sum taken while others
/// add lies between the total before those adds and the total after
/// them; it is exact once they have finished.
#[derive(Debug, Default)]
pub struct StripedCounter {
    stripes: Striped<AtomicU64>,
}

impl StripedCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        StripedCounter::default()
    }

    /// Adds `n` (wrapping at 2^64).
    #[inline]
    pub fn add(&self, n: u64) {
        self.stripes.local().fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` on the stripe of the thread numbered `thread` (from
    /// [`thread_number`], read once for several striped values).
    #[inline]
    pub fn add_at(&self, thread: usize, n: u64) {
        self.stripes.at(thread).fetch_add(n, Ordering::Relaxed);
    }

    /// The total of every add so far.
    pub fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_a_bounded_power_of_two() {
        let n = stripes();
        assert!(n.is_power_of_two() && n <= MAX_STRIPES);
        assert!(index() < n);
    }

    #[test]
    fn threads_land_on_stripes_and_nothing_is_lost() {
        let counter = StripedCounter::new();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100_000 {
                        counter.add(1);
                    }
                });
            }
        });
        assert_eq!(counter.sum(), 800_000);
    }

    #[test]
    fn each_stripe_has_lines_of_its_own() {
        let striped: Striped<AtomicU64> = Striped::default();
        let addresses: Vec<usize> = striped
            .iter()
            .map(|s| std::ptr::from_ref(s) as usize)
            .collect();
        for pair in addresses.windows(2) {
            assert!(pair[1] - pair[0] >= 128);
        }
    }
}
