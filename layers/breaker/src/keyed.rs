//! One breaker per key of the request.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_hardening_core::{BoxError, CircuitState, Classify};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::layer::BreakerBuilder;
use crate::state::{BreakerMetrics, BreakerState};

/// How many kept breakers one new key may look at to make room, at most.
const EVICTION_SCAN: usize = 16;

/// New breakers made per second when the layer does not say.
pub(crate) const DEFAULT_NEW_KEYS_PER_SECOND: u32 = 100;

struct Entry {
    state: Arc<BreakerState>,
    /// Set by every call of the key, cleared by the eviction clock hand:
    /// a key used since the hand last passed gets a second chance.
    referenced: AtomicBool,
}

/// The kept breakers, and the clock that picks which to forget.
struct Breakers<K> {
    entries: HashMap<K, Entry>,
    /// Every kept key once, in the order the clock hand visits them.
    hand: VecDeque<K>,
    /// New breakers that may be made now (a token bucket).
    tokens: f64,
    refilled: Instant,
}

/// The breakers of a keyed layer, bounded in number and in how fast new
/// ones are made.
struct Registry<K> {
    template: BreakerBuilder<()>,
    max_keys: usize,
    new_keys_per_second: AtomicU32,
    breakers: RwLock<Breakers<K>>,
    overflow: Arc<BreakerState>,
    /// Shared by every breaker of the layer: labelled with the layer's
    /// name, never with a key.
    metrics: BreakerMetrics,
}

impl<K> Registry<K> {
    fn read(&self) -> RwLockReadGuard<'_, Breakers<K>> {
        self.breakers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Breakers<K>> {
        self.breakers.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    fn breaker_for(&self, key: &K) -> Arc<BreakerState> {
        if let Some(state) = self.kept(&self.read(), key) {
            return state;
        }
        let mut breakers = self.write();
        if let Some(state) = self.kept(&breakers, key) {
            return state;
        }
        if !self.take_token(&mut breakers) || !self.make_room(&mut breakers) {
            return self.overflow.clone();
        }
        let name: Arc<str> = format!("{}/{key}", self.template.breaker_name()).into();
        let state = self.template.new_state(name, self.metrics.clone());
        breakers.entries.insert(
            key.clone(),
            Entry {
                state: state.clone(),
                referenced: AtomicBool::new(false),
            },
        );
        breakers.hand.push_back(key.clone());
        state
    }

    fn kept(&self, breakers: &Breakers<K>, key: &K) -> Option<Arc<BreakerState>> {
        let entry = breakers.entries.get(key)?;
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        Some(entry.state.clone())
    }

    /// Takes one token of the new-key rate, refilling by the time passed.
    fn take_token(&self, breakers: &mut Breakers<K>) -> bool {
        let rate = f64::from(self.new_keys_per_second.load(Ordering::Relaxed).max(1));
        let now = Instant::now();
        let elapsed = now
            .saturating_duration_since(breakers.refilled)
            .as_secs_f64();
        breakers.tokens = (breakers.tokens + elapsed * rate).min(rate);
        breakers.refilled = now;
        if breakers.tokens >= 1.0 {
            breakers.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Makes room for one more breaker if the registry is full, by moving
    /// the clock hand over at most `EVICTION_SCAN` kept breakers: the
    /// first closed one not used since the hand last passed is forgotten.
    /// An open breaker still protects its key and is never forgotten.
    fn make_room(&self, breakers: &mut Breakers<K>) -> bool {
        if breakers.entries.len() < self.max_keys {
            return true;
        }
        for _ in 0..EVICTION_SCAN.min(breakers.hand.len()) {
            let Some(key) = breakers.hand.pop_front() else {
                break;
            };
            let evictable = match breakers.entries.get(&key) {
                None => continue,
                Some(entry) => {
                    entry.state.state() == CircuitState::Closed
                        && !entry.referenced.swap(false, Ordering::Relaxed)
                }
            };
            if evictable {
                breakers.entries.remove(&key);
                return true;
            }
            breakers.hand.push_back(key);
        }
        false
    }
}

/// A layer that keeps one circuit breaker per key of the request (for
/// example per upstream host or per route), made by
/// [`BreakerBuilder::build_keyed`].
///
/// Each key's breaker has the builder's settings and is named
/// `"{name}/{key}"` in errors, events and [`KeyedBreakerHandle::get`].
/// Keys usually come from request data, so a client choosing keys must not
/// be able to push out the breakers of real upstreams nor grow anything
/// without bound:
///
/// - At most `max_keys` breakers are kept. A new key beyond that makes room
///   with a clock (second-chance) hand that looks at no more than 16 kept
///   breakers: the first *closed* one not used since the hand last passed
///   is forgotten. An open breaker still protects its key and is kept.
/// - New breakers are made at a bounded rate
///   ([`new_keys_per_second`](Self::new_keys_per_second), 100 by default),
///   so a flood of unique keys replaces at most that many kept breakers a
///   second, and only ones nobody used meanwhile.
/// - A key that gets no breaker of its own (rate spent, or no room) shares
///   one overflow breaker named `"{name}/overflow"`.
/// - Metrics are labelled with the layer's name only (`breaker="{name}"`):
///   the rejection and transition counters sum over keys, and there is no
///   per-key state gauge. Per-key state is read from the handle.
///
/// Finding a kept key's breaker takes a shared (read) lock; only a new key
/// takes the write lock, and does O(1) work under it.
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
    pub(crate) fn new(builder: BreakerBuilder<C>, key_of: F, max_keys: usize) -> Self {
        let classifier = builder.classifier_ref().clone();
        let template = builder.classifier(());
        let metrics = BreakerMetrics::register(template.breaker_name().clone(), false);
        let overflow = template.new_state(
            format!("{}/overflow", template.breaker_name()).into(),
            metrics.clone(),
        );
        let rate = DEFAULT_NEW_KEYS_PER_SECOND;
        KeyedCircuitBreakerLayer {
            registry: Arc::new(Registry {
                template,
                max_keys,
                new_keys_per_second: AtomicU32::new(rate),
                breakers: RwLock::new(Breakers {
                    entries: HashMap::new(),
                    hand: VecDeque::new(),
                    tokens: f64::from(rate),
                    refilled: Instant::now(),
                }),
                overflow,
                metrics,
            }),
            key_of,
            classifier,
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// How many new breakers may be made per second (at least 1; 100 by
    /// default), with a burst of as many. Applies to every clone of this
    /// layer and every service it made.
    pub fn new_keys_per_second(self, rate: u32) -> Self {
        let rate = rate.max(1);
        let mut breakers = self.registry.write();
        self.registry
            .new_keys_per_second
            .store(rate, Ordering::Relaxed);
        breakers.tokens = f64::from(rate);
        drop(breakers);
        self
    }

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

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
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
    C: Classify<S::Response, BoxError>,
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
        self.registry
            .read()
            .entries
            .get(key)
            .map(|entry| BreakerHandle::new(entry.state.clone()))
    }

    /// The keys whose breakers are kept now.
    pub fn keys(&self) -> Vec<K> {
        self.registry.read().entries.keys().cloned().collect()
    }

    /// Every kept key with its breaker's state.
    pub fn states(&self) -> Vec<(K, CircuitState)> {
        self.registry
            .read()
            .entries
            .iter()
            .map(|(key, entry)| (key.clone(), entry.state.state()))
            .collect()
    }

    /// How many breakers are kept now (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.registry.read().entries.len()
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
