//! Serde helpers for the units the configuration accepts: durations as
//! human strings ("30s", "500ms") or integer milliseconds, and byte sizes
//! as human strings ("1GB", "512MiB") or integer bytes.
//!
//! Parsing is humantime's and bytesize's; these helpers only decide which
//! of them a value goes to and phrase the error.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

const DURATION_EXPECTED: &str =
    "a duration such as \"30s\", \"500ms\", \"2m\", or an integer number of milliseconds";
const SIZE_EXPECTED: &str =
    "a size such as \"1GB\", \"512MiB\", \"4 GiB\", or an integer number of bytes";

/// `#[serde(with = "units::duration")]`
pub(crate) mod duration {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// `#[serde(with = "units::optional_duration")]`, for `Option<Duration>`.
pub(crate) mod optional_duration {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor).map(Some)
    }
}

/// `#[serde(with = "units::optional_byte_size")]`, for `Option<u64>` bytes.
pub(crate) mod optional_byte_size {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(ByteSizeVisitor).map(Some)
    }
}

/// `#[serde(with = "units::priority")]`: a priority name or a number.
pub(crate) mod priority {
    use super::*;
    use tower_hardening_core::Priority;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        d.deserialize_any(PriorityVisitor)
    }

    struct PriorityVisitor;

    impl Visitor<'_> for PriorityVisitor {
        type Value = Priority;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("low, normal, high, critical, or a number from 0 to 255")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Priority, E> {
            u8::try_from(v)
                .map(Priority)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Priority, E> {
            u8::try_from(v)
                .map(Priority)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Priority, E> {
            v.parse().map_err(E::custom)
        }
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v.trim()).map_err(|err| {
            E::custom(format_args!(
                "invalid duration {v:?} ({err}): expected {DURATION_EXPECTED}"
            ))
        })
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|err| {
                E::custom(format_args!(
                    "invalid size {v:?} ({err}): expected {SIZE_EXPECTED}"
                ))
            })
    }
}
