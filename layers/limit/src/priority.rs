//! Where a request's priority and cost come from.
//!
//! ```
//! use tower_hardening_limit::{ContentLengthCost, CostOf, HeaderPriority, Priority, PriorityOf};
//!
//! let request = http::Request::builder()
//!     .header("x-priority", "255")
//!     .header("content-length", "1000000000")
//!     .body(())
//!     .unwrap();
//! // A client cannot claim more than the ceiling (HIGH by default)...
//! assert_eq!(HeaderPriority::new("x-priority").priority_of(&request), Priority::HIGH);
//! // ...nor more units than the pool has (here 65,536 bytes).
//! assert_eq!(ContentLengthCost::new().bounded_cost(&request, 65_536), 65_536);
//! ```

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
/// `critical` or 0 to 255), clamped to a [ceiling](Self::ceiling) (`HIGH`
/// unless you raise it); a missing or malformed value gives the default.
///
/// Whoever can set the header can claim any priority up to the ceiling,
/// so keep the ceiling below what your own traffic uses (`CRITICAL` for
/// health checks and control is set by the application, never by a
/// header), or strip the header at your edge.
///
/// ```
/// use tower_hardening_limit::{HeaderPriority, Priority, PriorityOf};
///
/// let from_header = HeaderPriority::new("x-priority");
/// let request = http::Request::builder().header("x-priority", "high").body(()).unwrap();
/// assert_eq!(from_header.priority_of(&request), Priority::HIGH);
/// let bad = http::Request::builder().header("x-priority", "\u{1F525}").body(()).unwrap();
/// assert_eq!(from_header.priority_of(&bad), Priority::NORMAL);
/// let greedy = http::Request::builder().header("x-priority", "critical").body(()).unwrap();
/// assert_eq!(from_header.priority_of(&greedy), Priority::HIGH);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderPriority {
    header: HeaderName,
    default: Priority,
    ceiling: Priority,
}

impl HeaderPriority {
    /// Reads `header`, falling back to `NORMAL`, at most `HIGH`.
    ///
    /// # Panics
    ///
    /// If `header` is not a valid header name (a programming error, at
    /// start-up, never on the request path).
    pub fn new(header: &str) -> Self {
        HeaderPriority {
            header: HeaderName::from_str(header).expect("a valid header name"),
            default: Priority::NORMAL,
            ceiling: Priority::HIGH,
        }
    }

    /// The priority when the header is missing or malformed (the
    /// application's choice, so not clamped to the ceiling).
    #[must_use]
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.default = priority;
        self
    }

    /// The highest priority a header value can claim (default `HIGH`);
    /// higher values are lowered to it. Raise it only for callers you
    /// trust as much as your own code.
    #[must_use]
    pub fn ceiling(mut self, ceiling: Priority) -> Self {
        self.ceiling = ceiling;
        self
    }
}

impl<B> PriorityOf<http::Request<B>> for HeaderPriority {
    fn priority_of(&self, request: &http::Request<B>) -> Priority {
        request
            .headers()
            .get(&self.header)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<Priority>().ok())
            .map_or(self.default, |claimed| claimed.min(self.ceiling))
    }
}

/// How many units a request costs. Any `Fn(&Req) -> u64 + Clone` is one.
///
/// A cost the application computes is taken as it is: more than the
/// pool's capacity fails at once with
/// [`Unsatisfiable`](crate::Unsatisfiable). A cost a client declares
/// (such as [`ContentLengthCost`]) is clamped to the capacity instead,
/// through [`bounded_cost`](Self::bounded_cost).
pub trait CostOf<Req>: Clone {
    /// The request's cost in pool units.
    fn cost_of(&self, request: &Req) -> u64;

    /// The cost the layer asks the pool for, given the pool's capacity
    /// now. By default [`cost_of`](Self::cost_of), unclamped.
    fn bounded_cost(&self, request: &Req, capacity: u64) -> u64 {
        let _ = capacity;
        self.cost_of(request)
    }
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

/// An `http::Request` costs its declared `Content-Length`, in units of
/// [`bytes_per_unit`](Self::bytes_per_unit) bytes (rounded up), for a
/// pool of bytes (or KiB, ...) of request bodies in memory.
///
/// The length is the client's claim, so the layer clamps it to the pool's
/// capacity: a client declaring more than the pool has waits for the
/// whole pool, as the largest honest request would, instead of failing
/// or sitting in the queue for ever. A request without a readable
/// `Content-Length` (chunked, malformed) costs
/// [`default_cost`](Self::default_cost); at least 1 either way. The
/// declared length is not enforced here: pair this with a body limit
/// (tower-http's `RequestBodyLimitLayer`) so a body cannot be larger than
/// what it paid for.
///
/// ```
/// use tower_hardening_limit::{ContentLengthCost, CostOf};
///
/// let cost = ContentLengthCost::new().bytes_per_unit(1_024).default_cost(64);
/// let request = |length: &str| {
///     http::Request::builder().header("content-length", length).body(()).unwrap()
/// };
/// assert_eq!(cost.bounded_cost(&request("4096"), 10_000), 4);
/// assert_eq!(cost.bounded_cost(&request("4097"), 10_000), 5);
/// assert_eq!(cost.bounded_cost(&request("not a number"), 10_000), 64);
/// assert_eq!(cost.bounded_cost(&request("99999999999999999999"), 10_000), 10_000);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ContentLengthCost {
    bytes_per_unit: u64,
    default: u64,
}

impl Default for ContentLengthCost {
    fn default() -> Self {
        ContentLengthCost::new()
    }
}

impl ContentLengthCost {
    /// One unit per byte; 1 unit without a `Content-Length`.
    pub fn new() -> Self {
        ContentLengthCost {
            bytes_per_unit: 1,
            default: 1,
        }
    }

    /// How many bytes one unit stands for (at least 1).
    #[must_use]
    pub fn bytes_per_unit(mut self, bytes: u64) -> Self {
        self.bytes_per_unit = bytes.max(1);
        self
    }

    /// The cost of a request without a readable `Content-Length`.
    #[must_use]
    pub fn default_cost(mut self, units: u64) -> Self {
        self.default = units;
        self
    }
}

impl<B> CostOf<http::Request<B>> for ContentLengthCost {
    fn cost_of(&self, request: &http::Request<B>) -> u64 {
        declared_length(request)
            .map_or(self.default, |bytes| bytes.div_ceil(self.bytes_per_unit))
            .max(1)
    }

    fn bounded_cost(&self, request: &http::Request<B>, capacity: u64) -> u64 {
        self.cost_of(request).min(capacity.max(1))
    }
}

/// The `Content-Length` a request declares, if it is a number.
fn declared_length<B>(request: &http::Request<B>) -> Option<u64> {
    let digits = request
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .as_bytes()
        .trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Digits only, so the only parse failure is overflow: more than any
    // pool has.
    let text = std::str::from_utf8(digits).ok()?;
    Some(text.parse().unwrap_or(u64::MAX))
}
