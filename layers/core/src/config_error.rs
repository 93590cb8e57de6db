use std::fmt;

/// A layer setting outside what is allowed: names the layer, the setting,
/// the value given and what is allowed. Every layer's builder returns it.
///
/// ```
/// use tower_hardening_core::ConfigError;
///
/// let err = ConfigError::new("retry", "max_attempts", 0, "at least 1");
/// assert_eq!(err.field(), "max_attempts");
/// assert_eq!(err.to_string(), "invalid retry setting `max_attempts` = 0: expected at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    value: String,
    allowed: &'static str,
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
            layer,
            field,
            value: format!("{value:?}"),
            allowed,
        }
    }

    /// The builder method whose value was refused.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The layer the setting belongs to ("circuit breaker", "retry", ...).
    pub fn layer(&self) -> &'static str {
        self.layer
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} setting `{}` = {}: expected {}",
            self.layer, self.field, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}
