//! Steering a breaker without undoing anyone else's change: every change
//! of state starts a new generation (a second `force_open` included), and
//! `transition_if` moves only from the generation it was given.

use tower_hardening_breaker::{CircuitBreakerLayer, CircuitState};

#[test]
fn transition_if_moves_only_from_the_generation_it_was_given() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let breaker = layer.handle();
    let read = breaker.snapshot().generation;
    let held = breaker
        .transition_if(read, CircuitState::ForcedOpen)
        .expect("nobody moved it");
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);
    assert_eq!(breaker.snapshot().generation, held);

    // A person forces it open again: same state, new generation.
    breaker.force_open();
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);
    assert_ne!(breaker.snapshot().generation, held);

    // Automation releasing its own hold changes nothing now.
    assert_eq!(breaker.transition_if(held, CircuitState::HalfOpen), None);
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);

    // `Open` is no manual state.
    let now = breaker.snapshot().generation;
    assert_eq!(breaker.transition_if(now, CircuitState::Open), None);
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);
}
