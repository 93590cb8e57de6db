//! `[services.x.classify]`: which responses count as the service's
//! failures, and which are no evidence either way.

use serde::Deserialize;
use tower_hardening_core::GrpcCode;

use super::ConfigError;

/// Which response statuses count as a service's failures (for its
/// breaker, retries and metrics alike), and which are ignored (no evidence
/// either way: "a 502 from my dependency is not my failure").
///
/// Not written, the protocol decides: HTTP 5xx are failures; gRPC
/// UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED and
/// UNKNOWN are. `http_failures` / `grpc_failures` replace that set;
/// `http_ignored` / `grpc_ignored` take statuses out of it. gRPC codes are
/// names (`"UNAVAILABLE"`, any case) or numbers (`14`). An `Err` from the
/// service is a failure whatever is written here. In code,
/// [`HttpServiceLayer::classify`](crate::stack::HttpServiceLayer::classify)
/// replaces the whole rule for one stack.
///
/// ```
/// use tower_hardening::config::SystemHardeningConfig;
///
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.classify]
///     http_failures = [500, 503, 504]
///     http_ignored = [502]
///     grpc_failures = ["UNAVAILABLE", 4]
/// "#)?;
/// assert_eq!(config.service("api").classify.http_ignored, vec![502]);
///
/// let err = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.classify]
///     grpc_failures = ["UNAVAILABEL"]
/// "#).unwrap_err();
/// assert!(err.to_string().contains("services.api.classify.grpc_failures"), "{err}");
/// # Ok::<(), tower_hardening::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// The HTTP statuses (100 to 599) that are failures, in place of every
    /// 5xx; `None`: every 5xx.
    pub http_failures: Option<Vec<u16>>,
    /// HTTP statuses that are neither success nor failure.
    pub http_ignored: Vec<u16>,
    /// The gRPC codes that are failures, in place of the default five;
    /// `None`: the default.
    pub grpc_failures: Option<Vec<GrpcCodeName>>,
    /// gRPC codes that are neither success nor failure.
    pub grpc_ignored: Vec<GrpcCodeName>,
}

/// A gRPC status code as written in configuration: its name
/// (`"UNAVAILABLE"`, any case) or its number (`14`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GrpcCodeName {
    /// A code's number, 0 to 16.
    Number(i64),
    /// A code's name, as the gRPC specification spells it.
    Name(String),
}

impl std::fmt::Display for GrpcCodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcCodeName::Number(number) => write!(f, "{number}"),
            GrpcCodeName::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// Every gRPC code by number, with its name.
pub(crate) const GRPC_CODES: [(&str, GrpcCode); 17] = [
    ("OK", GrpcCode::Ok),
    ("CANCELLED", GrpcCode::Cancelled),
    ("UNKNOWN", GrpcCode::Unknown),
    ("INVALID_ARGUMENT", GrpcCode::InvalidArgument),
    ("DEADLINE_EXCEEDED", GrpcCode::DeadlineExceeded),
    ("NOT_FOUND", GrpcCode::NotFound),
    ("ALREADY_EXISTS", GrpcCode::AlreadyExists),
    ("PERMISSION_DENIED", GrpcCode::PermissionDenied),
    ("RESOURCE_EXHAUSTED", GrpcCode::ResourceExhausted),
    ("FAILED_PRECONDITION", GrpcCode::FailedPrecondition),
    ("ABORTED", GrpcCode::Aborted),
    ("OUT_OF_RANGE", GrpcCode::OutOfRange),
    ("UNIMPLEMENTED", GrpcCode::Unimplemented),
    ("INTERNAL", GrpcCode::Internal),
    ("UNAVAILABLE", GrpcCode::Unavailable),
    ("DATA_LOSS", GrpcCode::DataLoss),
    ("UNAUTHENTICATED", GrpcCode::Unauthenticated),
];

impl GrpcCodeName {
    /// The code's number, if it names one.
    pub fn number(&self) -> Option<i32> {
        match self {
            GrpcCodeName::Number(number) => {
                i32::try_from(*number).ok().filter(|n| (0..=16).contains(n))
            }
            GrpcCodeName::Name(name) => GRPC_CODES
                .iter()
                .position(|(known, _)| known.eq_ignore_ascii_case(name))
                .and_then(|index| i32::try_from(index).ok()),
        }
    }
}

impl ClassifyConfig {
    /// Checks every status and code; the same checks the stacks' build
    /// makes.
    pub(crate) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.http_failures(prefix)?;
        self.http_ignored(prefix)?;
        self.grpc_failures(prefix)?;
        self.grpc_ignored(prefix)?;
        Ok(())
    }

    fn http_statuses(list: &[u16], field: String) -> Result<Vec<u16>, ConfigError> {
        for status in list {
            if !(100..=599).contains(status) {
                return Err(ConfigError::invalid(
                    field,
                    status,
                    "an HTTP status, 100 to 599",
                ));
            }
        }
        Ok(list.to_vec())
    }

    fn grpc_codes(list: &[GrpcCodeName], field: String) -> Result<Vec<i32>, ConfigError> {
        list.iter()
            .map(|code| {
                code.number().ok_or_else(|| {
                    ConfigError::invalid(
                        field.clone(),
                        code,
                        "a gRPC code: 0 to 16, or its name (UNAVAILABLE, DEADLINE_EXCEEDED, ...)",
                    )
                })
            })
            .collect()
    }

    /// `http_failures`, checked.
    pub(crate) fn http_failures(&self, prefix: &str) -> Result<Option<Vec<u16>>, ConfigError> {
        self.http_failures
            .as_deref()
            .map(|list| Self::http_statuses(list, format!("{prefix}.http_failures")))
            .transpose()
    }

    /// `http_ignored`, checked: none of them also a failure.
    pub(crate) fn http_ignored(&self, prefix: &str) -> Result<Vec<u16>, ConfigError> {
        let field = format!("{prefix}.http_ignored");
        let ignored = Self::http_statuses(&self.http_ignored, field.clone())?;
        if let Some(both) = ignored.iter().find(|status| {
            self.http_failures
                .as_ref()
                .is_some_and(|f| f.contains(status))
        }) {
            return Err(ConfigError::invalid(
                field,
                both,
                "a status not also in `http_failures`",
            ));
        }
        Ok(ignored)
    }

    /// `grpc_failures`, checked: numbers, never OK.
    pub(crate) fn grpc_failures(&self, prefix: &str) -> Result<Option<Vec<i32>>, ConfigError> {
        let field = format!("{prefix}.grpc_failures");
        let Some(list) = &self.grpc_failures else {
            return Ok(None);
        };
        let codes = Self::grpc_codes(list, field.clone())?;
        if codes.contains(&0) {
            return Err(ConfigError::invalid(
                field,
                "OK (0)",
                "a code other than OK: OK never fails",
            ));
        }
        Ok(Some(codes))
    }

    /// `grpc_ignored`, checked: numbers, none of them also a failure.
    pub(crate) fn grpc_ignored(&self, prefix: &str) -> Result<Vec<i32>, ConfigError> {
        let field = format!("{prefix}.grpc_ignored");
        let ignored = Self::grpc_codes(&self.grpc_ignored, field.clone())?;
        let failures = self.grpc_failures(prefix)?.unwrap_or_default();
        if let Some(both) = ignored.iter().find(|code| failures.contains(code)) {
            return Err(ConfigError::invalid(
                field,
                both,
                "a code not also in `grpc_failures`",
            ));
        }
        Ok(ignored)
    }
}
