//! A request's priority, as the rate limiter reads it.

use tower_hardening_core::Priority;

/// How a rate limiter finds the priority of a request of type `Req`.
pub trait PriorityOf<Req> {
    /// The request's priority.
    fn priority_of(&self, request: &Req) -> Priority;
}

/// Every request at one priority (the default: NORMAL).
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedPriority(pub Priority);

impl<Req> PriorityOf<Req> for FixedPriority {
    #[inline]
    fn priority_of(&self, _: &Req) -> Priority {
        self.0
    }
}

/// An HTTP request's priority: a [`Priority`] the application put in its
/// extensions, else the one given here. No header is read: a client
/// chooses nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionPriority(pub Priority);

impl<B> PriorityOf<http::Request<B>> for ExtensionPriority {
    #[inline]
    fn priority_of(&self, request: &http::Request<B>) -> Priority {
        request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or(self.0)
    }
}
