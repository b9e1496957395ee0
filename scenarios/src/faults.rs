//! Simulated faults: attacks on the soft labels, stragglers, and nodes that leave. They
//! implement [`node::Faults`] and reach a node only through the scenario runner (in-process) or
//! the `fd-sim-node` wrapper (processes); the production `fd-node` has no way to set them.
//! [`CheckpointPause`] holds an aggregator mid-checkpoint ([`aggregator::faults::Faults`]) through
//! the `fd-sim-aggregator` wrapper, so that a test can kill it there.

use std::path::PathBuf;
use std::time::Duration;

use protocol::seed::{Stream, derive};
use serde::{Deserialize, Serialize};

/// Corrupted soft labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// Honest.
    #[default]
    None,
    /// Random probability vectors.
    Random,
    /// Uniform 1/C everywhere.
    Uniform,
    /// The probability mass moved to another class (c → C−1−c).
    LabelFlip,
    /// Over-confident: the logits multiplied by 10 before the softmax, i.e. p^10 renormalised.
    Scaled,
    /// A one-hot liar: all the mass on the flipped class of its honest prediction (c → C−1−c),
    /// the most weight a confidence-weighted rule can give.
    OneHotFlip,
}

/// The faults of one simulated node (the `simulation.toml` that `fd-sim-node` reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Simulation {
    /// Extra delay before each submission, in milliseconds (a straggler).
    pub delay_ms: u64,
    /// Replace honest soft labels with corrupted ones.
    pub attack: Attack,
    /// Leave the federation (stop) on receiving this round's announcement, without submitting.
    pub leave_at_round: Option<u64>,
    /// Seed of the random attack.
    pub seed: u64,
    /// The private row count to report instead of the true one (a weight takeover under
    /// `weighted_by_samples` when the roster declares no counts).
    pub claim_samples: Option<u64>,
}

impl Simulation {
    /// Whether this node follows the protocol (the seed alone changes nothing).
    pub fn is_honest(&self) -> bool {
        self.delay_ms == 0
            && self.attack == Attack::None
            && self.leave_at_round.is_none()
            && self.claim_samples.is_none()
    }
}

impl node::Faults for Simulation {
    fn leaves_at(&self, round: u64) -> bool {
        self.leave_at_round.is_some_and(|r| round >= r)
    }

    fn tamper(&self, round: u64, probs: &mut [f32], classes: usize) {
        corrupt(probs, classes, self.attack, derive(self.seed, Stream::Fault, round));
    }

    fn claimed_samples(&self, rows: u64) -> u64 {
        self.claim_samples.unwrap_or(rows)
    }

    fn delay(&self, _round: u64) -> Duration {
        Duration::from_millis(self.delay_ms)
    }
}

/// Holds the aggregator half-way through the checkpoint of each of `rounds`, once: it creates
/// `markers/checkpoint-N` and waits [`CheckpointPause::HOLD`] (a test kills it meanwhile). A
/// round whose marker exists (a restart running it again) goes through.
#[derive(Clone, Debug, Default)]
pub struct CheckpointPause {
    /// Rounds whose checkpoint is held.
    pub rounds: Vec<u64>,
    /// Folder of the markers.
    pub markers: PathBuf,
}

impl CheckpointPause {
    /// How long a checkpoint is held at most.
    pub const HOLD: Duration = Duration::from_secs(60);

    /// The marker of round `round`'s held checkpoint.
    pub fn marker(&self, round: u64) -> PathBuf {
        self.markers.join(format!("checkpoint-{round}"))
    }
}

impl aggregator::faults::Faults for CheckpointPause {
    fn mid_checkpoint(&self, round: u64) {
        let marker = self.marker(round);
        if !self.rounds.contains(&round) || marker.exists() {
            return;
        }
        if std::fs::create_dir_all(&self.markers).and_then(|()| std::fs::write(&marker, b"")).is_ok() {
            tracing::info!(round, "holding the checkpoint (simulation)");
            std::thread::sleep(Self::HOLD);
        }
    }
}

/// Applies `attack` to honest probabilities (rows of `classes`), in place.
pub fn corrupt(probs: &mut [f32], classes: usize, attack: Attack, seed: u64) {
    match attack {
        Attack::None => {}
        Attack::Scaled => {
            for row in probs.chunks_exact_mut(classes) {
                // softmax(10·z/T) = p^10 / Σ p^10 for p = softmax(z/T); computed in log space.
                let logs: Vec<f32> = row.iter().map(|p| 10.0 * p.max(1e-30).ln()).collect();
                let m = logs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = logs.iter().map(|l| (l - m).exp()).collect();
                let s: f32 = e.iter().sum();
                row.iter_mut().zip(e).for_each(|(p, v)| *p = v / s);
            }
        }
        Attack::Uniform => probs.iter_mut().for_each(|p| *p = 1.0 / classes as f32),
        Attack::OneHotFlip => {
            for row in probs.chunks_exact_mut(classes) {
                let top = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(c, _)| c);
                row.fill(0.0);
                row[classes - 1 - top] = 1.0;
            }
        }
        Attack::LabelFlip => {
            for row in probs.chunks_exact_mut(classes) {
                row.reverse();
            }
        }
        Attack::Random => {
            let mut state = seed;
            for row in probs.chunks_exact_mut(classes) {
                for p in row.iter_mut() {
                    state = protocol::seed::mix(state);
                    *p = (state % 10_000) as f32 + 1.0;
                }
                let s: f32 = row.iter().sum();
                row.iter_mut().for_each(|p| *p /= s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_keep_rows_probabilities_and_scaled_sharpens_without_moving_the_argmax() {
        let honest = vec![0.5f32, 0.3, 0.2, 0.1, 0.1, 0.8];
        for attack in [Attack::Random, Attack::Uniform, Attack::LabelFlip, Attack::Scaled, Attack::OneHotFlip] {
            let mut p = honest.clone();
            corrupt(&mut p, 3, attack, 7);
            for row in p.chunks_exact(3) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{attack:?}: {row:?}");
            }
            assert_ne!(p, honest, "{attack:?} changes the labels");
        }
        let mut p = honest.clone();
        corrupt(&mut p, 3, Attack::Scaled, 0);
        assert!(p[0] > 0.99 && p[5] > 0.99, "{p:?}");
        let mut p = honest;
        corrupt(&mut p, 3, Attack::LabelFlip, 0);
        assert_eq!(&p[..3], &[0.2, 0.3, 0.5]);
    }
}
