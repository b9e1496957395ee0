//! Seed derivation: every seeded choice in the project (sample selection, weight
//! initialisation, batch order, partitions, attacks) draws from one base seed through
//! [`derive`], with a [`Stream`] naming the use and an index (a round, a node, an epoch).
//! One formula, so that two uses of a seed never collide by accident.

/// What a derived seed is for. Distinct streams give unrelated seeds from one base seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
#[non_exhaustive]
pub enum Stream {
    /// The reference samples announced in a round (index: round).
    Selection = 1,
    /// A node's local training in a round (index: round).
    NodeTraining = 2,
    /// The aggregator's distillation of the global student (index: round).
    Distillation = 3,
    /// Initial weights of a model (index: node, or 0).
    Init = 4,
    /// Data splits and partitions (index: a sub-stream of the split).
    Split = 5,
    /// Baselines run by the scenario runner (index: node or baseline).
    Baseline = 6,
    /// Simulated faults (index: node).
    Fault = 7,
    /// Shuffles and draws inside one training run (index: epoch or sub-stream).
    Shuffle = 8,
    /// Differentially private noise (index: step).
    Noise = 9,
    /// The neighbourhood graph of a secure-aggregation round (index: round).
    SecureGraph = 10,
    /// The roster members asked in a round, when `round.cohort` is set (index: round).
    Cohort = 11,
}

/// The seed for `stream` and `index` under the base `seed`: SplitMix64's finaliser applied in
/// turn to the seed, the stream and the index, so each input changes every output bit.
pub fn derive(seed: u64, stream: Stream, index: u64) -> u64 {
    let mut s = mix(seed);
    s = mix(s ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    mix(s ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014), a bijection on u64.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn streams_indices_and_seeds_do_not_collide() {
        let streams = [
            Stream::Selection,
            Stream::NodeTraining,
            Stream::Distillation,
            Stream::Init,
            Stream::Split,
            Stream::Baseline,
            Stream::Fault,
            Stream::Shuffle,
            Stream::Noise,
            Stream::SecureGraph,
            Stream::Cohort,
        ];
        let mut seen = HashSet::new();
        for seed in 0..8 {
            for s in streams {
                for i in 0..64 {
                    assert!(seen.insert(derive(seed, s, i)), "collision at seed {seed}, {s:?}, {i}");
                }
            }
        }
        assert_eq!(derive(7, Stream::Init, 3), derive(7, Stream::Init, 3));
    }
}
