use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

/// A setting refused: by a layer's builder, or by the configuration file
/// that feeds the builders. One type for both, so a value the configuration
/// accepts is never refused by a builder with another kind of error, and
/// the reverse.
///
/// It names the field (a builder method, or the path of a configuration
/// key such as `services.audio-processing.breaker.failure_rate_threshold`),
/// the value given and what is allowed.
///
/// ```
/// use tower_hardening_core::{ConfigError, ConfigErrorKind};
///
/// let err = ConfigError::new("retry", "max_attempts", 0, "at least 1");
/// assert_eq!(err.field(), "max_attempts");
/// assert_eq!(err.to_string(), "invalid retry setting `max_attempts` = 0: expected at least 1");
///
/// // The configuration places a builder's error at the key it came from.
/// let err = err.at("services.audio.retry");
/// assert_eq!(err.field(), "services.audio.retry.max_attempts");
/// assert_eq!(err.kind(), ConfigErrorKind::Invalid);
/// assert_eq!(
///     err.to_string(),
///     "invalid `services.audio.retry.max_attempts` = 0: expected at least 1"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    /// The layer whose builder refused, while the error is not placed at
    /// a configuration key.
    layer: Option<&'static str>,
    field: Cow<'static, str>,
    value: String,
    allowed: Cow<'static, str>,
}

/// What kind of problem a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A value outside what is allowed.
    Invalid,
    /// Text that did not parse: bad syntax, a wrong type, an unknown key,
    /// or a duration or size that does not parse. `allowed` holds the
    /// parser's message.
    Parse,
    /// A configuration file that could not be read, or of an unknown kind.
    File,
}

impl ConfigError {
    /// `layer`'s setting `field` was given `value`; `allowed` says what
    /// would have been accepted.
    pub fn new(
        layer: &'static str,
        field: &'static str,
        value: impl fmt::Debug,
        allowed: &'static str,
    ) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            layer: Some(layer),
            field: Cow::Borrowed(field),
            value: format!("{value:?}"),
            allowed: Cow::Borrowed(allowed),
        }
    }

    /// The configuration key `field` (a path) holds `value`, outside what
    /// `allowed` says.
    pub fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            layer: None,
            field: Cow::Owned(field.into()),
            value: value.to_string(),
            allowed: Cow::Owned(allowed.into()),
        }
    }

    /// The `format` (`toml`, `json`, `environment`) text did not parse at
    /// `field`, with the parser's `message`.
    pub fn parse(
        format: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Parse,
            layer: Some(format),
            field: Cow::Owned(field.into()),
            value: String::new(),
            allowed: Cow::Owned(message.into()),
        }
    }

    /// The file at `path` could not be used, for `message`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            kind: ConfigErrorKind::File,
            layer: None,
            field: Cow::Borrowed("path"),
            value: path.display().to_string(),
            allowed: Cow::Owned(message.into()),
        }
    }

    /// The same error, with its field placed under the configuration key
    /// `prefix` (`services.audio.breaker` + `minimum_calls`).
    pub fn at(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() && self.kind == ConfigErrorKind::Invalid {
            self.field = Cow::Owned(format!("{prefix}.{}", self.field));
            self.layer = None;
        }
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The builder method or configuration key whose value was refused
    /// (`path` for a file error).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The layer whose builder refused ("circuit breaker", "retry", ...),
    /// or the format that did not parse; `None` once placed at a key.
    pub fn layer(&self) -> Option<&'static str> {
        self.layer
    }

    /// The value refused, as written (for a file error, the path).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is allowed (for parse and file errors, what went wrong).
    pub fn allowed(&self) -> &str {
        &self.allowed
    }

    /// The file an error of kind [`ConfigErrorKind::File`] is about.
    pub fn path(&self) -> Option<PathBuf> {
        (self.kind == ConfigErrorKind::File).then(|| PathBuf::from(&self.value))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConfigError {
            field,
            value,
            allowed,
            ..
        } = self;
        match (self.kind, self.layer) {
            (ConfigErrorKind::Invalid, Some(layer)) => write!(
                f,
                "invalid {layer} setting `{field}` = {value}: expected {allowed}"
            ),
            (ConfigErrorKind::Invalid, None) => {
                write!(f, "invalid `{field}` = {value}: expected {allowed}")
            }
            (ConfigErrorKind::Parse, format) => write!(
                f,
                "invalid {} configuration at `{field}`: {allowed}",
                format.unwrap_or("the")
            ),
            (ConfigErrorKind::File, _) => write!(f, "configuration file {value}: {allowed}"),
        }
    }
}

impl std::error::Error for ConfigError {}
