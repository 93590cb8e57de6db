use std::sync::Arc;
use std::time::Duration;

use tower_hardening_core::{ErrorsAsFailures, EventSink};
use tower_layer::Layer;

use crate::error::{ConfigError, invalid};
use crate::handle::BreakerHandle;
use crate::keyed::KeyedCircuitBreakerLayer;
use crate::service::CircuitBreaker;
use tower_hardening_core::stripe::PerStripe;

use crate::state::{BreakerMetrics, BreakerState, Settings};
use crate::window::{CountWindow, MAX_COUNT_WINDOW, TimeWindow, Window};

/// Which calls a breaker's rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `n` calls.
    Count(u32),
    /// The calls that finished in the last `period` (kept in 20 buckets, so
    /// a call is forgotten between `period` and `period * 21 / 20` after
    /// it finished).
    Time(Duration),
}

impl SlidingWindow {
    /// The last `n` calls (1 to 1,000,000).
    pub fn count(n: u32) -> Self {
        SlidingWindow::Count(n)
    }

    /// The calls of the last `period` (at least 1 ms).
    pub fn time(period: Duration) -> Self {
        SlidingWindow::Time(period)
    }

    fn build(self) -> Window {
        match self {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time(period) => Window::Time(TimeWindow::new(period)),
        }
    }
}

/// How long a half-open probe may take unless the builder says otherwise.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`CircuitBreakerLayer`]; every setting has a default, and
/// [`build`](Self::build) checks them all.
///
/// | setting | default |
/// | --- | --- |
/// | `name` | `"circuit-breaker"` |
/// | `failure_rate_threshold` | 0.5 |
/// | `slow_call_rate_threshold` | 1.0 |
/// | `slow_call_duration` | off: no call counts as slow and the clock is not read |
/// | `sliding_window` | `SlidingWindow::count(100)` |
/// | `minimum_calls` | 20 |
/// | `wait_in_open` | 30 s |
/// | `max_wait_in_open` | 300 s |
/// | `half_open_permits` | 5 |
/// | `probe_timeout` | 10 s |
/// | `classifier` | [`ErrorsAsFailures`] |
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BreakerBuilder<C = ErrorsAsFailures> {
    name: Arc<str>,
    failure_rate_threshold: f64,
    slow_call_rate_threshold: f64,
    slow_call_duration: Option<Duration>,
    sliding_window: SlidingWindow,
    minimum_calls: u32,
    wait_in_open: Duration,
    max_wait_in_open: Duration,
    half_open_permits: u32,
    probe_timeout: Duration,
    classifier: C,
    events: Option<EventSink>,
}

impl Default for BreakerBuilder<ErrorsAsFailures> {
    fn default() -> Self {
        BreakerBuilder {
            name: Arc::from("circuit-breaker"),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: None,
            sliding_window: SlidingWindow::Count(100),
            minimum_calls: 20,
            wait_in_open: Duration::from_secs(30),
            max_wait_in_open: Duration::from_secs(300),
            half_open_permits: 5,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            classifier: ErrorsAsFailures,
            events: None,
        }
    }
}

impl<C> BreakerBuilder<C> {
    /// The breaker's name, used in errors, events and metric labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Opens when the failure rate in the window is at or above this; in
    /// (0, 1].
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.failure_rate_threshold = rate;
        self
    }

    /// Opens when the slow-call rate in the window is at or above this; in
    /// (0, 1].
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.slow_call_rate_threshold = rate;
        self
    }

    /// Counts calls longer than this as slow, whatever their outcome.
    /// Setting it makes every call read the clock twice.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// Which calls the rates are computed over.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.sliding_window = window;
        self
    }

    /// No decision before this many calls are in the window (at least 1).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// How long the breaker stays open before letting probes through. Any
    /// duration is accepted; one past what the clock can represent (say
    /// `Duration::MAX`) keeps the breaker open until it is reset.
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.wait_in_open = wait;
        self
    }

    /// The cap on the open wait, which doubles with each consecutive trip
    /// (a half-open breaker that reopens).
    pub fn max_wait_in_open(mut self, wait: Duration) -> Self {
        self.max_wait_in_open = wait;
        self
    }

    /// How many probe calls half-open lets through at once (1 to 65,535).
    /// All must finish before the breaker closes.
    pub fn half_open_permits(mut self, permits: u32) -> Self {
        self.half_open_permits = permits;
        self
    }

    /// How long a half-open probe may take, from its call to its verdict
    /// (for a streamed response, to its trailers). A probe that takes
    /// longer is a failed probe: the breaker reopens and the permit is
    /// free at once. Also the `Retry-After` hint of a call refused while
    /// every probe is out.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Publishes transitions and rejections to `sink`.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// What counts as a failure: any [`Classify`](tower_hardening_core::Classify).
    pub fn classifier<C2>(self, classifier: C2) -> BreakerBuilder<C2> {
        BreakerBuilder {
            name: self.name,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration: self.slow_call_duration,
            sliding_window: self.sliding_window,
            minimum_calls: self.minimum_calls,
            wait_in_open: self.wait_in_open,
            max_wait_in_open: self.max_wait_in_open,
            half_open_permits: self.half_open_permits,
            probe_timeout: self.probe_timeout,
            classifier,
            events: self.events,
        }
    }

    /// Checks every setting without building anything: what
    /// [`build`](Self::build) refuses, this refuses. The configuration
    /// file's breaker sections are checked by it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = |field, value: f64| {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(invalid(field, value, "a rate in (0, 1]"))
            }
        };
        rate("failure_rate_threshold", self.failure_rate_threshold)?;
        rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.name.trim().is_empty() {
            return Err(invalid("name", &*self.name, "a non-empty name"));
        }
        if self.slow_call_duration == Some(Duration::ZERO) {
            return Err(invalid(
                "slow_call_duration",
                Duration::ZERO,
                "a duration above zero",
            ));
        }
        match self.sliding_window {
            SlidingWindow::Count(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                return Err(invalid(
                    "sliding_window",
                    self.sliding_window,
                    "a count from 1 to 1,000,000",
                ));
            }
            SlidingWindow::Time(period) if period < Duration::from_millis(1) => {
                return Err(invalid(
                    "sliding_window",
                    self.sliding_window,
                    "a period of at least 1ms",
                ));
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            return Err(invalid("minimum_calls", 0, "at least 1"));
        }
        if let SlidingWindow::Count(n) = self.sliding_window
            && self.minimum_calls > n
        {
            return Err(invalid(
                "minimum_calls",
                self.minimum_calls,
                "at most the count window's size, or the breaker could never decide",
            ));
        }
        if self.wait_in_open.is_zero() {
            return Err(invalid(
                "wait_in_open",
                self.wait_in_open,
                "a duration above zero",
            ));
        }
        if self.max_wait_in_open < self.wait_in_open {
            return Err(invalid(
                "max_wait_in_open",
                self.max_wait_in_open,
                "at least wait_in_open",
            ));
        }
        if self.half_open_permits == 0 || self.half_open_permits > u32::from(u16::MAX) {
            return Err(invalid(
                "half_open_permits",
                self.half_open_permits,
                "from 1 to 65,535",
            ));
        }
        if self.probe_timeout.is_zero() {
            return Err(invalid(
                "probe_timeout",
                self.probe_timeout,
                "a duration above zero",
            ));
        }
        Ok(())
    }

    pub(crate) fn new_state(&self, name: Arc<str>, metrics: BreakerMetrics) -> Arc<BreakerState> {
        Arc::new(BreakerState::new(
            Settings {
                name,
                failure_rate_threshold: self.failure_rate_threshold,
                slow_call_rate_threshold: self.slow_call_rate_threshold,
                slow_call_duration: self.slow_call_duration,
                minimum_calls: self.minimum_calls,
                wait_in_open: self.wait_in_open,
                max_wait_in_open: self.max_wait_in_open,
                half_open_permits: self.half_open_permits,
                probe_timeout: self.probe_timeout,
                events: self.events.clone(),
            },
            self.sliding_window.build(),
            metrics,
        ))
    }

    pub(crate) fn breaker_name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn classifier_ref(&self) -> &C {
        &self.classifier
    }

    /// Checks every setting and builds the layer (one breaker shared by
    /// every service the layer makes).
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        self.validate()?;
        let metrics = BreakerMetrics::register(self.name.clone(), true);
        let state = self.new_state(self.name.clone(), metrics);
        Ok(CircuitBreakerLayer {
            state: Arc::new(PerStripe::new(state)),
            classifier: self.classifier,
        })
    }

    /// Checks every setting and builds a layer that keeps one breaker per
    /// key of the request (an upstream host, a route), each with these
    /// settings and named `"{name}/{key}"`, holding at most `max_keys`
    /// breakers (see [`KeyedCircuitBreakerLayer`]).
    pub fn build_keyed<K, F>(
        self,
        key_of: F,
        max_keys: usize,
    ) -> Result<KeyedCircuitBreakerLayer<K, F, C>, ConfigError>
    where
        C: Clone,
    {
        self.validate()?;
        if max_keys == 0 {
            return Err(invalid("max_keys", 0, "at least 1"));
        }
        Ok(KeyedCircuitBreakerLayer::new(self, key_of, max_keys))
    }
}

/// A circuit breaker as a `tower::Layer`.
///
/// One layer value is one breaker: every service it builds and every clone
/// of it share the same state, and [`handle`](Self::handle) reads and
/// steers it.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    /// The breaker, one reference per stripe, made once for every service
    /// the layer builds.
    state: Arc<PerStripe<Arc<BreakerState>>>,
    classifier: C,
}

impl CircuitBreakerLayer<ErrorsAsFailures> {
    /// A builder with the defaults listed on [`BreakerBuilder`].
    pub fn builder() -> BreakerBuilder<ErrorsAsFailures> {
        BreakerBuilder::default()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The handle of this layer's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.state.local().clone())
    }

    /// The same breaker for HTTP responses whose verdict may come at the end
    /// of the body (gRPC statuses in trailers): see
    /// [`EosCircuitBreakerLayer`](crate::EosCircuitBreakerLayer). The
    /// classifier must also be a [`ClassifyEos`](tower_hardening_core::ClassifyEos)
    /// (`GrpcErrors`, `HttpServerErrors`).
    #[must_use]
    pub fn at_end_of_stream(self) -> crate::EosCircuitBreakerLayer<C> {
        crate::EosCircuitBreakerLayer {
            state: self.state,
            classifier: self.classifier,
        }
    }

    /// The same breaker (one state, one window) with another classifier:
    /// for one dependency reached both as plain requests and as HTTP, say.
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            state: self.state,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.state.clone(), self.classifier.clone())
    }
}
