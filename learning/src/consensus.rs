//! Consensus: pure functions that combine the soft labels of many nodes for the same samples.
//!
//! Inputs are row-major `samples × classes` probability matrices. Every rule returns rows that
//! sum to 1 and does not depend on the order of the nodes. The mean rules stream: a
//! [`MeanAccumulator`] takes one node's matrix at a time and never holds N of them.
//! Median and trimmed mean need every value of a coordinate at once, so they take all matrices.

use serde::{Deserialize, Serialize};

use crate::Error;

/// How per-node soft labels are combined.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Plain mean.
    #[default]
    Mean,
    /// Mean weighted by each node's local sample count.
    WeightedBySamples,
    /// Per sample, each node weighted by its confidence 1 − H(p)/log C.
    Confidence,
    /// Coordinate-wise median (robust to a minority of bad nodes).
    Median,
    /// Coordinate-wise mean after dropping the `trim` fraction of lowest and of highest values.
    TrimmedMean {
        /// Fraction trimmed at each end, in [0, 0.5).
        trim: f32,
    },
}

impl Rule {
    /// Whether the rule can stream (mean family).
    pub fn streams(&self) -> bool {
        matches!(self, Rule::Mean | Rule::WeightedBySamples | Rule::Confidence)
    }
}

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

/// A consensus rule with its post-processing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Combination rule.
    pub rule: Rule,
    /// Sharpening applied after combining.
    pub sharpen: Sharpen,
    /// Samples whose consensus has a normalised entropy above this get weight 0 (masked).
    pub max_entropy: Option<f32>,
}

impl ConsensusConfig {
    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if let Rule::TrimmedMean { trim } = self.rule
            && !(0.0..0.5).contains(&trim)
        {
            return Err(Error::Config(format!("trimmed mean: trim {trim} must be in [0, 0.5)")));
        }
        match self.sharpen {
            Sharpen::Power { beta } if !(beta.is_finite() && beta >= 1.0) => {
                return Err(Error::Config(format!("sharpen power: beta {beta} must be ≥ 1")));
            }
            Sharpen::Softmax { temperature } if !(temperature.is_finite() && temperature > 0.0) => {
                return Err(Error::Config(format!("sharpen softmax: temperature {temperature} must be positive")));
            }
            _ => {}
        }
        if let Some(h) = self.max_entropy
            && !(0.0..=1.0).contains(&h)
        {
            return Err(Error::Config(format!("max_entropy {h} must be in [0, 1]")));
        }
        Ok(())
    }
}

/// The combined soft labels and a weight per sample (0 = masked).
#[derive(Clone, Debug, PartialEq)]
pub struct Combined {
    /// `samples × classes`, rows summing to 1.
    pub probs: Vec<f32>,
    /// Per-sample weight in [0, 1].
    pub weights: Vec<f32>,
    /// Number of classes.
    pub classes: usize,
}

/// Normalised entropy H(p)/log C of one row, in [0, 1].
pub fn normalised_entropy(row: &[f32]) -> f32 {
    if row.len() < 2 {
        return 0.0;
    }
    let h: f32 = row.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
    (h / (row.len() as f32).ln()).clamp(0.0, 1.0)
}

/// Fixed-point scale of [`MeanAccumulator`]: each weighted probability is rounded to a multiple
/// of 2⁻³⁰ before it is added, so the sum is exact integer arithmetic and does not depend on the
/// order in which nodes arrive (float addition would, in its last bits). Node weights are capped
/// at [`MAX_NODE_WEIGHT`] so that a term stays below 2⁵⁰ and 8,192 nodes fit an `i64`.
const FIXED: f64 = (1u64 << 30) as f64;

/// Largest node weight (e.g. local sample count) the streaming mean takes; larger ones are capped.
pub const MAX_NODE_WEIGHT: f64 = (1u64 << 20) as f64;

/// Streaming (weighted) mean of soft-label matrices, independent of arrival order.
#[derive(Clone, Debug)]
pub struct MeanAccumulator {
    sum: Vec<i64>,
    /// Per-sample total weight (per-sample confidence rules need one per row).
    weight: Vec<i64>,
    classes: usize,
    nodes: usize,
    confidence: bool,
}

impl MeanAccumulator {
    /// An empty accumulator. With `confidence`, each row is weighted by its own confidence.
    pub fn new(samples: usize, classes: usize, confidence: bool) -> Self {
        Self { sum: vec![0; samples * classes], weight: vec![0; samples], classes, nodes: 0, confidence }
    }

    /// Adds one node's matrix with weight `w` (its sample count, or 1).
    pub fn add(&mut self, probs: &[f32], w: f64) -> Result<(), Error> {
        if probs.len() != self.sum.len() {
            return Err(Error::Shape(format!("matrix of {} values, expected {}", probs.len(), self.sum.len())));
        }
        if !(w.is_finite() && w >= 0.0) {
            return Err(Error::Consensus { detail: format!("node weight {w} must be finite and ≥ 0") });
        }
        if self.nodes >= 8192 {
            return Err(Error::Consensus { detail: "the streaming mean takes at most 8,192 nodes".into() });
        }
        let w = w.min(MAX_NODE_WEIGHT);
        let c = self.classes;
        for ((acc, row), total) in self.sum.chunks_exact_mut(c).zip(probs.chunks_exact(c)).zip(self.weight.iter_mut()) {
            let rw = if self.confidence { w * (1.0 - normalised_entropy(row) as f64).max(1e-6) } else { w };
            let scale = rw * FIXED;
            // Values are non-negative probabilities: adding ½ and truncating rounds to nearest.
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += (scale * p.max(0.0) as f64 + 0.5) as i64;
            }
            *total += (scale + 0.5) as i64;
        }
        self.nodes += 1;
        Ok(())
    }

    /// The mean so far, rows renormalised.
    pub fn finish(&self) -> Vec<f32> {
        let c = self.classes;
        let mut out = Vec::with_capacity(self.sum.len());
        for (row, &w) in self.sum.chunks_exact(c).zip(&self.weight) {
            let s: i64 = row.iter().sum();
            if w > 0 && s > 0 {
                out.extend(row.iter().map(|&v| (v as f64 / s as f64) as f32));
            } else {
                out.extend(std::iter::repeat_n(1.0 / c as f32, c));
            }
        }
        out
    }

    /// Number of matrices added.
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

/// Combines node matrices (each with its local sample count) under `cfg`.
pub fn combine(inputs: &[(&[f32], u64)], samples: usize, classes: usize, cfg: &ConsensusConfig) -> Result<Combined, Error> {
    cfg.validate()?;
    if inputs.is_empty() {
        return Err(Error::Consensus { detail: "no soft labels to combine".into() });
    }
    if let Some((i, _)) = inputs.iter().enumerate().find(|(_, (m, _))| m.len() != samples * classes) {
        return Err(Error::Shape(format!("node matrix {i} does not have {samples} × {classes} values")));
    }
    let probs = match &cfg.rule {
        Rule::Mean | Rule::WeightedBySamples | Rule::Confidence => {
            let mut acc = MeanAccumulator::new(samples, classes, cfg.rule == Rule::Confidence);
            for (m, n) in inputs {
                let w = if cfg.rule == Rule::WeightedBySamples { *n as f64 } else { 1.0 };
                acc.add(m, w)?;
            }
            acc.finish()
        }
        Rule::Median => coordinatewise(inputs, samples * classes, |v| {
            let n = v.len();
            if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
        }),
        Rule::TrimmedMean { trim } => {
            let trim = *trim;
            coordinatewise(inputs, samples * classes, move |v| {
                let k = ((v.len() as f32) * trim).floor() as usize;
                let kept = &v[k..v.len() - k];
                kept.iter().sum::<f32>() / kept.len() as f32
            })
        }
    };
    Ok(postprocess(probs, classes, cfg))
}

/// Renormalises, sharpens and masks combined rows (the steps after any rule; a streaming caller
/// that fed a [`MeanAccumulator`] itself finishes with this).
pub fn postprocess(mut probs: Vec<f32>, classes: usize, cfg: &ConsensusConfig) -> Combined {
    renormalise(&mut probs, classes);
    sharpen(&mut probs, classes, &cfg.sharpen);
    let weights = probs
        .chunks_exact(classes)
        .map(|row| match cfg.max_entropy {
            Some(h) if normalised_entropy(row) > h => 0.0,
            _ => 1.0,
        })
        .collect();
    Combined { probs, weights, classes }
}

/// Applies `f` to the sorted values of each coordinate across nodes.
fn coordinatewise(inputs: &[(&[f32], u64)], len: usize, f: impl Fn(&[f32]) -> f32) -> Vec<f32> {
    let mut column = Vec::with_capacity(inputs.len());
    (0..len)
        .map(|j| {
            column.clear();
            column.extend(inputs.iter().map(|(m, _)| m[j]));
            column.sort_by(f32::total_cmp);
            f(&column)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matrices() -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<u64>, usize, usize)> {
        (1usize..8, 1usize..12, 2usize..6).prop_flat_map(|(nodes, samples, classes)| {
            (
                proptest::collection::vec(proptest::collection::vec(0.001f32..1.0, samples * classes), nodes),
                proptest::collection::vec(1u64..1000, nodes),
            )
                .prop_map(move |(mut ms, ns)| {
                    for m in &mut ms {
                        renormalise(m, classes);
                    }
                    (ms, ns, samples, classes)
                })
        })
    }

    fn rules() -> Vec<ConsensusConfig> {
        let mut v: Vec<ConsensusConfig> = [
            Rule::Mean,
            Rule::WeightedBySamples,
            Rule::Confidence,
            Rule::Median,
            Rule::TrimmedMean { trim: 0.2 },
        ]
        .into_iter()
        .map(|rule| ConsensusConfig { rule, ..Default::default() })
        .collect();
        v.push(ConsensusConfig { sharpen: Sharpen::Power { beta: 3.0 }, max_entropy: Some(0.9), ..Default::default() });
        v.push(ConsensusConfig { sharpen: Sharpen::Softmax { temperature: 0.1 }, ..Default::default() });
        v
    }

    proptest! {
        #[test]
        fn rows_sum_to_one_and_node_order_does_not_matter((ms, ns, samples, classes) in matrices(), rot in 0usize..8) {
            for cfg in rules() {
                let fwd: Vec<(&[f32], u64)> = ms.iter().map(|m| m.as_slice()).zip(ns.iter().copied()).collect();
                let mut rev = fwd.clone();
                rev.reverse();
                let k = rot % rev.len();
                rev.rotate_left(k);
                let a = combine(&fwd, samples, classes, &cfg).unwrap();
                let b = combine(&rev, samples, classes, &cfg).unwrap();
                for row in a.probs.chunks_exact(classes) {
                    let s: f32 = row.iter().sum();
                    prop_assert!((s - 1.0).abs() < 1e-4, "{:?}: row sums to {}", cfg.rule, s);
                    prop_assert!(row.iter().all(|p| p.is_finite() && *p >= 0.0));
                }
                // Exactly equal, not just close: the result is independent of arrival order.
                prop_assert_eq!(&a.probs, &b.probs, "{:?}", cfg.rule);
                prop_assert_eq!(a.weights, b.weights);
            }
        }

        #[test]
        fn power_sharpening_keeps_the_argmax_and_lowers_entropy((ms, _ns, _samples, classes) in matrices(), beta in 1.0f32..50.0) {
            let mut p = ms[0].clone();
            sharpen(&mut p, classes, &Sharpen::Power { beta });
            for (a, b) in ms[0].chunks_exact(classes).zip(p.chunks_exact(classes)) {
                prop_assert_eq!(crate::train::argmax(a), crate::train::argmax(b));
                prop_assert!(normalised_entropy(b) <= normalised_entropy(a) + 1e-5);
            }
        }
    }

    #[test]
    fn median_and_trimmed_mean_outvote_a_minority_of_liars() {
        let honest = vec![0.8f32, 0.1, 0.1];
        let liar = vec![0.0f32, 0.0, 1.0];
        let inputs: Vec<(&[f32], u64)> = vec![(&honest, 1), (&honest, 1), (&honest, 1), (&liar, 1), (&liar, 1)];
        for rule in [Rule::Median, Rule::TrimmedMean { trim: 0.4 }] {
            let c = combine(&inputs, 1, 3, &ConsensusConfig { rule: rule.clone(), ..Default::default() }).unwrap();
            assert!((c.probs[0] - 0.8).abs() < 1e-5, "{rule:?}: {:?}", c.probs);
        }
        let mean = combine(&inputs, 1, 3, &ConsensusConfig::default()).unwrap();
        assert!(mean.probs[2] > 0.4, "the plain mean is pulled towards the liars: {:?}", mean.probs);
    }

    #[test]
    fn weighting_masking_and_errors() {
        let a = vec![1.0f32, 0.0];
        let b = vec![0.0f32, 1.0];
        let c = combine(&[(&a, 3), (&b, 1)], 1, 2, &ConsensusConfig { rule: Rule::WeightedBySamples, ..Default::default() }).unwrap();
        assert!((c.probs[0] - 0.75).abs() < 1e-6);
        let sure = vec![0.99f32, 0.01];
        let unsure = vec![0.4f32, 0.6];
        let c = combine(&[(&sure, 1), (&unsure, 1)], 1, 2, &ConsensusConfig { rule: Rule::Confidence, ..Default::default() }).unwrap();
        assert!(c.probs[0] > 0.8, "the confident node dominates: {:?}", c.probs);
        let flat = vec![0.5f32, 0.5, 0.9, 0.1];
        let c = combine(&[(&flat, 1)], 2, 2, &ConsensusConfig { max_entropy: Some(0.9), ..Default::default() }).unwrap();
        assert_eq!(c.weights, vec![0.0, 1.0]);
        assert!(matches!(combine(&[], 1, 2, &ConsensusConfig::default()), Err(Error::Consensus { .. })));
        assert!(matches!(combine(&[(&a, 1)], 2, 2, &ConsensusConfig::default()), Err(Error::Shape(_))));
        let bad = ConsensusConfig { rule: Rule::TrimmedMean { trim: 0.5 }, ..Default::default() };
        assert!(matches!(combine(&[(&a, 1)], 1, 2, &bad), Err(Error::Config(_))));
        let mut acc = MeanAccumulator::new(1, 2, false);
        assert!(matches!(acc.add(&a, f64::NAN), Err(Error::Consensus { .. })));
        assert!(matches!(acc.add(&a[..1], 1.0), Err(Error::Shape(_))));
        assert_eq!(acc.nodes(), 0, "a refused matrix is not counted");
    }

    #[test]
    fn huge_beta_does_not_overflow() {
        let mut p = vec![0.6f32, 0.3, 0.1];
        sharpen(&mut p, 3, &Sharpen::Power { beta: 1000.0 });
        assert!(p.iter().all(|v| v.is_finite()));
        assert!((p[0] - 1.0).abs() < 1e-6);
    }
}
