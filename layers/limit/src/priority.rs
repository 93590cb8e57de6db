//! Where a request's priority and cost come from.

use std::str::FromStr;

use http::HeaderName;
use tower_hardening_core::Priority;

/// Reads a request's priority. Any `Fn(&Req) -> Priority + Clone` is one.
pub trait PriorityOf<Req>: Clone {
    /// The request's priority.
    fn priority_of(&self, request: &Req) -> Priority;
}

impl<F, Req> PriorityOf<Req> for F
where
    F: Fn(&Req) -> Priority + Clone,
{
    fn priority_of(&self, request: &Req) -> Priority {
        self(request)
    }
}

/// The default for `http::Request`s: a [`Priority`] in the request's
/// extensions (put there by your own middleware), else `NORMAL`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionPriority;

impl<B> PriorityOf<http::Request<B>> for ExtensionPriority {
    fn priority_of(&self, request: &http::Request<B>) -> Priority {
        request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default()
    }
}

/// Reads the priority from a request header (`low`, `normal`, `high`,
/// `critical` or 0 to 255); a missing or malformed value gives the
/// default. **For trusted callers only**: anyone who can set the header
/// can claim any priority, so strip it at your edge.
///
/// ```
/// use tower_hardening_limit::{HeaderPriority, Priority, PriorityOf};
///
/// let from_header = HeaderPriority::new("x-priority");
/// let request = http::Request::builder().header("x-priority", "high").body(()).unwrap();
/// assert_eq!(from_header.priority_of(&request), Priority::HIGH);
/// let bad = http::Request::builder().header("x-priority", "\u{1F525}").body(()).unwrap();
/// assert_eq!(from_header.priority_of(&bad), Priority::NORMAL);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderPriority {
    header: HeaderName,
    default: Priority,
}

impl HeaderPriority {
    /// Reads `header`, falling back to `NORMAL`.
    ///
    /// # Panics
    ///
    /// If `header` is not a valid header name (a programming error, at
    /// start-up, never on the request path).
    pub fn new(header: &str) -> Self {
        HeaderPriority {
            header: HeaderName::from_str(header).expect("a valid header name"),
            default: Priority::NORMAL,
        }
    }

    /// The priority when the header is missing or malformed.
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.default = priority;
        self
    }
}

impl<B> PriorityOf<http::Request<B>> for HeaderPriority {
    fn priority_of(&self, request: &http::Request<B>) -> Priority {
        request
            .headers()
            .get(&self.header)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(self.default)
    }
}

/// How many units a request costs. Any `Fn(&Req) -> u64 + Clone` is one.
pub trait CostOf<Req>: Clone {
    /// The request's cost in pool units.
    fn cost_of(&self, request: &Req) -> u64;
}

impl<F, Req> CostOf<Req> for F
where
    F: Fn(&Req) -> u64 + Clone,
{
    fn cost_of(&self, request: &Req) -> u64 {
        self(request)
    }
}

/// Every request costs one unit (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct OneUnit;

impl<Req> CostOf<Req> for OneUnit {
    #[inline]
    fn cost_of(&self, _: &Req) -> u64 {
        1
    }
}
