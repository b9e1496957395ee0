//! Which reference samples a round asks about, and the seeded draw every participant repeats.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the reference samples of a round are chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SampleSelection {
    /// Explicit row indices into the reference set.
    Indices(#[serde(deserialize_with = "crate::bounded::list")] Vec<u32>),
    /// `count` distinct rows drawn with [`SampleSelection::resolve`]'s seeded shuffle.
    Seeded {
        /// Seed of the draw.
        seed: u64,
        /// Number of rows.
        count: u32,
    },
}

impl SampleSelection {
    /// Number of samples selected.
    pub fn len(&self) -> usize {
        match self {
            Self::Indices(v) => v.len(),
            Self::Seeded { count, .. } => *count as usize,
        }
    }

    /// Whether no sample is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selected row indices, in ascending order for `Seeded`, as given for `Indices`.
    ///
    /// `Seeded` draws `count` distinct rows of `0..population` with a partial Fisher–Yates
    /// shuffle driven by SplitMix64, so every participant computes the same rows.
    pub fn resolve(&self, population: u32) -> Result<Vec<u32>> {
        match self {
            Self::Indices(v) => {
                if let Some(bad) = v.iter().find(|&&i| i >= population) {
                    return Err(Error::field(
                        "selection",
                        format!("index {bad} outside a reference set of {population} samples"),
                    ));
                }
                Ok(v.clone())
            }
            Self::Seeded { seed, count } => {
                if *count > population {
                    return Err(Error::field(
                        "selection",
                        format!("{count} samples requested from a reference set of {population}"),
                    ));
                }
                // The partial shuffle of the pool 0..population, keeping only the positions a
                // swap displaced: memory grows with `count`, not with the population a message
                // claims. Position i is final after step i (later swaps touch only j ≥ their i).
                let mut state = *seed;
                let mut displaced: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
                let n = *count as usize;
                let mut drawn = Vec::with_capacity(n);
                for i in 0..n {
                    let remaining = (population as usize - i) as u64;
                    let j = (i + (splitmix64(&mut state) % remaining) as usize) as u32;
                    let i = i as u32;
                    let at_j = displaced.get(&j).copied().unwrap_or(j);
                    let at_i = displaced.get(&i).copied().unwrap_or(i);
                    displaced.insert(j, at_i);
                    drawn.push(at_j);
                }
                drawn.sort_unstable();
                Ok(drawn)
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    // `mix` adds the increment itself: the generator's output for the state before the step.
    crate::seed::mix(state.wrapping_sub(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seeded_selection_is_distinct_sorted_in_range_and_deterministic(seed: u64, population in 1u32..5000, frac in 0.0f64..1.0) {
            let count = ((population as f64) * frac) as u32;
            let sel = SampleSelection::Seeded { seed, count };
            let a = sel.resolve(population).unwrap();
            prop_assert_eq!(a.len(), count as usize);
            prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(a.iter().all(|&i| i < population));
            prop_assert_eq!(a, sel.resolve(population).unwrap());
        }
    }

    /// The shuffle as it was first written, over the whole pool.
    fn dense(seed: u64, count: u32, population: u32) -> Vec<u32> {
        let mut state = seed;
        let mut pool: Vec<u32> = (0..population).collect();
        for i in 0..count as usize {
            let j = i + (splitmix64(&mut state) % (population as usize - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(count as usize);
        pool.sort_unstable();
        pool
    }

    proptest! {
        #[test]
        fn the_sparse_shuffle_draws_what_the_whole_pool_shuffle_draws(seed: u64, population in 1u32..3000, frac in 0.0f64..=1.0) {
            let count = ((population as f64) * frac) as u32;
            prop_assert_eq!(SampleSelection::Seeded { seed, count }.resolve(population).unwrap(), dense(seed, count, population));
        }
    }

    #[test]
    fn a_huge_claimed_population_costs_memory_for_the_count_only() {
        let drawn = SampleSelection::Seeded { seed: 9, count: 1000 }.resolve(u32::MAX).unwrap();
        assert_eq!(drawn.len(), 1000);
        assert!(drawn.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn different_seeds_pick_different_samples() {
        let a = SampleSelection::Seeded { seed: 1, count: 100 }.resolve(10_000).unwrap();
        let b = SampleSelection::Seeded { seed: 2, count: 100 }.resolve(10_000).unwrap();
        assert_ne!(a, b);
        assert!(SampleSelection::Seeded { seed: 1, count: 11 }.resolve(10).is_err());
        assert!(SampleSelection::Indices(vec![3, 10]).resolve(10).is_err());
    }
}
