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

use crate::{Classify, ClassifyEos, Outcome};

thread_local! {
    static ANSWERED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the value the current `poll` returns as a fallback's answer.
/// Called by a fallback's future just before it returns that answer.
#[inline]
pub fn mark_answered() {
    ANSWERED.with(|answered| answered.set(true));
}

/// Clears the mark before a watcher polls its inner future; after the
/// poll, [`take_mark`] says whether a fallback answered in it.
#[inline]
pub fn clear_mark() {
    ANSWERED.with(|answered| answered.set(false));
}

/// Whether a fallback marked the answer its watcher's inner future just
/// returned (since [`clear_mark`]); clears the mark.
#[inline]
pub fn take_mark() -> bool {
    ANSWERED.with(|answered| answered.replace(false))
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

/// A classifier that also counts a fallback's answers: what a metrics
/// layer above a fallback classifies with (`MetricsLayer::counting_fallbacks`).
/// It classifies as `C` does.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingFallbacks<C>(pub C);

impl<C, Res, E> Classify<Res, E> for CountingFallbacks<C>
where
    C: Classify<Res, E>,
{
    const COUNTS_FALLBACKS: bool = true;

    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self.0.classify(result)
    }
}

impl<C: ClassifyEos<B>, B> ClassifyEos<B> for CountingFallbacks<C> {
    #[inline]
    fn classify_head(&self, response: &http::Response<B>) -> Option<Outcome> {
        self.0.classify_head(response)
    }

    #[inline]
    fn classify_end(&self, trailers: Option<&http::HeaderMap>) -> Outcome {
        self.0.classify_end(trailers)
    }
}
