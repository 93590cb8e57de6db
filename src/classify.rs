//! The classifiers of the HTTP and gRPC stacks: the protocol's rule, or
//! the one a service's `[services.x.classify]` section or
//! [`HttpServiceLayer::classify`](crate::stack::HttpServiceLayer::classify)
//! gives. One value decides for the breaker, the retries, admission and
//! the metrics of a stack, over the stack's `BoxError` (an injected fault
//! status, which comes as an error, is classified as that status).
//!
//! ```
//! use http::{Response, StatusCode};
//! use tower_hardening::BoxError;
//! use tower_hardening::classify::HttpStatuses;
//! use tower_hardening::core::{Classify, Outcome};
//!
//! let status = |code: u16| -> Result<Response<()>, BoxError> {
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
use tower_hardening_core::{BoxError, Classify, ClassifyEos, GrpcCode, GrpcErrors, Outcome};

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

/// The status an error carries when it is an injected one (the fault
/// layer's [`InjectedStatus`](crate::fault::InjectedStatus)), to be
/// classified as that status would be: a chaos drill of a status the
/// service ignores must not open its breaker.
fn injected_status(error: &BoxError) -> Option<u16> {
    error
        .downcast_ref::<crate::fault::InjectedStatus>()
        .map(crate::fault::InjectedStatus::status)
}

impl<B> Classify<Response<B>, BoxError> for HttpStatuses {
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(response) => self.outcome(response.status()),
            Err(error) => match injected_status(error).and_then(|s| StatusCode::from_u16(s).ok()) {
                Some(status) => self.outcome(status),
                None => Outcome::Failure,
            },
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

impl GrpcStatuses {
    /// The outcome of a response whose `grpc-status` is `code` (for an
    /// injected one, which comes as an error: rare, so a made-up head is
    /// cheap enough).
    fn code_outcome(&self, code: i32) -> Outcome {
        let mut head = Response::new(());
        head.headers_mut()
            .insert("grpc-status", http::HeaderValue::from(code));
        self.own_verdict(head.headers())
            .or_else(|| ClassifyEos::<()>::classify_head(&self.base, &head))
            .unwrap_or(Outcome::Success)
    }
}

/// The code numbered `code`, if there is one.
fn grpc_code(code: i32) -> Option<GrpcCode> {
    usize::try_from(code)
        .ok()
        .and_then(|index| GRPC_CODES.get(index))
        .map(|(_, code)| *code)
}

impl<B> Classify<Response<B>, BoxError> for GrpcStatuses {
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(response) => {
                if let Some(outcome) = self.own_verdict(response.headers()) {
                    return outcome;
                }
                self.base.classify(result)
            }
            Err(error) => match injected_status(error) {
                Some(code) => self.code_outcome(i32::from(code)),
                None => Outcome::Failure,
            },
        }
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
