//! Configuration from environment variables, alone or over a file, layered
//! by figment. Keys are the file's keys in upper case under a prefix, with
//! `__` between levels: `HARDENING_HEALTH_CHECK_INTERVAL=10s`,
//! `HARDENING_SERVICES__AUDIO_PROCESSING__BREAKER__FAILURE_RATE_THRESHOLD=0.3`.
//! A service name is written with `_` for `-` (`AUDIO_PROCESSING` is
//! `audio-processing`), so names that hold `_` cannot be set from the
//! environment.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Json, Toml};

use super::{ConfigError, SystemHardeningConfig};

impl SystemHardeningConfig {
    /// Reads every `{prefix}_*` variable (`prefix` without the trailing
    /// `_`, e.g. `"HARDENING"`) over the defaults, then validates.
    ///
    /// A value that does not parse, or is refused by validation, is
    /// reported with the variable's name.
    ///
    /// ```
    /// use tower_hardening::config::SystemHardeningConfig;
    ///
    /// // With `HARDENING_HEALTH_CHECK_INTERVAL=10s` set, the interval is 10 s;
    /// // with `HARDENING_HEALTH_CHECK_INTERVAL=0`, the error's field is
    /// // `HARDENING_HEALTH_CHECK_INTERVAL`. With nothing set: the defaults.
    /// let config = SystemHardeningConfig::from_env("NO_SUCH_PREFIX")?;
    /// assert_eq!(config, SystemHardeningConfig::default());
    /// # Ok::<(), tower_hardening::config::ConfigError>(())
    /// ```
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        load(Figment::new(), prefix)
    }

    /// Reads the `.toml` or `.json` file at `path`, then the `{prefix}_*`
    /// variables over it (the environment wins), then validates.
    pub fn from_path_and_env(path: impl AsRef<Path>, prefix: &str) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::file(path, err.to_string()))?;
        let extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase);
        let file = match extension.as_deref() {
            Some("toml") => Figment::new().merge(Toml::string(&text)),
            Some("json") => Figment::new().merge(Json::string(&text)),
            _ => {
                return Err(ConfigError::file(
                    path,
                    "unknown kind of file: expected a .toml or .json extension",
                ));
            }
        };
        load(file, prefix)
    }

    fn from_figment(figment: Figment, prefix: Option<&str>) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(|err| {
            let field = err.path.join(".");
            let message = err.kind.to_string();
            match (prefix, from_env(&err.metadata)) {
                (Some(prefix), true) => {
                    ConfigError::parse("environment", var_name(prefix, &field), message)
                }
                _ => ConfigError::parse(
                    "configuration",
                    if field.is_empty() {
                        ".".to_owned()
                    } else {
                        field
                    },
                    message,
                ),
            }
        })?;
        config.validate().map_err(|err| match prefix {
            Some(prefix)
                if figment
                    .find_metadata(err.field())
                    .is_some_and(|meta| meta.name.contains("environment")) =>
            {
                ConfigError::invalid(var_name(prefix, err.field()), err.value(), err.allowed())
            }
            _ => err,
        })?;
        Ok(config)
    }
}

fn load(base: Figment, prefix: &str) -> Result<SystemHardeningConfig, ConfigError> {
    let prefix = prefix.trim_end_matches('_');
    let env = Env::prefixed(&format!("{prefix}_")).map(|key| {
        let key = key.as_str().to_ascii_lowercase().replace("__", ".");
        match key.strip_prefix("services.") {
            Some(rest) => match rest.split_once('.') {
                Some((service, field)) => {
                    format!("services.{}.{field}", service.replace('_', "-")).into()
                }
                None => format!("services.{}", rest.replace('_', "-")).into(),
            },
            None => key.into(),
        }
    });
    SystemHardeningConfig::from_figment(base.merge(env), Some(prefix))
}

fn from_env(metadata: &Option<figment::Metadata>) -> bool {
    metadata
        .as_ref()
        .is_some_and(|meta| meta.name.contains("environment"))
}

/// The variable that sets the key at `path` (`services.audio-processing.timeout`).
fn var_name(prefix: &str, path: &str) -> String {
    let mut name = prefix.to_owned();
    for part in path.split('.') {
        name.push_str(if name.len() == prefix.len() {
            "_"
        } else {
            "__"
        });
        name.push_str(&part.replace('-', "_").to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::var_name;

    #[test]
    fn variable_names_follow_the_key_path() {
        assert_eq!(
            var_name("HARDENING", "health_check_interval"),
            "HARDENING_HEALTH_CHECK_INTERVAL"
        );
        assert_eq!(
            var_name(
                "HARDENING",
                "services.audio-processing.breaker.minimum_calls"
            ),
            "HARDENING_SERVICES__AUDIO_PROCESSING__BREAKER__MINIMUM_CALLS"
        );
    }
}
