//! `recoverable_services` names services registered in code: a name that
//! matches none is refused at build, naming the field and the name.

use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::managed::BoxFuture;
use tower_hardening::{BoxError, ManagedService, SystemHardening};

struct Backend;

impl ManagedService for Backend {
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A typo ("audio-procesing" for the registered "audio-processing") was
/// accepted, and the service was then silently never recovered.
#[test]
fn a_recoverable_service_that_names_nothing_is_refused() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
recoverable_services = ["audio-procesing"]
[services.audio-processing.breaker]
minimum_calls = 5
"#,
    )
    .unwrap();
    let built = SystemHardening::builder(config)
        .service("audio-processing", Backend)
        .build();
    match built {
        Ok(_) => panic!(
            "recoverable_services = [\"audio-procesing\"] names no registered service, and build() accepted it: \
             audio-processing will never be recovered"
        ),
        Err(err) => {
            let message = err.to_string();
            assert!(message.contains("recoverable_services"), "{message}");
            assert!(message.contains("audio-procesing"), "{message}");
        }
    }
}

/// The same with a configured section but no `ManagedService` at all: the
/// recovery manager has nothing to rebuild, so recovery is silently off.
#[test]
fn a_recoverable_service_without_a_managed_service_is_refused() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
recoverable_services = ["model-inference"]
[services.model-inference.breaker]
minimum_calls = 5
"#,
    )
    .unwrap();
    assert!(
        SystemHardening::builder(config).build().is_err(),
        "model-inference is recoverable but no ManagedService was registered for it: recovery can never run"
    );
}
