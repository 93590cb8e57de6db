//! Two small tools every layer needs in the same shape: a mutex that a
//! panic elsewhere does not make unusable, and a guard that records what a
//! panic interrupted where the unwind passes.
//!
//! ```
//! use std::sync::Mutex;
//! use tower_hardening_core::sync::{lock, on_unwind};
//!
//! let count = Mutex::new(0);
//! *lock(&count) += 1;
//! assert_eq!(*lock(&count), 1);
//!
//! // A permit is handed to `on_unwind` only if the body panics.
//! let mut permit = Some("permit");
//! let answer = on_unwind(&mut permit, |p| panic!("not called for {p}"), || 42);
//! assert_eq!((answer, permit), (42, Some("permit")));
//! ```

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning.
///
/// Every mutex in this workspace guards data that stays consistent between
/// statements (counters, queues updated in one step), so a panic in
/// another holder does not leave it half-written; refusing the lock
/// forever after would turn one panic into an outage.
#[inline]
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `body`; if it panics, takes the value out of `slot` (if any) and
/// hands it to `handler` while the panic passes, then lets it go on.
///
/// A response future wraps its inner poll in this so that a panic in the
/// inner service is recorded as a failure where it happens, not when the
/// future is dropped: under tower-http's `CatchPanic` (or any
/// `catch_unwind`) the future is dropped long after the unwind ended, when
/// `std::thread::panicking()` no longer tells. Costs one flag when nothing
/// panics.
#[inline]
pub fn on_unwind<T, R>(
    slot: &mut Option<T>,
    handler: impl FnOnce(T),
    body: impl FnOnce() -> R,
) -> R {
    struct Guard<'a, T, H: FnOnce(T)> {
        slot: &'a mut Option<T>,
        handler: Option<H>,
    }

    impl<T, H: FnOnce(T)> Drop for Guard<'_, T, H> {
        #[inline]
        fn drop(&mut self) {
            // Still armed: `body` did not return, so it is unwinding.
            if let Some(handler) = self.handler.take()
                && let Some(value) = self.slot.take()
            {
                handler(value);
            }
        }
    }

    let mut guard = Guard {
        slot,
        handler: Some(handler),
    };
    let result = body();
    guard.handler = None;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[test]
    fn a_panic_hands_the_value_over_once() {
        let mut slot = Some(7);
        let mut seen = None;
        let caught = catch_unwind(AssertUnwindSafe(|| {
            on_unwind(&mut slot, |v| seen = Some(v), || panic!("inner service"))
        }));
        assert!(caught.is_err());
        assert_eq!(seen, Some(7));
        assert_eq!(slot, None);
    }

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let mutex = Mutex::new(1);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _guard = mutex.lock().unwrap();
            panic!("holder panics");
        }));
        assert!(mutex.is_poisoned());
        assert_eq!(*lock(&mutex), 1);
    }
}
