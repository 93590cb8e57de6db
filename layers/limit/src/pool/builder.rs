//! Building a pool: its units, its queue and its leases, checked before
//! anything runs.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_limit::ResourcePool;
//!
//! let err = ResourcePool::builder("slots")
//!     .capacity(8)
//!     .max_queue(ResourcePool::MAX_QUEUE + 1)
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err.field(), "max_queue");
//!
//! // A duration too long for the clock means "never", not a panic.
//! let pool = ResourcePool::builder("slots")
//!     .capacity(8)
//!     .queue_timeout(Duration::MAX)
//!     .aging(Duration::MAX)
//!     .build()
//!     .unwrap();
//! assert_eq!(pool.stats().capacity, 8);
//! ```

use std::sync::Arc;
use std::time::Duration;

use tower_hardening_core::{ConfigError, EventSink};

use super::handle::ResourcePool;
use super::reclaim::reclaim_expired;
use super::resource::Resource;
use super::state::{PoolInner, Settings};

/// Builds a [`ResourcePool`]: either named resources
/// ([`resources`](Self::resources)) or interchangeable units
/// ([`capacity`](Self::capacity)). Made by [`ResourcePool::builder`].
///
/// | setting | default | allowed |
/// | --- | --- | --- |
/// | `capacity` | none | 1 to `i64::MAX` |
/// | `max_queue` | 1,000 waiters | 0 to [`ResourcePool::MAX_QUEUE`] |
/// | `queue_timeout` | 5 s | above zero |
/// | `lease_ttl` | none: leases last until released | above zero |
/// | `aging` | none: priorities never rise while waiting | above zero |
///
/// A duration too long for the clock to add to "now" means "never": a
/// queue timeout that never fires, a lease that never expires, a priority
/// that never ages. Nothing panics on it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder {
    name: Arc<str>,
    resources: Option<Vec<Resource>>,
    capacity: Option<u64>,
    max_queue: usize,
    queue_timeout: Duration,
    lease_ttl: Option<Duration>,
    aging: Option<Duration>,
    events: Option<EventSink>,
}

impl PoolBuilder {
    pub(super) fn new(name: Arc<str>) -> Self {
        PoolBuilder {
            name,
            resources: None,
            capacity: None,
            max_queue: 1_000,
            queue_timeout: Duration::from_secs(5),
            lease_ttl: None,
            aging: None,
            events: None,
        }
    }

    /// The pool's units are these named resources.
    pub fn resources(mut self, resources: impl IntoIterator<Item = Resource>) -> Self {
        self.resources = Some(resources.into_iter().collect());
        self
    }

    /// The pool's units are `capacity` interchangeable units (slots,
    /// bytes, tokens).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The most requests that may wait, at most
    /// [`ResourcePool::MAX_QUEUE`]; beyond it they fail at once with
    /// `Overloaded`. 0: nobody waits.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// How long a request may wait before it fails with `QueueTimeout`;
    /// also the `Retry-After` hint of refusals (at most a minute).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Leases older than this are reclaimed (the holder sees it through
    /// [`Lease::is_reclaimed`](crate::Lease::is_reclaimed), and an event
    /// is published).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// A waiter gains one priority level per `interval` waited, up to
    /// `HIGH`, so low priorities are not starved by a stream of high ones
    /// (and never outrank `CRITICAL` work by waiting).
    pub fn aging(mut self, interval: Duration) -> Self {
        self.aging = Some(interval);
        self
    }

    /// Publishes sheds and lease reclaims to `sink`.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// Checks the settings and builds the pool. With a lease TTL, the task
    /// that reclaims expired leases is spawned on the current tokio runtime
    /// (an error outside one).
    pub fn build(self) -> Result<ResourcePool, ConfigError> {
        self.validate()?;
        let invalid = |field, value: String, allowed| {
            ConfigError::new("resource pool", field, value, allowed)
        };
        let runtime = match self.lease_ttl {
            Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|_| {
                invalid(
                    "lease_ttl",
                    format!("{:?}", self.lease_ttl),
                    "a tokio runtime to reclaim leases on (build the pool inside one)",
                )
            })?),
            None => None,
        };
        let inner = Arc::new(PoolInner::new(
            Settings {
                name: self.name,
                max_queue: self.max_queue,
                queue_timeout: self.queue_timeout,
                lease_ttl: self.lease_ttl,
                aging: self.aging,
                events: self.events,
            },
            self.resources,
            self.capacity.unwrap_or(0),
        ));
        if let Some(runtime) = runtime {
            runtime.spawn(reclaim_expired(
                Arc::downgrade(&inner),
                inner.lease_added.clone(),
            ));
        }
        Ok(ResourcePool { inner })
    }

    /// Checks every setting without building anything: what
    /// [`build`](Self::build) refuses for its settings, this refuses (the
    /// configuration file's limit sections are checked by it too).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, allowed| {
            ConfigError::new("resource pool", field, value, allowed)
        };
        if self.name.trim().is_empty() {
            return Err(invalid(
                "name",
                format!("{:?}", self.name),
                "a non-empty name",
            ));
        }
        match (&self.resources, self.capacity) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "capacity",
                    "set with resources".to_owned(),
                    "either resources or a capacity, not both",
                ));
            }
            (None, None) | (None, Some(0)) => {
                return Err(invalid(
                    "capacity",
                    format!("{:?}", self.capacity),
                    "a capacity of at least 1, or named resources",
                ));
            }
            (None, Some(capacity)) if i64::try_from(capacity).is_err() => {
                return Err(invalid(
                    "capacity",
                    capacity.to_string(),
                    "a capacity of at most i64::MAX",
                ));
            }
            (Some(resources), None) => {
                if resources.is_empty() {
                    return Err(invalid(
                        "resources",
                        "[]".to_owned(),
                        "at least one resource",
                    ));
                }
                let mut names: Vec<&str> = resources.iter().map(Resource::name).collect();
                names.sort_unstable();
                if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
                    return Err(invalid(
                        "resources",
                        format!("{:?} twice", pair[0]),
                        "unique resource names",
                    ));
                }
            }
            _ => {}
        }
        if self.max_queue > ResourcePool::MAX_QUEUE {
            return Err(invalid(
                "max_queue",
                self.max_queue.to_string(),
                "at most 1,000,000 waiters (ResourcePool::MAX_QUEUE)",
            ));
        }
        if self.queue_timeout.is_zero() {
            return Err(invalid(
                "queue_timeout",
                "0s".to_owned(),
                "a duration above zero",
            ));
        }
        if self.lease_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(invalid(
                "lease_ttl",
                "0s".to_owned(),
                "a duration above zero",
            ));
        }
        if self.aging.is_some_and(|aging| aging.is_zero()) {
            return Err(invalid("aging", "0s".to_owned(), "a duration above zero"));
        }
        Ok(())
    }
}
