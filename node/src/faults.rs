//! Hooks through which a simulation makes a node misbehave. The production `fd-node` runs
//! [`Honest`] and its config has no key to change that; the scenario runner implements
//! [`Faults`] (attacks, stragglers, nodes that leave) and passes it to [`crate::run_with`].

use std::time::Duration;

/// How a node deviates from the protocol. Every method defaults to honest behaviour.
pub trait Faults: Send + Sync + 'static {
    /// Whether the node leaves the federation (stops) when `round` is announced.
    fn leaves_at(&self, _round: u64) -> bool {
        false
    }

    /// Rewrites the node's soft labels for `round` (row-major, `classes` per row) before they
    /// are encoded and sent.
    fn tamper(&self, _round: u64, _probs: &mut [f32], _classes: usize) {}

    /// The private row count the node reports when the aggregator asks for it (an honest node
    /// reports `rows`).
    fn claimed_samples(&self, rows: u64) -> u64 {
        rows
    }

    /// Extra delay before the node submits its answer to `round`.
    fn delay(&self, _round: u64) -> Duration {
        Duration::ZERO
    }
}

/// A node that follows the protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Honest;

impl Faults for Honest {}
