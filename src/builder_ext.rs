//! `ServiceBuilder` methods for every layer, as tower-http gives them
//! (`.timeout()`, `.concurrency_limit()`).
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_hardening::ServiceBuilderExt;
//! use tower_hardening::breaker::CircuitBreakerLayer;
//! use tower_hardening::limit::ResourcePool;
//! use tower_hardening::recovery::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_hardening::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .metrics("model-inference")
//!     .resource_limit(ResourcePool::builder("model-inference").capacity(8).build()?)
//!     .retry_with(RetryLayer::builder().build()?)
//!     .circuit_breaker(CircuitBreakerLayer::builder().build()?)
//!     .service(service_fn(|x: u64| async move { Ok::<_, std::io::Error>(x) }));
//! assert_eq!(svc.oneshot(7).await?, 7);
//!
//! // The whole stack of a configured service, from a hardening.
//! use tower_hardening::{SystemHardening, SystemHardeningConfig};
//! let config = SystemHardeningConfig::from_toml_str("[services.audio]")?;
//! let hardening = SystemHardening::builder(config).build()?;
//! let audio = ServiceBuilder::new()
//!     .hardening(&hardening, "audio")?
//!     .service(service_fn(|x: u64| async move { Ok::<_, std::io::Error>(x) }));
//! assert_eq!(audio.oneshot(8).await?, 8);
//! assert!(ServiceBuilder::new().hardening(&hardening.handle(), "nope").is_err());
//! # Ok(())
//! # }
//! ```

use tower::ServiceBuilder;
use tower::layer::util::Stack;

use crate::breaker::CircuitBreakerLayer;
use crate::fault::FaultLayer;
use crate::limit::{OneUnit, OnResponse, ResourceLimitLayer, ResourcePool};
use crate::metrics::MetricsLayer;
use crate::recovery::RetryLayer;
use crate::stack::ServiceLayer;

/// A `tower::ServiceBuilder` method per tower-hardening layer.
///
/// Each is a thin call into its layer crate: `.circuit_breaker(layer)` is
/// `.layer(layer)`, `.resource_limit(pool)` is
/// `.layer(ResourceLimitLayer::new(pool).priority(..))`, and so on.
pub trait ServiceBuilderExt<L>: Sized {
    /// Adds a circuit breaker.
    fn circuit_breaker<C>(self, layer: CircuitBreakerLayer<C>) -> ServiceBuilder<Stack<CircuitBreakerLayer<C>, L>>;

    /// Adds retries.
    fn retry_with<C, P>(self, layer: RetryLayer<C, P>) -> ServiceBuilder<Stack<RetryLayer<C, P>, L>>;

    /// Adds admission through `pool`, every request at NORMAL priority
    /// costing one unit (use `.layer(ResourceLimitLayer::new(pool)...)`
    /// for priorities from the request).
    #[allow(clippy::type_complexity)]
    fn resource_limit(
        self,
        pool: ResourcePool,
    ) -> ServiceBuilder<
        Stack<ResourceLimitLayer<NormalPriority, OneUnit, OnResponse, tower_hardening_core::ErrorsAsFailures>, L>,
    >;

    /// Adds request metrics labelled `service = name`, registered with
    /// the recorder in force now.
    fn metrics(self, name: &str) -> ServiceBuilder<Stack<MetricsLayer, L>>;

    /// Adds fault injection.
    fn fault<R>(self, layer: FaultLayer<R>) -> ServiceBuilder<Stack<FaultLayer<R>, L>>;

    /// Adds the whole stack of `service` from a hardening (a
    /// `SystemHardening` or its `HardeningHandle`): metrics, admission,
    /// retry, breaker, timeout and fault injection, from its configuration
    /// section. An unknown service is an error naming it.
    fn hardening<H: StackSource>(
        self,
        hardening: &H,
        service: &str,
    ) -> Result<ServiceBuilder<Stack<ServiceLayer, L>>, crate::BoxError>;
}

/// What can give a service's stack: a [`SystemHardening`](crate::SystemHardening)
/// or a [`HardeningHandle`](crate::HardeningHandle).
pub trait StackSource {
    /// The stack of `service` (see `SystemHardening::layer`).
    fn stack(&self, service: &str) -> Result<ServiceLayer, crate::BoxError>;
}

impl StackSource for crate::SystemHardening {
    fn stack(&self, service: &str) -> Result<ServiceLayer, crate::BoxError> {
        self.layer(service)
    }
}

impl StackSource for crate::HardeningHandle {
    fn stack(&self, service: &str) -> Result<ServiceLayer, crate::BoxError> {
        self.layer(service)
    }
}

/// Every request at NORMAL priority (see
/// [`ServiceBuilderExt::resource_limit`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalPriority;

impl<Req> crate::limit::PriorityOf<Req> for NormalPriority {
    fn priority_of(&self, _: &Req) -> crate::Priority {
        crate::Priority::NORMAL
    }
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn circuit_breaker<C>(self, layer: CircuitBreakerLayer<C>) -> ServiceBuilder<Stack<CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    fn retry_with<C, P>(self, layer: RetryLayer<C, P>) -> ServiceBuilder<Stack<RetryLayer<C, P>, L>> {
        self.layer(layer)
    }

    fn resource_limit(
        self,
        pool: ResourcePool,
    ) -> ServiceBuilder<
        Stack<ResourceLimitLayer<NormalPriority, OneUnit, OnResponse, tower_hardening_core::ErrorsAsFailures>, L>,
    > {
        self.layer(ResourceLimitLayer::new(pool).priority(NormalPriority))
    }

    fn metrics(self, name: &str) -> ServiceBuilder<Stack<MetricsLayer, L>> {
        self.layer(MetricsLayer::new(name))
    }

    fn fault<R>(self, layer: FaultLayer<R>) -> ServiceBuilder<Stack<FaultLayer<R>, L>> {
        self.layer(layer)
    }

    fn hardening<H: StackSource>(
        self,
        hardening: &H,
        service: &str,
    ) -> Result<ServiceBuilder<Stack<ServiceLayer, L>>, crate::BoxError> {
        Ok(self.layer(hardening.stack(service)?))
    }
}
