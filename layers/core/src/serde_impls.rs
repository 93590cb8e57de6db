//! `serde::Serialize` for the shared vocabulary (feature `serde`): snake
//! case names, durations in seconds as floats, times in milliseconds
//! since the Unix epoch, priorities by name (`low`, `normal`, `high`,
//! `critical`, or the number).
//!
//! ```
//! use tower_hardening_core::{CircuitState, Event, EventKind};
//!
//! let event = Event::new("audio", EventKind::CircuitTransition {
//!     from: CircuitState::Closed,
//!     to: CircuitState::Open,
//! });
//! let json = serde_json::to_value(&event).unwrap();
//! assert_eq!(json["service"], "audio");
//! assert_eq!(json["kind"]["circuit_transition"]["to"], "open");
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::{CircuitState, Event, EventKind, HealthState, Priority, RecoveryStep, RejectionKind};

impl Serialize for CircuitState {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

impl Serialize for HealthState {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

impl Serialize for RejectionKind {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut event = ser.serialize_struct("Event", 3)?;
        event.serialize_field("service", self.service())?;
        event.serialize_field("at", &millis_since_epoch(self.at()))?;
        event.serialize_field("kind", self.kind())?;
        event.end()
    }
}

impl Serialize for RecoveryStep {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            RecoveryStep::Started => ser.serialize_str("started"),
            RecoveryStep::Succeeded => ser.serialize_str("succeeded"),
            RecoveryStep::GaveUp => ser.serialize_str("gave_up"),
            RecoveryStep::Failed { error, retry_in } => {
                #[derive(Serialize)]
                struct Failed<'a> {
                    error: &'a str,
                    retry_in: Option<f64>,
                }
                #[derive(Serialize)]
                struct Tagged<'a> {
                    failed: Failed<'a>,
                }
                Tagged {
                    failed: Failed {
                        error,
                        retry_in: retry_in.map(seconds),
                    },
                }
                .serialize(ser)
            }
        }
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Kind<'a> {
            CircuitTransition {
                from: CircuitState,
                to: CircuitState,
            },
            CallRejected {
                rejection: RejectionKind,
            },
            RetryExhausted {
                attempts: u32,
                budget_exhausted: bool,
            },
            LeaseReclaimed {
                lease_id: u64,
                owner: &'a str,
            },
            Shed {
                priority: Priority,
            },
            RecoveryStep {
                attempt: u32,
                step: &'a RecoveryStep,
            },
            MemoryPressure {
                active: bool,
                used_bytes: u64,
                limit_bytes: u64,
            },
            PerformanceAlert {
                metric: &'a str,
                active: bool,
                value: f64,
                threshold: f64,
            },
            HealthChanged {
                from: HealthState,
                to: HealthState,
            },
            EndpointEjected {
                endpoint: &'a str,
                duration_seconds: f64,
                ejections: u32,
                reason: &'a str,
            },
            EndpointReturned {
                endpoint: &'a str,
            },
        }
        let kind = match self {
            EventKind::CircuitTransition { from, to } => Kind::CircuitTransition {
                from: *from,
                to: *to,
            },
            EventKind::CallRejected { rejection } => Kind::CallRejected {
                rejection: *rejection,
            },
            EventKind::RetryExhausted {
                attempts,
                budget_exhausted,
            } => Kind::RetryExhausted {
                attempts: *attempts,
                budget_exhausted: *budget_exhausted,
            },
            EventKind::LeaseReclaimed { lease_id, owner } => Kind::LeaseReclaimed {
                lease_id: *lease_id,
                owner,
            },
            EventKind::Shed { priority } => Kind::Shed {
                priority: *priority,
            },
            EventKind::RecoveryStep { attempt, step } => Kind::RecoveryStep {
                attempt: *attempt,
                step,
            },
            EventKind::MemoryPressure {
                active,
                used_bytes,
                limit_bytes,
            } => Kind::MemoryPressure {
                active: *active,
                used_bytes: *used_bytes,
                limit_bytes: *limit_bytes,
            },
            EventKind::PerformanceAlert {
                metric,
                active,
                value,
                threshold,
            } => Kind::PerformanceAlert {
                metric,
                active: *active,
                value: *value,
                threshold: *threshold,
            },
            EventKind::HealthChanged { from, to } => Kind::HealthChanged {
                from: *from,
                to: *to,
            },
            EventKind::EndpointEjected {
                endpoint,
                duration,
                ejections,
                reason,
            } => Kind::EndpointEjected {
                endpoint,
                duration_seconds: duration.as_secs_f64(),
                ejections: *ejections,
                reason,
            },
            EventKind::EndpointReturned { endpoint } => Kind::EndpointReturned { endpoint },
        };
        kind.serialize(ser)
    }
}
