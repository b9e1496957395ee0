//! What follows any rule: renormalising, sharpening, and masking uncertain samples.

use serde::{Deserialize, Serialize};

use super::{Combined, ConsensusConfig, normalised_entropy};

/// Entropy reduction applied to the combined labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sharpen {
    /// None.
    #[default]
    None,
    /// p^β / Σ p^β, computed in log space (β ≥ 1).
    Power {
        /// Exponent β.
        beta: f32,
    },
    /// softmax(p / T_era), as in DS-FL's entropy reduction aggregation.
    Softmax {
        /// Temperature T_era.
        temperature: f32,
    },
}

/// Renormalises, sharpens and masks combined rows (the steps after any rule; a streaming caller
/// that fed a [`super::MeanAccumulator`] itself finishes with this, and its counts). A sample
/// whose count (nodes that contributed to it) is 0, or below `cfg.min_count`, is masked and its
/// row made uniform.
pub fn postprocess(mut probs: Vec<f32>, counts: Vec<u32>, classes: usize, cfg: &ConsensusConfig) -> Combined {
    renormalise(&mut probs, classes);
    sharpen(&mut probs, classes, &cfg.sharpen);
    let min = cfg.min_count.max(1);
    let weights = probs
        .chunks_exact_mut(classes)
        .zip(&counts)
        .map(|(row, &n)| match cfg.max_entropy {
            _ if n < min => {
                row.fill(1.0 / classes as f32);
                0.0
            }
            Some(h) if normalised_entropy(row) > h => 0.0,
            _ => 1.0,
        })
        .collect();
    Combined { probs, weights, counts, classes }
}

/// Rescales each row to sum to 1 (uniform if a row is all zeros).
pub fn renormalise(probs: &mut [f32], classes: usize) {
    for row in probs.chunks_exact_mut(classes) {
        let s: f32 = row.iter().sum();
        if s > 0.0 && s.is_finite() {
            row.iter_mut().for_each(|p| *p /= s);
        } else {
            row.iter_mut().for_each(|p| *p = 1.0 / classes as f32);
        }
    }
}

/// Applies sharpening in place; rows still sum to 1.
pub fn sharpen(probs: &mut [f32], classes: usize, how: &Sharpen) {
    let (scale, log_space) = match how {
        Sharpen::None => return,
        Sharpen::Power { beta } => (*beta, true),
        Sharpen::Softmax { temperature } => (1.0 / temperature, false),
    };
    for row in probs.chunks_exact_mut(classes) {
        // exp(s·x − max) with x = log p (power) or x = p (softmax): stable for any β.
        let x: Vec<f32> = row
            .iter()
            .map(|&p| if log_space { if p > 0.0 { scale * p.ln() } else { f32::NEG_INFINITY } } else { scale * p })
            .collect();
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for (dst, v) in row.iter_mut().zip(&x) {
            *dst = (v - m).exp();
            s += *dst;
        }
        row.iter_mut().for_each(|p| *p /= s);
    }
}
