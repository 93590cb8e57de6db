//! Configuration from environment variables, alone or over a file, layered
//! by figment. Keys are the file's keys in upper case under a prefix, with
//! `__` between levels: `HARDENING_HEALTH_CHECK_INTERVAL=10s`,
//! `HARDENING_SERVICES__AUDIO_PROCESSING__BREAKER__FAILURE_RATE_THRESHOLD=0.3`,
//! `HARDENING_UPSTREAMS__MODEL_INFERENCE__OUTLIER__CONSECUTIVE_FAILURES=3`.
//! A service or upstream name is written with `_` for `-` (`AUDIO_PROCESSING` is
//! `audio-processing`), so names that hold `_` cannot be set from the
//! environment. A file under the environment may use either naming: its
//! camelCase keys (`healthCheckIntervalMs`) are renamed to the snake-case
//! ones before the variables are laid over them.

use std::path::Path;

use figment::providers::{Env, Format, Json, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider};

use super::{ConfigError, SystemHardeningConfig, THRESHOLD_ALIASES, TOP_LEVEL_ALIASES};

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
    ///
    /// The file may use the seed's camelCase keys: `healthCheckIntervalMs`
    /// in the file and `HARDENING_HEALTH_CHECK_INTERVAL` set is the
    /// variable's value. A file that writes one setting under both names
    /// is refused, naming both; a value the environment set is reported
    /// with the variable's name.
    pub fn from_path_and_env(path: impl AsRef<Path>, prefix: &str) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::file(path, err.to_string()))?;
        let extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase);
        let (format, data) = match extension.as_deref() {
            Some("toml") => ("toml", Toml::string(&text).data()),
            Some("json") => ("json", Json::string(&text).data()),
            _ => {
                return Err(ConfigError::file(
                    path,
                    "unknown kind of file: expected a .toml or .json extension",
                ));
            }
        };
        let mut data = data.map_err(|err| ConfigError::parse(format, ".", err.to_string()))?;
        let keys = data.remove(&Profile::Default).unwrap_or_default();
        // The environment names every key in snake case: the file's
        // camelCase keys take those names first, so that a variable
        // replaces the file's value instead of standing beside it.
        let file = Serialized::defaults(canonical_keys(keys)?);
        load(Figment::new().merge(file), prefix)
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
        // Service and upstream names are written with `_` for `-`.
        let section = ["services.", "upstreams."]
            .into_iter()
            .find_map(|section| Some((section, key.strip_prefix(section)?)));
        match section {
            Some((section, rest)) => match rest.split_once('.') {
                Some((name, field)) => {
                    format!("{section}{}.{field}", name.replace('_', "-")).into()
                }
                None => format!("{section}{}", rest.replace('_', "-")).into(),
            },
            None => key.into(),
        }
    });
    SystemHardeningConfig::from_figment(base.merge(env), Some(prefix))
}

/// The file's keys with the seed's camelCase names replaced by the
/// snake-case ones; a key written in both namings is refused, naming both.
fn canonical_keys(keys: Dict) -> Result<Dict, ConfigError> {
    let mut keys = renamed(keys, TOP_LEVEL_ALIASES, "")?;
    if let Some(Value::Dict(tag, thresholds)) = keys.get("performance_thresholds").cloned() {
        let thresholds = renamed(thresholds, THRESHOLD_ALIASES, "performance_thresholds.")?;
        keys.insert(
            "performance_thresholds".to_owned(),
            Value::Dict(tag, thresholds),
        );
    }
    Ok(keys)
}

fn renamed(keys: Dict, aliases: &[(&str, &str)], path: &str) -> Result<Dict, ConfigError> {
    let mut out = Dict::new();
    let mut written_as: std::collections::BTreeMap<String, String> = Default::default();
    for (key, value) in keys {
        let canonical = aliases
            .iter()
            .find(|(alias, _)| *alias == key)
            .map_or_else(|| key.clone(), |(_, field)| (*field).to_owned());
        if let Some(earlier) = written_as.insert(canonical.clone(), key.clone()) {
            return Err(ConfigError::invalid(
                format!("{path}{canonical}"),
                format_args!("written as both `{earlier}` and `{key}`"),
                "one key for each setting",
            ));
        }
        out.insert(canonical, value);
    }
    Ok(out)
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
    use crate::config::{SystemHardeningConfig, THRESHOLD_ALIASES, TOP_LEVEL_ALIASES};

    /// Parses `{ key: value }` (inside `performance_thresholds` when
    /// `nested`), for comparing two spellings of a key (a parse error
    /// names the key as written, so only whether it failed is kept).
    fn parse(key: &str, value: &str, nested: bool) -> Option<SystemHardeningConfig> {
        let json = if nested {
            format!(r#"{{"performance_thresholds": {{"{key}": {value}}}}}"#)
        } else {
            format!(r#"{{"{key}": {value}}}"#)
        };
        SystemHardeningConfig::from_json_str(&json).ok()
    }

    #[test]
    fn the_alias_tables_match_the_serde_aliases() {
        // Each camelCase key reads into the field the table says: the two
        // spellings agree on every kind of value.
        let values = [
            "true", "1500", r#""2s""#, "0.9", r#"["a"]"#, "{}", r#""1GB""#,
        ];
        for (aliases, nested) in [(TOP_LEVEL_ALIASES, false), (THRESHOLD_ALIASES, true)] {
            for (alias, field) in aliases {
                for value in values {
                    assert_eq!(
                        parse(alias, value, nested),
                        parse(field, value, nested),
                        "{alias} = {value}"
                    );
                }
            }
        }
        // And every camelCase key serde accepts is in a table: serde lists
        // the keys it expects when it meets an unknown one.
        for (probe, aliases) in [
            (r#"{"no_such_key": 1}"#, TOP_LEVEL_ALIASES),
            (
                r#"{"performance_thresholds": {"no_such_key": 1}}"#,
                THRESHOLD_ALIASES,
            ),
        ] {
            let err = SystemHardeningConfig::from_json_str(probe).unwrap_err();
            let message = err.to_string();
            let expected = message.split("expected one of").nth(1).unwrap_or_default();
            assert!(
                expected.contains(aliases[0].0),
                "serde lists aliases: {message}"
            );
            for key in expected.split('`').skip(1).step_by(2) {
                if key.chars().any(|c| c.is_ascii_uppercase()) {
                    assert!(
                        aliases.iter().any(|(alias, _)| *alias == key),
                        "{key} is a serde alias missing from the table: {message}"
                    );
                }
            }
        }
    }

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
