//! One breaker per key of the request.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower_hardening_core::{BoxError, CircuitState, Classify};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::layer::Builder;
use crate::state::BreakerState;

struct Entry {
    state: Arc<BreakerState>,
    last_used: AtomicU64,
}

/// The breakers of a keyed layer, bounded in number.
struct Registry<K> {
    template: Builder<()>,
    max_keys: usize,
    breakers: Mutex<HashMap<K, Entry>>,
    overflow: Arc<BreakerState>,
    clock: AtomicU64,
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    fn breaker_for(&self, key: &K) -> Arc<BreakerState> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = breakers.get(key) {
            entry.last_used.store(tick, Ordering::Relaxed);
            return entry.state.clone();
        }
        if breakers.len() >= self.max_keys {
            // Make room by forgetting the least recently used closed
            // breaker; an open one still protects its key, so when every
            // breaker is open the new key shares the overflow breaker.
            let evict = breakers
                .iter()
                .filter(|(_, entry)| entry.state.state() == CircuitState::Closed)
                .min_by_key(|(_, entry)| entry.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            match evict {
                Some(old) => {
                    breakers.remove(&old);
                }
                None => return self.overflow.clone(),
            }
        }
        let name: Arc<str> = format!("{}/{key}", self.template.breaker_name()).into();
        let state = self.template.new_state(name);
        breakers.insert(
            key.clone(),
            Entry {
                state: state.clone(),
                last_used: AtomicU64::new(tick),
            },
        );
        state
    }
}

/// A layer that keeps one circuit breaker per key of the request (for
/// example per upstream host or per route), made by
/// [`Builder::build_keyed`].
///
/// Each key's breaker has the builder's settings and is named
/// `"{name}/{key}"`. At most `max_keys` breakers are kept: a new key beyond
/// that evicts the least recently used *closed* breaker; when none is
/// closed, new keys share one overflow breaker named `"{name}/overflow"`.
/// Finding a key's breaker takes a short lock per call.
///
/// ```
/// use tower::{Layer, Service, ServiceExt, service_fn};
/// use tower_hardening_breaker::{CircuitBreakerLayer, CircuitState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // One breaker per upstream host; the request here is (host, path).
/// let layer = CircuitBreakerLayer::builder()
///     .name("upstream")
///     .build_keyed(|req: &(String, String)| req.0.clone(), 1_000)?;
/// let handle = layer.handle();
/// let mut client = layer.layer(service_fn(|(_host, path): (String, String)| async move {
///     Ok::<_, std::io::Error>(path.len())
/// }));
/// client.ready().await?.call(("models.internal".into(), "/v1/infer".into())).await?;
/// let breaker = handle.get(&"models.internal".to_owned()).expect("made on first use");
/// assert_eq!(breaker.name(), "upstream/models.internal");
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// # Ok(())
/// # }
/// ```
pub struct KeyedCircuitBreakerLayer<K, F, C> {
    registry: Arc<Registry<K>>,
    key_of: F,
    classifier: C,
}

impl<K, F, C: Clone> KeyedCircuitBreakerLayer<K, F, C> {
    pub(crate) fn new(builder: Builder<C>, key_of: F, max_keys: usize) -> Self {
        let classifier = builder.classifier_ref().clone();
        let template = builder.classifier(());
        let overflow = template.new_state(format!("{}/overflow", template.breaker_name()).into());
        KeyedCircuitBreakerLayer {
            registry: Arc::new(Registry {
                template,
                max_keys,
                breakers: Mutex::new(HashMap::new()),
                overflow,
                clock: AtomicU64::new(0),
            }),
            key_of,
            classifier,
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// Reads the breakers of this layer.
    pub fn handle(&self) -> KeyedBreakerHandle<K> {
        KeyedBreakerHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            registry: self.registry.clone(),
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", self.registry.template.breaker_name())
            .field("max_keys", &self.registry.max_keys)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: self.registry.clone(),
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service [`KeyedCircuitBreakerLayer`] builds. Unlike the single
/// breaker, admission needs the request's key, so it is decided in `call`;
/// a rejected call leaves the inner service's readiness unused.
pub struct KeyedCircuitBreaker<S, K, F, C> {
    inner: S,
    registry: Arc<Registry<K>>,
    key_of: F,
    classifier: C,
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", self.registry.template.breaker_name())
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key_of)(&request);
        match self.registry.breaker_for(&key).try_acquire() {
            Ok(mut permit) => {
                permit.start();
                let future = self.inner.call(request);
                ResponseFuture::called(future, permit, self.classifier.clone())
            }
            Err(rejection) => ResponseFuture::rejected(rejection.into()),
        }
    }
}

/// Reads the breakers of a [`KeyedCircuitBreakerLayer`].
pub struct KeyedBreakerHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedBreakerHandle<K> {
    fn clone(&self) -> Self {
        KeyedBreakerHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerHandle")
            .field("name", self.registry.template.breaker_name())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedBreakerHandle<K> {
    /// The breaker of `key`, if it is kept now.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        let breakers = self
            .registry
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        breakers
            .get(key)
            .map(|entry| BreakerHandle::new(entry.state.clone()))
    }

    /// The keys whose breakers are kept now.
    pub fn keys(&self) -> Vec<K> {
        let breakers = self
            .registry
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        breakers.keys().cloned().collect()
    }

    /// How many breakers are kept now (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.registry
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The breaker shared by new keys when every kept breaker is open.
    pub fn overflow(&self) -> BreakerHandle {
        BreakerHandle::new(self.registry.overflow.clone())
    }
}
