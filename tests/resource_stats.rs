//! `resource_stats()` never adds figures of different units: each pool's
//! figures come on their own, with the kind of unit they count.

use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::limit::{Resource, ResourcePool};
use tower_hardening::{PoolUnit, SystemHardening};

#[tokio::test]
async fn bytes_of_memory_and_cores_of_a_cpu_pool_are_never_added() {
    let config = SystemHardeningConfig::from_toml_str("max_resource_memory = \"25GB\"").unwrap();
    let cpu = ResourcePool::builder("cpu")
        .resources((0..8).map(|i| Resource::new(format!("core-{i}")).attr("core", i)))
        .build()
        .unwrap();
    let slots = ResourcePool::builder("slots").capacity(4).build().unwrap();
    let hardening = SystemHardening::builder(config)
        .pool(cpu)
        .pool(slots)
        .build()
        .unwrap();
    let handle = hardening.handle();
    let stats = handle.resource_stats();

    let memory = &stats.pools["memory"];
    assert_eq!(memory.unit, PoolUnit::Bytes);
    assert_eq!(memory.stats.available, 25_000_000_000);
    let cpu = &stats.pools["cpu"];
    assert_eq!(cpu.unit, PoolUnit::Resources);
    assert_eq!(cpu.stats.available, 8);
    assert_eq!(stats.pools["slots"].unit, PoolUnit::Units);
    assert_eq!(stats.pools["slots"].stats.available, 4);

    // The totals that remain count leases and requests, the same thing in
    // every pool; no figure adds bytes to cores (25,000,000,008 "ready").
    assert_eq!(stats.active_allocations, 0);
    let text = format!("{stats:?}");
    assert!(
        !text.contains("25000000008") && !text.contains("25000000012"),
        "{text}"
    );
}
