//! Combining all node matrices of a round at once, with or without abstentions.

use super::{
    Combined, ConsensusConfig, MeanAccumulator, Rule, center_clip, confidence_weights_abstaining, postprocess,
    trimmed_count,
};
use crate::Error;

/// Combines node matrices (each with its local sample count) under `cfg`.
pub fn combine(
    inputs: &[(&[f32], u64)],
    samples: usize,
    classes: usize,
    cfg: &ConsensusConfig,
) -> Result<Combined, Error> {
    combine_abstaining(inputs, &vec![None; inputs.len()], samples, classes, cfg)
}

/// Per sample, how many nodes did not abstain on it (`abstained[i][s]`: node `i` abstains on
/// sample `s`; `None`: it abstains on none).
pub fn sample_counts(abstained: &[Option<&[bool]>], samples: usize) -> Vec<u32> {
    (0..samples).map(|s| abstained.iter().filter(|m| !m.is_some_and(|m| m[s])).count() as u32).collect()
}

/// Combines node matrices under `cfg`, each node taking part only in the samples it did not
/// abstain on (`abstained`, one entry a node, see [`sample_counts`]). A sample every node
/// abstained on gets weight 0 and count 0.
pub fn combine_abstaining(
    inputs: &[(&[f32], u64)],
    abstained: &[Option<&[bool]>],
    samples: usize,
    classes: usize,
    cfg: &ConsensusConfig,
) -> Result<Combined, Error> {
    cfg.validate()?;
    if inputs.is_empty() {
        return Err(Error::Consensus { detail: "no soft labels to combine".into() });
    }
    if let Some((i, _)) = inputs.iter().enumerate().find(|(_, (m, _))| m.len() != samples * classes) {
        return Err(Error::Shape(format!("node matrix {i} does not have {samples} × {classes} values")));
    }
    if abstained.len() != inputs.len() || abstained.iter().flatten().any(|m| m.len() != samples) {
        return Err(Error::Shape(format!(
            "{} abstention masks for {} nodes of {samples} samples",
            abstained.len(),
            inputs.len()
        )));
    }
    let knows = |i: usize, s: usize| !abstained[i].is_some_and(|m| m[s]);
    let clipped: Vec<Vec<f32>>;
    let clipped_inputs: Vec<(&[f32], u64)>;
    let inputs = match cfg.center_clip {
        Some(factor) => {
            let matrices: Vec<&[f32]> = inputs.iter().map(|(m, _)| *m).collect();
            clipped = center_clip(&matrices, &knows, samples, classes, factor);
            clipped_inputs = clipped.iter().zip(inputs).map(|(m, (_, n))| (m.as_slice(), *n)).collect();
            &clipped_inputs[..]
        }
        None => inputs,
    };
    let probs = match &cfg.rule {
        Rule::Mean | Rule::WeightedBySamples => {
            let mut acc = MeanAccumulator::new(samples, classes);
            for (i, (m, n)) in inputs.iter().enumerate() {
                let w = if cfg.rule == Rule::WeightedBySamples { *n as f64 } else { 1.0 };
                let rows: Vec<f64> = (0..samples).map(|s| if knows(i, s) { w } else { 0.0 }).collect();
                acc.add_rows(m, &rows)?;
            }
            acc.finish()
        }
        Rule::Confidence { power, max_share } => {
            let matrices: Vec<&[f32]> = inputs.iter().map(|(m, _)| *m).collect();
            let weights = confidence_weights_abstaining(&matrices, abstained, samples, classes, *power, *max_share);
            let mut acc = MeanAccumulator::new(samples, classes);
            for (m, w) in matrices.iter().zip(&weights) {
                acc.add_rows(m, w)?;
            }
            acc.finish()
        }
        Rule::Median => coordinatewise(inputs, &knows, samples, classes, |v| {
            let n = v.len();
            if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
        }),
        Rule::TrimmedMean { trim } => {
            let trim = *trim;
            coordinatewise(inputs, &knows, samples, classes, move |v| {
                let k = trimmed_count(v.len(), trim);
                let kept = &v[k..v.len() - k];
                kept.iter().sum::<f32>() / kept.len() as f32
            })
        }
    };
    Ok(postprocess(probs, sample_counts(abstained, samples), classes, cfg))
}

/// Applies `f` to the sorted values of each coordinate across the nodes that know its sample
/// (0 where none does: the row becomes uniform and is masked by its count).
fn coordinatewise(
    inputs: &[(&[f32], u64)],
    knows: &dyn Fn(usize, usize) -> bool,
    samples: usize,
    classes: usize,
    f: impl Fn(&[f32]) -> f32,
) -> Vec<f32> {
    let mut column = Vec::with_capacity(inputs.len());
    (0..samples * classes)
        .map(|j| {
            column.clear();
            column.extend(inputs.iter().enumerate().filter(|(i, _)| knows(*i, j / classes)).map(|(_, (m, _))| m[j]));
            column.sort_by(f32::total_cmp);
            if column.is_empty() { 0.0 } else { f(&column) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{MIN_PARTICIPANTS, Sharpen, renormalise};
    use proptest::prelude::*;

    /// Node matrices, their abstention masks (or none), samples, classes.
    type Case = (Vec<Vec<f32>>, Vec<Option<Vec<bool>>>, usize, usize);

    /// Node matrices, each with a random abstention mask (or none).
    fn abstaining() -> impl Strategy<Value = Case> {
        (1usize..7, 1usize..10, 2usize..5).prop_flat_map(|(nodes, samples, classes)| {
            (
                proptest::collection::vec(proptest::collection::vec(0.001f32..1.0, samples * classes), nodes),
                proptest::collection::vec(
                    proptest::option::of(proptest::collection::vec(any::<bool>(), samples)),
                    nodes,
                ),
            )
                .prop_map(move |(mut ms, masks)| {
                    for m in &mut ms {
                        renormalise(m, classes);
                    }
                    (ms, masks, samples, classes)
                })
        })
    }

    proptest! {
        /// Every rule, with abstentions: rows sum to 1, the counts are the masks', a sample
        /// nobody knows is masked, and node order changes no bit.
        #[test]
        fn abstaining_consensus_ignores_node_order_and_counts_what_the_masks_say((ms, masks, samples, classes) in abstaining(), rot in 0usize..7) {
            let n = ms.len();
            let mut order: Vec<usize> = (0..n).rev().collect();
            order.rotate_left(rot % n);
            let clipped = [Rule::Mean, Rule::CONFIDENCE].map(|rule| ConsensusConfig { rule, sharpen: Sharpen::None, center_clip: Some(1.5), ..Default::default() });
            for cfg in every_rule().into_iter().chain(clipped) {
                let run = |idx: &[usize]| {
                    let inputs: Vec<(&[f32], u64)> = idx.iter().map(|&i| (ms[i].as_slice(), 1 + i as u64)).collect();
                    let abstained: Vec<Option<&[bool]>> = idx.iter().map(|&i| masks[i].as_deref()).collect();
                    combine_abstaining(&inputs, &abstained, samples, classes, &cfg).unwrap()
                };
                let a = run(&(0..n).collect::<Vec<_>>());
                let b = run(&order);
                prop_assert_eq!(&a, &b, "{:?}", cfg.rule);
                let views: Vec<Option<&[bool]>> = masks.iter().map(|m| m.as_deref()).collect();
                prop_assert_eq!(&a.counts, &sample_counts(&views, samples));
                for (s, row) in a.probs.chunks_exact(classes).enumerate() {
                    prop_assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                    // Withheld exactly where fewer than the minimum of nodes answered.
                    prop_assert_eq!(a.weights[s] == 0.0, a.counts[s] < MIN_PARTICIPANTS as u32, "{:?}", cfg.rule);
                }
            }
        }
    }

    fn every_rule() -> Vec<ConsensusConfig> {
        [Rule::Mean, Rule::WeightedBySamples, Rule::CONFIDENCE, Rule::Median, Rule::TrimmedMean { trim: 0.2 }]
            .into_iter()
            .map(|rule| ConsensusConfig { rule, sharpen: Sharpen::None, ..Default::default() })
            .collect()
    }

    #[test]
    fn a_sample_nobody_knows_is_masked_with_count_zero() {
        let a = [0.9f32, 0.1, 0.6, 0.4];
        let b = [0.8f32, 0.2, 0.3, 0.7];
        let both = [false, true];
        for cfg in every_rule() {
            let c = combine_abstaining(&[(&a, 1), (&b, 1), (&a, 1)], &[Some(&both[..]); 3], 2, 2, &cfg).unwrap();
            assert_eq!(c.counts, vec![3, 0], "{:?}", cfg.rule);
            assert_eq!(c.weights, vec![1.0, 0.0], "{:?}", cfg.rule);
            assert!(c.probs[2..].iter().all(|p| (p - 0.5).abs() < 1e-6), "{:?}: {:?}", cfg.rule, c.probs);
        }
    }

    #[test]
    fn an_abstaining_node_does_not_move_the_consensus_and_the_same_node_answering_does() {
        let honest = [0.9f32, 0.1];
        let stranger = [0.0f32, 1.0];
        let without = [(&honest[..], 1u64), (&honest[..], 1), (&honest[..], 1)];
        let with = [(&honest[..], 1u64), (&honest[..], 1), (&honest[..], 1), (&stranger[..], 1)];
        let abstains = [true];
        for cfg in every_rule() {
            let alone = combine(&without, 1, 2, &cfg).unwrap();
            let masked = combine_abstaining(&with, &[None, None, None, Some(&abstains)], 1, 2, &cfg).unwrap();
            assert_eq!(
                masked.probs, alone.probs,
                "{:?}: abstaining leaves the sample exactly as without the node",
                cfg.rule
            );
            assert_eq!(masked.counts, vec![3]);
            let answered = combine_abstaining(&with, &[None, None, None, Some(&[false])], 1, 2, &cfg).unwrap();
            assert_eq!(answered.counts, vec![4]);
            if !matches!(cfg.rule, Rule::Median | Rule::TrimmedMean { .. }) {
                assert!(
                    answered.probs[1] > alone.probs[1] + 0.05,
                    "{:?}: the same node answering moves it: {:?}",
                    cfg.rule,
                    answered.probs
                );
            }
        }
    }

    #[test]
    fn samples_known_to_fewer_than_min_count_nodes_are_withheld() {
        let a = [0.9f32, 0.1, 0.8, 0.2];
        let second = [true, false];
        let inputs = [(&a[..], 1u64), (&a[..], 1), (&a[..], 1)];
        // The default: a sample two nodes answered is withheld, as no round is released from two.
        let cfg = ConsensusConfig::default();
        assert_eq!(cfg.min_count, MIN_PARTICIPANTS as u32);
        let c = combine_abstaining(&inputs, &[None, None, Some(&second)], 2, 2, &cfg).unwrap();
        assert_eq!(c.counts, vec![2, 3]);
        assert_eq!(c.weights, vec![0.0, 1.0]);
        assert_eq!(&c.probs[..2], &[0.5, 0.5], "a withheld sample's row reveals nothing");
        let stricter = ConsensusConfig { min_count: 4, ..Default::default() };
        let c = combine_abstaining(&inputs, &[None, None, Some(&second)], 2, 2, &stricter).unwrap();
        assert_eq!(c.weights, vec![0.0, 0.0]);
        // Fewer than the minimum is refused, not quietly raised.
        for low in 0..MIN_PARTICIPANTS as u32 {
            let cfg = ConsensusConfig { min_count: low, ..Default::default() };
            let e = combine_abstaining(&inputs, &[None, None, Some(&second)], 2, 2, &cfg).unwrap_err();
            assert!(matches!(&e, Error::Config(m) if m.contains("min_count")), "{e}");
        }
    }

    #[test]
    fn masks_of_the_wrong_shape_are_refused() {
        let a = [0.5f32, 0.5];
        let cfg = ConsensusConfig::default();
        assert!(matches!(combine_abstaining(&[(&a, 1)], &[], 1, 2, &cfg), Err(Error::Shape(_))));
        assert!(matches!(combine_abstaining(&[(&a, 1)], &[Some(&[true, false])], 1, 2, &cfg), Err(Error::Shape(_))));
        assert_eq!(sample_counts(&[None, Some(&[true, false]), Some(&[true, true])], 2), vec![1, 2]);
    }
}
