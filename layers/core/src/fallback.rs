//! How a fallback tells the metrics layer above it that the answer it
//! returns is a fallback's, whatever the response type.
//!
//! A fallback's answer is an `Ok` like any other: nothing in a response of
//! an arbitrary type can say where it came from. So the fallback's future
//! marks the answer on the thread that polls it, in the same `poll` call
//! that returns it, and the layer above reads the mark right after its
//! inner future returned, in that same call: nothing else runs on the
//! thread in between. [`watch`] clears the mark before it polls and puts
//! back what it found, so a mark never leaks from one request to another,
//! and nested watchers each see only their own inner future's answer.
//!
//! ```
//! use tower_hardening_core::fallback;
//!
//! let (answer, fell_back) = fallback::watch(|| {
//!     fallback::mark_answered();
//!     "cached"
//! });
//! assert_eq!(answer, "cached");
//! assert!(fell_back);
//!
//! let (_, fell_back) = fallback::watch(|| "fresh");
//! assert!(!fell_back);
//! ```

use std::cell::Cell;

thread_local! {
    static ANSWERED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the value the current `poll` returns as a fallback's answer.
/// Called by a fallback's future just before it returns that answer.
#[inline]
pub fn mark_answered() {
    ANSWERED.with(|answered| answered.set(true));
}

/// Runs `poll` (one poll of an inner future) and says whether a fallback
/// marked its answer during it.
#[inline]
pub fn watch<R>(poll: impl FnOnce() -> R) -> (R, bool) {
    let outer = ANSWERED.with(|answered| answered.replace(false));
    let result = poll();
    let answered = ANSWERED.with(|answered| answered.replace(outer));
    (result, answered)
}
