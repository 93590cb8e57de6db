//! The classifiers of the HTTP and gRPC stacks: the protocol's rule, or
//! the one a service's `[services.x.classify]` section or
//! [`HttpServiceLayer::classify`](crate::stack::HttpServiceLayer::classify)
//! gives. One value decides for the breaker, the retries, admission and
//! the metrics of a stack.
//!
//! ```
//! use http::{Response, StatusCode};
//! use tower_hardening::classify::HttpStatuses;
//! use tower_hardening::core::{Classify, Outcome};
//!
//! let status = |code: u16| -> Result<Response<()>, std::io::Error> {
//!     Ok(Response::builder().status(code).body(()).unwrap())
//! };
//! let ours = HttpStatuses::default().with_rule(|status: StatusCode| match status.as_u16() {
//!     502 => Outcome::Ignored, // the dependency's failure, not ours
//!     code if code >= 500 => Outcome::Failure,
//!     _ => Outcome::Success,
//! });
//! assert_eq!(ours.classify(&status(502)), Outcome::Ignored);
//! assert_eq!(ours.classify(&status(503)), Outcome::Failure);
//! assert_eq!(HttpStatuses::default().classify(&status(502)), Outcome::Failure);
//! ```

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode};
use tower_hardening_core::{Classify, ClassifyEos, GrpcCode, GrpcErrors, Outcome};

use crate::config::ClassifyConfig;
use crate::config::classify::GRPC_CODES;

/// A rule an application gives in code: the outcome of each status.
type Rule<S> = Arc<dyn Fn(S) -> Outcome + Send + Sync>;

/// Classifies HTTP responses: 5xx are failures unless the service's
/// configuration or rule says otherwise; an `Err` is a failure.
#[derive(Clone, Default)]
pub struct HttpStatuses {
    /// `None`: the protocol's rule (nothing to look up per response).
    rules: Option<Arc<HttpRules>>,
}

#[derive(Default)]
struct HttpRules {
    failures: Option<Vec<u16>>,
    ignored: Vec<u16>,
    rule: Option<Rule<StatusCode>>,
}

impl fmt::Debug for HttpStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("HttpStatuses");
        if let Some(rules) = &self.rules {
            out.field("failures", &rules.failures)
                .field("ignored", &rules.ignored)
                .field("rule", &rules.rule.as_ref().map(|_| "Fn"));
        }
        out.finish()
    }
}

impl HttpStatuses {
    /// The rule of `config` (its lists checked by `validate()`; an
    /// entry out of range is left out).
    pub fn from_config(config: &ClassifyConfig) -> Self {
        if config == &ClassifyConfig::default() {
            return HttpStatuses::default();
        }
        HttpStatuses {
            rules: Some(Arc::new(HttpRules {
                failures: config.http_failures("").ok().flatten(),
                ignored: config.http_ignored("").unwrap_or_default(),
                rule: None,
            })),
        }
    }

    /// Decides every response status by `rule`, in place of the
    /// configured lists.
    #[must_use]
    pub fn with_rule(self, rule: impl Fn(StatusCode) -> Outcome + Send + Sync + 'static) -> Self {
        HttpStatuses {
            rules: Some(Arc::new(HttpRules {
                rule: Some(Arc::new(rule)),
                ..HttpRules::default()
            })),
        }
    }

    /// The outcome of a response with `status`.
    pub fn outcome(&self, status: StatusCode) -> Outcome {
        let default = || {
            if status.is_server_error() {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        };
        let Some(rules) = &self.rules else {
            return default();
        };
        if let Some(rule) = &rules.rule {
            return rule(status);
        }
        let code = status.as_u16();
        if rules.ignored.contains(&code) {
            return Outcome::Ignored;
        }
        match &rules.failures {
            Some(failures) if failures.contains(&code) => Outcome::Failure,
            Some(_) => Outcome::Success,
            None => default(),
        }
    }
}

impl<B, E> Classify<Response<B>, E> for HttpStatuses {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.outcome(response.status()),
            Err(_) => Outcome::Failure,
        }
    }
}

impl<B> ClassifyEos<B> for HttpStatuses {
    /// Always at the head: the status line says it all.
    fn classify_head(&self, response: &Response<B>) -> Option<Outcome> {
        Some(self.outcome(response.status()))
    }

    fn classify_end(&self, _: Option<&HeaderMap>) -> Outcome {
        Outcome::Success
    }
}

/// Classifies gRPC responses by their `grpc-status` (in the head, or in
/// the trailers): the default five codes (or the configured ones) are
/// failures, ignored codes are no evidence, a service's rule decides
/// when it has one; an `Err` is a failure.
#[derive(Clone, Default)]
pub struct GrpcStatuses {
    base: GrpcErrors,
    /// `None`: the base decides alone.
    rules: Option<Arc<GrpcRules>>,
}

#[derive(Default)]
struct GrpcRules {
    ignored: Vec<i32>,
    rule: Option<Rule<GrpcCode>>,
}

impl fmt::Debug for GrpcStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("GrpcStatuses");
        out.field("base", &self.base);
        if let Some(rules) = &self.rules {
            out.field("ignored", &rules.ignored)
                .field("rule", &rules.rule.as_ref().map(|_| "Fn"));
        }
        out.finish()
    }
}

impl GrpcStatuses {
    /// The rule of `config` (its lists checked by `validate()`; an
    /// entry that names no code is left out).
    pub fn from_config(config: &ClassifyConfig) -> Self {
        let base = match config.grpc_failures("").ok().flatten() {
            Some(codes) => GrpcErrors::failing_on(codes.into_iter().filter_map(grpc_code)),
            None => GrpcErrors::default(),
        };
        let ignored = config.grpc_ignored("").unwrap_or_default();
        let rules = (!ignored.is_empty()).then(|| {
            Arc::new(GrpcRules {
                ignored,
                rule: None,
            })
        });
        GrpcStatuses { base, rules }
    }

    /// Decides every `grpc-status` by `rule`, in place of the configured
    /// lists (a code outside 0 to 16 reaches it as `Unknown`).
    #[must_use]
    pub fn with_rule(self, rule: impl Fn(GrpcCode) -> Outcome + Send + Sync + 'static) -> Self {
        GrpcStatuses {
            base: self.base,
            rules: Some(Arc::new(GrpcRules {
                ignored: Vec::new(),
                rule: Some(Arc::new(rule)),
            })),
        }
    }

    /// The service's own verdict on the `grpc-status` in `headers`, if it
    /// has one for it.
    fn own_verdict(&self, headers: &HeaderMap) -> Option<Outcome> {
        let rules = self.rules.as_ref()?;
        let code: i32 = headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
        if let Some(rule) = &rules.rule {
            return Some(rule(grpc_code(code).unwrap_or(GrpcCode::Unknown)));
        }
        rules.ignored.contains(&code).then_some(Outcome::Ignored)
    }
}

/// The code numbered `code`, if there is one.
fn grpc_code(code: i32) -> Option<GrpcCode> {
    usize::try_from(code)
        .ok()
        .and_then(|index| GRPC_CODES.get(index))
        .map(|(_, code)| *code)
}

impl<B, E> Classify<Response<B>, E> for GrpcStatuses {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        if let Ok(response) = result
            && let Some(outcome) = self.own_verdict(response.headers())
        {
            return outcome;
        }
        self.base.classify(result)
    }
}

impl<B> ClassifyEos<B> for GrpcStatuses {
    fn classify_head(&self, response: &Response<B>) -> Option<Outcome> {
        self.own_verdict(response.headers())
            .or_else(|| self.base.classify_head(response))
    }

    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Outcome {
        trailers
            .and_then(|trailers| self.own_verdict(trailers))
            .unwrap_or_else(|| ClassifyEos::<B>::classify_end(&self.base, trailers))
    }
}
