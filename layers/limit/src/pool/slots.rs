//! The named resources of a pool: which are held, which are healthy, and
//! picking free, healthy ones that match a request's requirements.
//!
//! ```
//! use tower_hardening_limit::{Acquire, Resource, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let gpus = ResourcePool::builder("gpu")
//!     .resources([
//!         Resource::new("gpu-0").attr("model", "a100"),
//!         Resource::new("gpu-1").attr("model", "h100"),
//!     ])
//!     .build()
//!     .unwrap();
//! gpus.mark_unhealthy("gpu-0");
//! let lease = gpus.acquire(Acquire::new("job")).await.unwrap();
//! assert_eq!(lease.resources()[0].name(), "gpu-1"); // the unhealthy one is skipped
//! assert_eq!(gpus.stats().unhealthy, vec!["gpu-0".to_owned()]);
//! # }
//! ```

use std::sync::Arc;

use super::resource::{Acquire, AttrValue, Resource};
use super::state::{PoolInner, State};

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) resource: Resource,
    pub(super) healthy: bool,
    pub(super) holder: Option<u64>,
}

impl Slot {
    pub(super) fn new(resource: Resource) -> Self {
        Slot {
            resource,
            healthy: true,
            holder: None,
        }
    }

    fn is_free(&self) -> bool {
        self.holder.is_none() && self.healthy
    }
}

impl State {
    /// Free, healthy resources matching the request, if enough.
    pub(super) fn pick(&self, request: &Acquire) -> Option<Vec<usize>> {
        let chosen: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.is_free() && slot.resource.matches(&request.requirements))
            .map(|(index, _)| index)
            .take(usize::try_from(request.units).unwrap_or(usize::MAX))
            .collect();
        (chosen.len() as u64 == request.units).then_some(chosen)
    }

    /// Resources matching the request, free or not: more than it asks for
    /// and it can be granted some day.
    pub(super) fn matching(&self, request: &Acquire) -> u64 {
        self.slots
            .iter()
            .filter(|slot| slot.resource.matches(&request.requirements))
            .count() as u64
    }

    /// Resources free and healthy now.
    pub(super) fn free_healthy(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_free()).count()
    }

    pub(super) fn held(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.holder.is_some())
            .count()
    }

    pub(super) fn unhealthy(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|slot| !slot.healthy)
            .map(|slot| slot.resource.name.to_string())
            .collect()
    }
}

impl PoolInner {
    pub(crate) fn set_healthy(&self, name: &str, healthy: bool) -> bool {
        let mut state = self.lock();
        let Some(slot) = state
            .slots
            .iter_mut()
            .find(|slot| &*slot.resource.name == name)
        else {
            return false;
        };
        slot.healthy = healthy;
        if healthy {
            self.dispatch(&mut state);
        }
        true
    }

    pub(crate) fn unhealthy_among(&self, resources: &[usize]) -> Vec<String> {
        let state = self.lock();
        resources
            .iter()
            .filter(|&&i| !state.slots[i].healthy)
            .map(|&i| state.slots[i].resource.name.to_string())
            .collect()
    }

    pub(crate) fn resource(&self, index: usize) -> Resource {
        self.lock().slots[index].resource.clone()
    }
}

/// A request's requirements as text, for error messages.
pub(super) fn describe(requirements: &[(Arc<str>, AttrValue)]) -> String {
    if requirements.is_empty() {
        return "no requirement".to_owned();
    }
    requirements
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
