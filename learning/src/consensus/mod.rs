//! Consensus: pure functions that combine the soft labels of many nodes for the same samples.
//!
//! Inputs are row-major `samples × classes` probability matrices. Every rule returns rows that
//! sum to 1 and does not depend on the order of the nodes. The plain and sample-weighted means
//! stream: a [`MeanAccumulator`] takes one node's matrix at a time and never holds N of them.
//! Median and trimmed mean need every value of a coordinate at once, and the confidence rule
//! needs every node's weight of a sample to cap each one's share ([`capped_weights`]), so they
//! take all matrices.
//!
//! No rule lets one node take a sample over: the confidence rule caps any node's share of every
//! sample at a multiple of the equal share, and robust rules that would quietly degrade (a
//! trimmed mean that trims nothing, the median of two) are refused by the aggregator's config
//! before a round runs. No consensus is released from fewer than [`MIN_PARTICIPANTS`] nodes.
//!
//! Abstention ([`combine_abstaining`]): a node may abstain on some samples; every rule then
//! combines, sample by sample, only the nodes that did not abstain on it (the median and the
//! trimmed mean of the values of those nodes, the confidence rule's cap over those nodes), and a
//! sample every node abstained on gets weight 0 and count 0. A node's abstention leaves that
//! sample's consensus exactly as if the node had not submitted it.

use serde::{Deserialize, Serialize};

use crate::Error;

mod clip;
mod combine;
mod mean;
mod post;
mod weights;

pub use clip::center_clip;
pub use combine::{combine, combine_abstaining, sample_counts};
pub use mean::{MAX_NODE_WEIGHT, MeanAccumulator};
pub use post::{Sharpen, postprocess, renormalise, sharpen};
pub use weights::{capped_weights, confidence_weights, confidence_weights_abstaining, normalised_entropy};

/// How per-node soft labels are combined.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Plain mean.
    #[default]
    Mean,
    /// Mean weighted by each node's local sample count.
    WeightedBySamples,
    /// Per sample, each node weighted by its confidence (1 − H(p)/log C)^`power`, with no node
    /// carrying more than `max_share` times the equal share 1/n of any sample's weight.
    Confidence {
        /// Tempering exponent in (0, 1]: 1 keeps the confidence as it is, smaller values flatten
        /// the weights towards the plain mean.
        #[serde(default = "one")]
        power: f32,
        /// Largest share of a sample's weight one node may carry, as a multiple (≥ 1) of the
        /// equal share 1/n: 1 is the plain mean, 2 lets a confident node count as at most two
        /// average ones. Without it, a node that sends one-hot rows weighs 1 against honest rows
        /// of 0.1–0.5 and counts as 2–10 honest nodes.
        #[serde(default = "two")]
        max_share: f32,
    },
    /// Coordinate-wise median (robust to a minority of bad nodes).
    Median,
    /// Coordinate-wise mean after dropping the `trim` fraction of lowest and of highest values.
    TrimmedMean {
        /// Fraction trimmed at each end, in [0, 0.5).
        trim: f32,
    },
}

fn one() -> f32 {
    1.0
}

fn two() -> f32 {
    2.0
}

impl Rule {
    /// The confidence rule with its default tempering (none) and share cap (2 × the equal share).
    pub const CONFIDENCE: Rule = Rule::Confidence { power: 1.0, max_share: 2.0 };

    /// Whether the rule can stream (plain and sample-weighted means).
    pub fn streams(&self) -> bool {
        matches!(self, Rule::Mean | Rule::WeightedBySamples)
    }
}

/// Fewest submissions a consensus is released from: with two, each node learns the other's
/// labels exactly from the consensus, and the median of two is their mean.
pub const MIN_PARTICIPANTS: usize = 3;

/// How many values a trimmed mean drops at each end from `n` values.
pub fn trimmed_count(n: usize, trim: f32) -> usize {
    ((n as f32) * trim).floor() as usize
}

/// A consensus rule with its post-processing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Combination rule.
    pub rule: Rule,
    /// Sharpening applied after combining.
    pub sharpen: Sharpen,
    /// Samples whose consensus has a normalised entropy above this get weight 0 (masked).
    pub max_entropy: Option<f32>,
    /// With abstention, samples fewer than this many nodes contributed to are masked and their
    /// row made uniform, so that no sample's consensus reveals the labels of fewer nodes. At
    /// least (and by default) [`MIN_PARTICIPANTS`]: the promise that no consensus is released
    /// from fewer nodes holds sample by sample, not only for the round.
    pub min_count: u32,
    /// Centered clipping ([`center_clip`]): before combining, every node's row of a sample is
    /// pulled to within this multiple (≥ 1) of the median distance of the sample's rows from
    /// their coordinate-wise median row. Bounds what one node's row can do to a sample under
    /// every rule (a one-hot liar under the means and the confidence rule); off by default.
    pub center_clip: Option<f32>,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            rule: Rule::default(),
            sharpen: Sharpen::default(),
            max_entropy: None,
            min_count: MIN_PARTICIPANTS as u32,
            center_clip: None,
        }
    }
}

impl ConsensusConfig {
    /// Whether the consensus can be computed one submission at a time (the means, without
    /// centered clipping, which needs every row of a sample).
    pub fn streams(&self) -> bool {
        self.rule.streams() && self.center_clip.is_none()
    }

    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if let Rule::TrimmedMean { trim } = self.rule
            && !(0.0..0.5).contains(&trim)
        {
            return Err(Error::Config(format!("trimmed mean: trim {trim} must be in [0, 0.5)")));
        }
        if let Rule::Confidence { power, max_share } = self.rule {
            if !(power > 0.0 && power <= 1.0) {
                return Err(Error::Config(format!("confidence: power {power} must be in (0, 1]")));
            }
            if !(max_share.is_finite() && max_share >= 1.0) {
                return Err(Error::Config(format!(
                    "confidence: max_share {max_share} must be ≥ 1 (a multiple of the equal share 1/n)"
                )));
            }
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
        if let Some(f) = self.center_clip
            && !(f.is_finite() && f >= 1.0)
        {
            return Err(Error::Config(format!(
                "center_clip {f} must be ≥ 1 (a multiple of the median distance from the median row)"
            )));
        }
        if let Some(h) = self.max_entropy
            && !(0.0..=1.0).contains(&h)
        {
            return Err(Error::Config(format!("max_entropy {h} must be in [0, 1]")));
        }
        // Refused rather than raised: a federation that asks for 1 expects samples one node
        // knows to be released, and would be told otherwise by nothing.
        if (self.min_count as usize) < MIN_PARTICIPANTS {
            return Err(Error::Config(format!(
                "min_count {} is below {MIN_PARTICIPANTS}, the fewest nodes a consensus is released from: a sample fewer nodes answered would give their soft labels away (leave min_count out for {MIN_PARTICIPANTS})",
                self.min_count
            )));
        }
        Ok(())
    }
}

/// The combined soft labels and a weight per sample (0 = masked).
#[derive(Clone, Debug, PartialEq)]
pub struct Combined {
    /// `samples × classes`, rows summing to 1.
    pub probs: Vec<f32>,
    /// Per-sample weight in [0, 1] (0 where `counts` is 0).
    pub weights: Vec<f32>,
    /// Per sample, how many nodes contributed to it (did not abstain).
    pub counts: Vec<u32>,
    /// Number of classes.
    pub classes: usize,
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
            Rule::CONFIDENCE,
            Rule::Confidence { power: 0.5, max_share: 1.5 },
            Rule::Confidence { power: 1.0, max_share: 1000.0 },
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
        fn no_node_carries_more_than_its_capped_share_of_any_sample(
            (ms, _ns, samples, classes) in matrices(),
            power in 0.05f32..=1.0,
            max_share in 1.0f32..4.0,
        ) {
            let views: Vec<&[f32]> = ms.iter().map(|m| m.as_slice()).collect();
            let n = views.len();
            let capped = confidence_weights(&views, samples, classes, power, max_share);
            let raw = confidence_weights(&views, samples, classes, power, n as f32);
            let bound = (max_share as f64 / n as f64).min(1.0);
            for s in 0..samples {
                let total: f64 = capped.iter().map(|w| w[s]).sum();
                prop_assert!(total > 0.0);
                for i in 0..n {
                    prop_assert!(capped[i][s] <= raw[i][s], "clipping only lowers a weight");
                    prop_assert!(capped[i][s] / total <= bound + 1e-9, "node {} carries {} of sample {}, cap {}", i, capped[i][s] / total, s, bound);
                }
            }
        }

        #[test]
        fn capped_weights_ignore_node_order_and_leave_weights_within_the_cap_alone(
            weights in proptest::collection::vec(0.0f64..1.0, 1..20),
            max_share in 1.0f64..5.0,
            rot in 0usize..20,
        ) {
            let a = capped_weights(&weights, max_share);
            let mut rotated = weights.clone();
            rotated.rotate_left(rot % weights.len());
            let mut b = capped_weights(&rotated, max_share);
            b.rotate_right(rot % weights.len());
            prop_assert_eq!(&a, &b, "exactly equal whatever the order");
            let n = weights.len() as f64;
            let total: f64 = weights.iter().sum();
            if weights.iter().all(|w| *w <= max_share / n * total) {
                prop_assert_eq!(&a, &weights, "no weight above the cap: nothing changes");
            } else {
                // The cap binds as tightly as it must and no tighter: the largest clipped weight
                // carries exactly the largest share allowed.
                let top = a.iter().copied().fold(0.0, f64::max);
                let share = top / a.iter().sum::<f64>();
                prop_assert!((share - (max_share / n).min(1.0)).abs() < 1e-9, "top share {} for cap {}", share, max_share / n);
            }
        }

        #[test]
        fn power_sharpening_keeps_the_argmax_and_lowers_entropy((ms, _ns, _samples, classes) in matrices(), beta in 1.0f32..50.0) {
            let mut p = ms[0].clone();
            sharpen(&mut p, classes, &Sharpen::Power { beta });
            for (a, b) in ms[0].chunks_exact(classes).zip(p.chunks_exact(classes)) {
                prop_assert_eq!(crate::tensor::argmax(a), crate::tensor::argmax(b));
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
        let c = combine(
            &[(&a, 2), (&a, 1), (&b, 1)],
            1,
            2,
            &ConsensusConfig { rule: Rule::WeightedBySamples, ..Default::default() },
        )
        .unwrap();
        assert!((c.probs[0] - 0.75).abs() < 1e-6);
        let sure = vec![0.99f32, 0.01];
        let unsure = vec![0.4f32, 0.6];
        let c = combine(
            &[(&sure, 1), (&sure, 1), (&unsure, 1)],
            1,
            2,
            &ConsensusConfig { rule: Rule::CONFIDENCE, ..Default::default() },
        )
        .unwrap();
        assert!(c.probs[0] > 0.8, "the confident node dominates: {:?}", c.probs);
        let flat = [0.5f32, 0.5, 0.9, 0.1];
        let c = combine(&[(&flat[..], 1); 3], 2, 2, &ConsensusConfig { max_entropy: Some(0.9), ..Default::default() })
            .unwrap();
        assert_eq!(c.weights, vec![0.0, 1.0]);
        assert!(matches!(combine(&[], 1, 2, &ConsensusConfig::default()), Err(Error::Consensus { .. })));
        assert!(matches!(combine(&[(&a, 1)], 2, 2, &ConsensusConfig::default()), Err(Error::Shape(_))));
        let bad = ConsensusConfig { rule: Rule::TrimmedMean { trim: 0.5 }, ..Default::default() };
        assert!(matches!(combine(&[(&a, 1)], 1, 2, &bad), Err(Error::Config(_))));
        let mut acc = MeanAccumulator::new(1, 2);
        assert!(matches!(acc.add(&a, f64::NAN), Err(Error::Consensus { .. })));
        assert!(matches!(acc.add(&a[..1], 1.0), Err(Error::Shape(_))));
        assert_eq!(acc.nodes(), 0, "a refused matrix is not counted");
    }

    #[test]
    fn a_one_hot_liar_counts_as_at_most_max_share_average_nodes() {
        // Nine honest nodes unsure about a hard sample, one liar certain of the wrong class.
        let honest = vec![0.4f32, 0.35, 0.25];
        let liar = vec![0.0f32, 0.0, 1.0];
        let mut views: Vec<&[f32]> = vec![&honest; 9];
        views.push(&liar);
        let share = |max_share: f32| {
            let w = confidence_weights(&views, 1, 3, 1.0, max_share);
            w[9][0] / w.iter().map(|w| w[0]).sum::<f64>()
        };
        assert!(share(10.0) > 0.8, "uncapped, the liar weighs as much as all honest nodes together: {}", share(10.0));
        assert!((share(2.0) - 0.2).abs() < 1e-9, "capped at twice the equal share: {}", share(2.0));
        assert!((share(1.0) - 0.1).abs() < 1e-9, "max_share 1 is the plain mean: {}", share(1.0));
        let inputs: Vec<(&[f32], u64)> = views.iter().map(|v| (*v, 1)).collect();
        let rule =
            |max_share| ConsensusConfig { rule: Rule::Confidence { power: 1.0, max_share }, ..Default::default() };
        let capped = combine(&inputs, 1, 3, &rule(1.0)).unwrap();
        let mean = combine(&inputs, 1, 3, &ConsensusConfig::default()).unwrap();
        for (c, m) in capped.probs.iter().zip(&mean.probs) {
            assert!((c - m).abs() < 1e-6, "{:?} vs {:?}", capped.probs, mean.probs);
        }
    }

    #[test]
    fn degenerate_settings_are_refused_naming_them() {
        let bad = |rule| ConsensusConfig { rule, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(bad(Rule::Confidence { power: 0.0, max_share: 2.0 }).contains("power"));
        assert!(bad(Rule::Confidence { power: 1.5, max_share: 2.0 }).contains("power"));
        assert!(bad(Rule::Confidence { power: 1.0, max_share: 0.5 }).contains("max_share"));
        assert!(bad(Rule::Confidence { power: 1.0, max_share: f32::NAN }).contains("max_share"));
        let low = ConsensusConfig { min_count: 2, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(low.contains("min_count 2 is below 3"), "{low}");
        let parsed: ConsensusConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed.min_count, MIN_PARTICIPANTS as u32, "the default is the minimum of participants");
        assert_eq!(trimmed_count(4, 0.2), 0, "a trimmed mean of four at 0.2 trims nothing");
        assert_eq!(trimmed_count(5, 0.2), 1);
        let parsed: ConsensusConfig = serde_json::from_str(r#"{ "rule": { "kind": "confidence" } }"#).unwrap();
        assert_eq!(parsed.rule, Rule::CONFIDENCE, "the cap is on by default");
    }

    #[test]
    fn huge_beta_does_not_overflow() {
        let mut p = vec![0.6f32, 0.3, 0.1];
        sharpen(&mut p, 3, &Sharpen::Power { beta: 1000.0 });
        assert!(p.iter().all(|v| v.is_finite()));
        assert!((p[0] - 1.0).abs() < 1e-6);
    }
}
