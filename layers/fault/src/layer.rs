use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::error::{ConfigError, invalid};
use crate::response::{GrpcStatus, HttpStatus, NoResponse};
use crate::service::Fault;
use crate::state::{FaultHandle, FaultState, Rates};

/// Builds a [`FaultLayer`]; every rate is 0 (nothing injected) until set.
///
/// | setting | default |
/// | --- | --- |
/// | `name` | `"fault"` |
/// | `error_rate`, `hang_rate`, response rate | 0 (their sum at most 1) |
/// | `latency` | 0 of calls, 0 s |
/// | `enabled` | true |
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct FaultBuilder<R = NoResponse> {
    name: Arc<str>,
    rates: Rates,
    respond: R,
}

impl Default for FaultBuilder {
    fn default() -> Self {
        FaultBuilder {
            name: Arc::from("fault"),
            rates: Rates {
                error: 0.0,
                respond: 0.0,
                hang: 0.0,
                latency: 0.0,
                latency_by: Duration::ZERO,
                status: 503,
                enabled: true,
            },
            respond: NoResponse,
        }
    }
}

impl<R> FaultBuilder<R> {
    /// The layer's name, in its errors.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Fails this share of calls with `InjectedFault`; in [0, 1].
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.rates.error = rate;
        self
    }

    /// Leaves this share of calls hanging (only a timeout above ends them);
    /// in [0, 1].
    pub fn hang_rate(mut self, rate: f64) -> Self {
        self.rates.hang = rate;
        self
    }

    /// Adds `by` of latency to this share of calls (rolled apart from the
    /// other faults); rate in [0, 1].
    pub fn latency(mut self, rate: f64, by: Duration) -> Self {
        self.rates.latency = rate;
        self.rates.latency_by = by;
        self
    }

    /// Answers this share of calls with `status` (an HTTP status, or a gRPC
    /// code), as the layer's response kind makes it ([`NoResponse`]: calls
    /// that roll a response go through; see [`http_status`](Self::http_status),
    /// [`grpc_status`](Self::grpc_status) and [`FaultLayer::responding`]).
    ///
    /// Named after the facade's configuration key (`status_rate`); the
    /// default status is 503 (a gRPC responder turns any status that is
    /// no gRPC code into 14 UNAVAILABLE).
    pub fn status_rate(mut self, rate: f64, status: u16) -> Self {
        self.rates.respond = rate;
        self.rates.status = status;
        self
    }

    /// The old name of [`status_rate`](Self::status_rate).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `status_rate`, after the configuration key"
    )]
    pub fn response_rate(self, rate: f64, status: u16) -> Self {
        self.status_rate(rate, status)
    }

    /// Starts switched off (see [`FaultHandle::enable`]).
    pub fn disabled(mut self) -> Self {
        self.rates.enabled = false;
        self
    }

    /// Answers this share of `http::Response<B>` calls with `status` and
    /// an empty body (`B: Default`).
    pub fn http_status(self, rate: f64, status: http::StatusCode) -> FaultBuilder<HttpStatus> {
        FaultBuilder {
            name: self.name,
            rates: Rates {
                respond: rate,
                status: status.as_u16(),
                ..self.rates
            },
            respond: HttpStatus,
        }
    }

    /// Answers this share of gRPC calls with the status `code` (14 is
    /// UNAVAILABLE) as a trailers-only response.
    pub fn grpc_status(self, rate: f64, code: u16) -> FaultBuilder<GrpcStatus> {
        FaultBuilder {
            name: self.name,
            rates: Rates {
                respond: rate,
                status: code,
                ..self.rates
            },
            respond: GrpcStatus,
        }
    }

    /// Checks every setting without building anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = |field, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(invalid(field, value, "a rate in [0, 1]"))
            }
        };
        rate("error_rate", self.rates.error)?;
        rate("hang_rate", self.rates.hang)?;
        rate("status_rate", self.rates.respond)?;
        rate("latency", self.rates.latency)?;
        if self.rates.error + self.rates.hang + self.rates.respond > 1.0 + 1e-9 {
            return Err(invalid(
                "error_rate",
                self.rates.error + self.rates.hang + self.rates.respond,
                "error, hang and response rates summing to at most 1",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", &*self.name, "a non-empty name"));
        }
        Ok(())
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<FaultLayer<R>, ConfigError> {
        self.validate()?;
        Ok(FaultLayer {
            state: Arc::new(FaultState::new(self.name, &self.rates)),
            respond: self.respond,
        })
    }
}

/// Injects faults into the service it wraps; see the crate docs.
///
/// One layer value is one set of rates: every service it builds and every
/// clone shares them, and [`handle`](Self::handle) changes them.
#[derive(Debug, Clone)]
pub struct FaultLayer<R = NoResponse> {
    state: Arc<FaultState>,
    respond: R,
}

impl FaultLayer {
    /// A builder with every rate at 0.
    pub fn builder() -> FaultBuilder {
        FaultBuilder::default()
    }
}

impl<R> FaultLayer<R> {
    /// The handle that changes this layer's rates.
    pub fn handle(&self) -> FaultHandle {
        FaultHandle {
            state: self.state.clone(),
        }
    }

    /// The same layer (the same rates and handle) answering injected
    /// responses as `respond` makes them: for one dependency reached both
    /// as plain requests and as HTTP or gRPC.
    #[must_use]
    pub fn responding<R2>(self, respond: R2) -> FaultLayer<R2> {
        FaultLayer {
            state: self.state,
            respond,
        }
    }
}

impl<S, R: Clone> Layer<S> for FaultLayer<R> {
    type Service = Fault<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault::new(inner, self.state.clone(), self.respond.clone())
    }
}
