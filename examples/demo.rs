//! The main demo: loads `examples/hardening.toml` and prints what each
//! service will get. Grows with the library.

use tower_hardening::config::SystemHardeningConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hardening.toml");
    let config = SystemHardeningConfig::from_path(path)?;
    println!("configuration {path} is valid");
    for (name, service) in &config.services {
        println!(
            "{name}: criticality {}, breaker opens at {:.0}% failures",
            service.criticality,
            service.breaker.failure_rate_threshold * 100.0
        );
    }
    Ok(())
}
