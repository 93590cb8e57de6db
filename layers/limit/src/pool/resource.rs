//! What a pool holds (named resources with attributes) and what a caller
//! asks it for.
//!
//! ```
//! use tower_hardening_limit::{Acquire, Resource, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("cpu")
//!     .resources((0..4).map(|i| Resource::new(format!("core-{i}")).attr("numa", i / 2)))
//!     .build()
//!     .unwrap();
//! let lease = pool.acquire(Acquire::new("job").units(2).require("numa", 1)).await.unwrap();
//! let names: Vec<_> = lease.resources().iter().map(|r| r.name().to_owned()).collect();
//! assert_eq!(names, ["core-2", "core-3"]);
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tower_hardening_core::Priority;

/// A value of a resource attribute (`core = 0`, `gpu = "a100"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrValue {
    /// A whole number.
    Int(i64),
    /// Text.
    Text(Arc<str>),
    /// A flag.
    Bool(bool),
}

macro_rules! int_attr {
    ($($t:ty),*) => {$(
        impl From<$t> for AttrValue {
            fn from(value: $t) -> Self {
                AttrValue::Int(i64::from(value))
            }
        }
    )*};
}
int_attr!(i8, i16, i32, i64, u8, u16, u32);

impl From<usize> for AttrValue {
    fn from(value: usize) -> Self {
        AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<bool> for AttrValue {
    fn from(value: bool) -> Self {
        AttrValue::Bool(value)
    }
}

impl From<&str> for AttrValue {
    fn from(value: &str) -> Self {
        AttrValue::Text(value.into())
    }
}

impl From<String> for AttrValue {
    fn from(value: String) -> Self {
        AttrValue::Text(value.into())
    }
}

impl AttrValue {
    /// Whether a resource holding `self` meets a requirement of `wanted`:
    /// equal values, or text that spells the other value (`"0"` meets
    /// `0`, `"true"` meets `true`), as the seed's `{ core: 0 }` and
    /// configuration files write them either way.
    ///
    /// ```
    /// use tower_hardening_limit::AttrValue;
    ///
    /// assert!(AttrValue::from(0).matches(&AttrValue::from("0")));
    /// assert!(AttrValue::from("a100").matches(&AttrValue::from("a100")));
    /// assert!(!AttrValue::from(1).matches(&AttrValue::from("01x")));
    /// ```
    pub fn matches(&self, wanted: &AttrValue) -> bool {
        match (self, wanted) {
            (AttrValue::Int(n), AttrValue::Text(t)) | (AttrValue::Text(t), AttrValue::Int(n)) => {
                t.trim().parse::<i64>() == Ok(*n)
            }
            (AttrValue::Bool(b), AttrValue::Text(t)) | (AttrValue::Text(t), AttrValue::Bool(b)) => {
                t.trim().parse::<bool>() == Ok(*b)
            }
            _ => self == wanted,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Text(v) => write!(f, "{v:?}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// One named unit of a pool (a CPU core, a GPU, a model replica), with
/// attributes requests can require.
///
/// ```
/// use tower_hardening_limit::Resource;
///
/// let core = Resource::new("core-0").attr("core", 0).attr("numa", 1);
/// assert_eq!(core.name(), "core-0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub(crate) name: Arc<str>,
    pub(crate) attrs: BTreeMap<Arc<str>, AttrValue>,
}

impl Resource {
    /// A resource called `name` (unique within its pool).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Resource {
            name: name.into(),
            attrs: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn attr(mut self, key: impl Into<Arc<str>>, value: impl Into<AttrValue>) -> Self {
        self.attrs.insert(key.into(), value.into());
        self
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of attribute `key`.
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.attrs.get(key)
    }

    pub(crate) fn matches(&self, requirements: &[(Arc<str>, AttrValue)]) -> bool {
        requirements
            .iter()
            .all(|(key, value)| self.attrs.get(key).is_some_and(|held| held.matches(value)))
    }
}

/// What a caller asks a pool for: who it is, how important, how many
/// units, and which attributes the units must have.
///
/// ```
/// use tower_hardening_limit::{Acquire, Priority};
///
/// let request = Acquire::new("task-123").priority(Priority(2)).units(1).require("core", 0);
/// assert_eq!(request.owner(), "task-123");
/// ```
#[derive(Debug, Clone)]
pub struct Acquire {
    pub(crate) owner: Arc<str>,
    pub(crate) priority: Priority,
    pub(crate) units: u64,
    pub(crate) requirements: Vec<(Arc<str>, AttrValue)>,
}

impl Acquire {
    /// A request by `owner` for one unit at normal priority.
    pub fn new(owner: impl Into<Arc<str>>) -> Self {
        Acquire {
            owner: owner.into(),
            priority: Priority::NORMAL,
            units: 1,
            requirements: Vec::new(),
        }
    }

    /// How important the request is.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// How many units (resources of a named pool, or e.g. bytes of a
    /// capacity pool); at least 1.
    #[must_use]
    pub fn units(mut self, units: u64) -> Self {
        self.units = units;
        self
    }

    /// Only resources whose attribute `key` equals `value` (named pools).
    #[must_use]
    pub fn require(mut self, key: impl Into<Arc<str>>, value: impl Into<AttrValue>) -> Self {
        self.requirements.push((key.into(), value.into()));
        self
    }

    /// Who asks.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}
