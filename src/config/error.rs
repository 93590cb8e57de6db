use std::fmt;
use std::path::PathBuf;

/// Why a configuration was refused. Every variant names the field (or the
/// file) that was wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has a value outside what is allowed.
    Invalid {
        /// The field's path, e.g. `services.audio-processing.breaker.failure_rate_threshold`.
        field: String,
        /// The value given, as written.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The text did not parse: bad syntax, a wrong type, an unknown key, or
    /// a duration or size that does not parse.
    Parse {
        /// The field's path where the parser stopped (`.` for the top).
        field: String,
        /// `toml` or `json`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The configuration file could not be read, or its kind is unknown.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// The path of the field that was wrong (for a file error, `path`).
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Invalid { field, .. } | ConfigError::Parse { field, .. } => field,
            ConfigError::File { .. } => "path",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                field,
                value,
                allowed,
            } => write!(f, "invalid `{field}` = {value}: expected {allowed}"),
            ConfigError::Parse {
                field,
                format,
                message,
            } => write!(f, "invalid {format} configuration at `{field}`: {message}"),
            ConfigError::File { path, message } => {
                write!(f, "configuration file {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}
