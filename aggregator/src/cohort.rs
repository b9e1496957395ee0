//! Per-round cohorts (`round.cohort`): which roster members a round asks. The draw is a pure
//! function of the base seed, the round and the roster's order in the config, so a restart, a
//! rerun with the same seed and a baseline (FedAvg with the same cohorts) all draw the same
//! members; nothing about the draw needs to be checkpointed beyond the round number, and each
//! round's cohort is recorded in its metrics (`metrics.jsonl`, the scenarios' `rounds.csv`).
//!
//! The draw is the reference samples' ([`SampleSelection::Seeded`]: a partial Fisher–Yates
//! shuffle driven by SplitMix64) over the roster's positions, seeded by
//! `derive(seed, Stream::Cohort, round)`, and returned in roster order.

use protocol::SampleSelection;
use protocol::seed::{Stream, derive};

/// The positions (in `0..roster`) of round `round`'s cohort of `size` members, ascending.
/// `size ≥ roster` asks everyone.
pub fn positions(roster: usize, size: usize, seed: u64, round: u64) -> Vec<usize> {
    if size >= roster {
        return (0..roster).collect();
    }
    let draw = SampleSelection::Seeded { seed: derive(seed, Stream::Cohort, round), count: size as u32 };
    // `size < roster ≤ u32::MAX` members: the draw cannot fail.
    let mut v: Vec<usize> =
        draw.resolve(roster as u32).map(|v| v.into_iter().map(|i| i as usize).collect()).unwrap_or_default();
    v.sort_unstable();
    v
}

/// The members of `roster` (in the config's order) that round `round` asks: a cohort of `size`,
/// or everyone when `size` is `None`.
pub fn draw<T: Clone>(roster: &[T], size: Option<usize>, seed: u64, round: u64) -> Vec<T> {
    match size {
        None => roster.to_vec(),
        Some(k) => positions(roster.len(), k, seed, round).into_iter().map(|i| roster[i].clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_round_draw_the_same_cohort_and_rounds_differ() {
        let a: Vec<Vec<usize>> = (1..=20).map(|r| positions(1000, 100, 7, r)).collect();
        let b: Vec<Vec<usize>> = (1..=20).map(|r| positions(1000, 100, 7, r)).collect();
        assert_eq!(a, b);
        for c in &a {
            assert_eq!(c.len(), 100);
            assert!(c.windows(2).all(|w| w[0] < w[1]), "distinct and ascending");
            assert!(c.iter().all(|&i| i < 1000));
        }
        assert_ne!(a[0], a[1], "another round, another cohort");
        assert_ne!(positions(1000, 100, 8, 1), a[0], "another seed, another cohort");
    }

    #[test]
    fn every_member_is_drawn_about_as_often() {
        // 2,000 rounds of 10 of 50: each member 400 times in expectation (σ ≈ 18).
        let mut seen = [0u32; 50];
        for r in 1..=2000 {
            for i in positions(50, 10, 3, r) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| (300..=500).contains(&n)), "{seen:?}");
    }

    #[test]
    fn a_cohort_as_large_as_the_roster_or_none_asks_everyone() {
        assert_eq!(positions(5, 5, 1, 1), vec![0, 1, 2, 3, 4]);
        assert_eq!(positions(5, 9, 1, 1), vec![0, 1, 2, 3, 4]);
        assert_eq!(draw(&['a', 'b', 'c'], None, 1, 1), vec!['a', 'b', 'c']);
        let picked = draw(&['a', 'b', 'c', 'd', 'e'], Some(3), 1, 4);
        assert_eq!(picked.len(), 3);
        assert_eq!(picked, draw(&['a', 'b', 'c', 'd', 'e'], Some(3), 1, 4));
    }
}
