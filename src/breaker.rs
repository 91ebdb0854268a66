//! Circuit breaking per target: after a run of failures a target is skipped for a cooldown,
//! then one probe request may go to it (half-open), and a success closes it again.
//!
//! The state is behind [`CircuitState`], shared by every request through one chain and its
//! clones (so one layer). [`Breaker`] keeps it in this process; a deployment of many replicas
//! can put it in a shared store (Redis...) by implementing the trait, without changing the
//! chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::trace::TARGET;

/// Whether an attempt may go to a target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Closed,
    /// Half-open: this request is the one probe; its outcome opens or closes the circuit.
    Probe,
    /// Open (or half-open with its probe out): skip it. `since` is its last failure, so that
    /// with every target open the least recently failed can still be tried.
    Open {
        /// Its last failure.
        since: Instant,
    },
}

/// Where the chain keeps its circuits: one per target name.
///
/// `admit` is asked before each attempt the chain plans (the first one included); `record` is
/// told how every attempt to a target ended. Implement it to share circuits between replicas.
pub trait CircuitState: Send + Sync + std::fmt::Debug {
    /// May an attempt go to `target` now? Returning [`Admission::Probe`] hands out the one
    /// probe of a half-open circuit.
    fn admit(&self, target: &str) -> Admission;
    /// An attempt to `target` succeeded (`true`) or failed in a way that counts (`false`).
    fn record(&self, target: &str, success: bool);
}

/// The in-process circuits: after `failures` consecutive failures a target is open for
/// `cooldown`; then one probe goes through; a success closes it, a failure opens it again.
/// A probe that never reports (its client went away) is given up on after another cooldown.
///
/// Default: 5 failures, 30 s cooldown.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    circuits: Mutex<HashMap<Arc<str>, Circuit>>,
}

/// One target's circuit.
#[derive(Debug, Clone, Copy)]
enum Circuit {
    Closed {
        failures: u32,
    },
    Open {
        since: Instant,
    },
    /// The probe went out at `probe`.
    HalfOpen {
        since: Instant,
        probe: Instant,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(5, Duration::from_secs(30))
    }
}

impl Breaker {
    /// Opens after `failures` consecutive failures (at least 1), for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breaker {
            failures: failures.max(1),
            cooldown,
            circuits: Mutex::new(HashMap::new()),
        }
    }
}

impl CircuitState for Breaker {
    fn admit(&self, target: &str) -> Admission {
        let now = Instant::now();
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        let Some(circuit) = circuits.get_mut(target) else {
            return Admission::Closed;
        };
        match *circuit {
            Circuit::Closed { .. } => Admission::Closed,
            Circuit::Open { since } if now < since + self.cooldown => Admission::Open { since },
            Circuit::HalfOpen { since, probe } if now < probe + self.cooldown => {
                Admission::Open { since }
            }
            Circuit::Open { since } | Circuit::HalfOpen { since, .. } => {
                *circuit = Circuit::HalfOpen { since, probe: now };
                tracing::info!(
                    target: TARGET,
                    { midstream.circuit = "half_open", midstream.target = target },
                    "circuit half-open: one probe goes to the target"
                );
                Admission::Probe
            }
        }
    }

    fn record(&self, target: &str, success: bool) {
        let now = Instant::now();
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        if success {
            if let Some(Circuit::Open { .. } | Circuit::HalfOpen { .. }) =
                circuits.insert(Arc::from(target), Circuit::Closed { failures: 0 })
            {
                tracing::info!(
                    target: TARGET,
                    { midstream.circuit = "closed", midstream.target = target },
                    "circuit closed: the target answered"
                );
            }
            return;
        }
        let circuit = circuits
            .entry(Arc::from(target))
            .or_insert(Circuit::Closed { failures: 0 });
        let opens = match circuit {
            Circuit::Closed { failures } => {
                *failures += 1;
                *failures >= self.failures
            }
            Circuit::HalfOpen { .. } | Circuit::Open { .. } => true,
        };
        if opens {
            if !matches!(circuit, Circuit::Open { .. }) {
                tracing::warn!(
                    target: TARGET,
                    {
                        midstream.circuit = "open",
                        midstream.target = target,
                        midstream.cooldown_s = self.cooldown.as_secs_f64(),
                    },
                    "circuit open: the target is skipped for the cooldown"
                );
            }
            *circuit = Circuit::Open { since: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_circuit_opens_after_its_failures_probes_once_after_the_cooldown_and_closes() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        breaker.record("a", false);
        assert_eq!(breaker.admit("a"), Admission::Closed);
        breaker.record("a", false);
        assert!(matches!(breaker.admit("a"), Admission::Open { .. }));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.admit("a"), Admission::Probe);
        assert!(
            matches!(breaker.admit("a"), Admission::Open { .. }),
            "one probe at a time"
        );
        breaker.record("a", true);
        assert_eq!(breaker.admit("a"), Admission::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_a_lost_probe_is_replaced_after_a_cooldown() {
        let breaker = Breaker::new(1, Duration::from_secs(10));
        breaker.record("a", false);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.admit("a"), Admission::Probe);
        breaker.record("a", false);
        assert!(matches!(breaker.admit("a"), Admission::Open { .. }));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.admit("a"), Admission::Probe);
        // Its client went away: no outcome. Another probe, one cooldown later.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(breaker.admit("a"), Admission::Open { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.admit("a"), Admission::Probe);
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        breaker.record("a", false);
        breaker.record("a", true);
        breaker.record("a", false);
        assert_eq!(breaker.admit("a"), Admission::Closed);
    }
}
