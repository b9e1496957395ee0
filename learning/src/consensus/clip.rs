//! Centered clipping of node rows around the sample's coordinate-wise median (after
//! Karimireddy et al., "Learning from History for Byzantine Robust Optimization", ICML 2021,
//! which clips updates around a robust centre).
//!
//! A weight cap bounds how much of a sample one node holds, not where it puts that mass: a node
//! that sends a one-hot row on a wrong class moves a soft consensus (at a distillation
//! temperature its top class holds a few tenths) by its whole share. Clipping pulls every row of
//! a sample to within a radius of the median row of the nodes that answered it; the radius is
//! `factor` × the median of their distances, so honest rows, which scatter about as much as each
//! other, are left alone, and one row far from all the others counts only as a row at the radius.
//! Clipped rows are convex combinations of a row and the median row, so they still sum to 1.

/// Rows of `samples × classes` node matrices clipped around each sample's median row, in the
/// nodes' order. `knows(i, s)`: node `i` answered sample `s`; a sample fewer than 3 nodes
/// answered is left as it is (there is no majority to centre on).
pub fn center_clip(
    matrices: &[&[f32]],
    knows: &dyn Fn(usize, usize) -> bool,
    samples: usize,
    classes: usize,
    factor: f32,
) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = matrices.iter().map(|m| m.to_vec()).collect();
    let mut column = Vec::with_capacity(matrices.len());
    let mut centre = vec![0f32; classes];
    for s in 0..samples {
        let nodes: Vec<usize> = (0..matrices.len()).filter(|&i| knows(i, s)).collect();
        if nodes.len() < 3 {
            continue;
        }
        let row = |i: usize| &matrices[i][s * classes..(s + 1) * classes];
        for (c, v) in centre.iter_mut().enumerate() {
            column.clear();
            column.extend(nodes.iter().map(|&i| row(i)[c]));
            *v = median(&mut column);
        }
        let total: f32 = centre.iter().sum();
        if total > 0.0 {
            centre.iter_mut().for_each(|v| *v /= total);
        } else {
            centre.fill(1.0 / classes as f32);
        }
        let distances: Vec<f32> =
            nodes.iter().map(|&i| row(i).iter().zip(&centre).map(|(a, b)| (a - b).abs()).sum()).collect();
        let radius = factor * median(&mut distances.clone());
        for (&i, &d) in nodes.iter().zip(&distances) {
            if d > radius {
                let keep = if d > 0.0 { radius / d } else { 0.0 };
                let dst = &mut out[i][s * classes..(s + 1) * classes];
                for (v, m) in dst.iter_mut().zip(&centre) {
                    *v = m + (*v - m) * keep;
                }
            }
        }
    }
    out
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::renormalise;
    use proptest::prelude::*;

    fn everyone(_: usize, _: usize) -> bool {
        true
    }

    #[test]
    fn a_one_hot_liar_is_pulled_in_and_honest_rows_stay() {
        let honest = [
            [0.30f32, 0.25, 0.15, 0.15, 0.15],
            [0.32, 0.22, 0.16, 0.15, 0.15],
            [0.28, 0.24, 0.16, 0.16, 0.16],
            [0.31, 0.23, 0.15, 0.16, 0.15],
        ];
        let liar = [0f32, 0.0, 0.0, 0.0, 1.0];
        let mut ms: Vec<&[f32]> = honest.iter().map(|r| &r[..]).collect();
        ms.push(&liar);
        let out = center_clip(&ms, &everyone, 1, 5, 2.0);
        for (h, o) in honest.iter().zip(&out) {
            assert_eq!(&h[..], &o[..], "honest rows near the centre are not touched");
        }
        let pulled = &out[4];
        assert!(pulled[4] < 0.3, "the liar keeps only a radius of its lie: {pulled:?}");
        let mean: Vec<f32> = (0..5).map(|c| out.iter().map(|r| r[c]).sum::<f32>() / 5.0).collect();
        assert!(mean[0] > mean[4], "the honest top class stays on top: {mean:?}");
    }

    #[test]
    fn fewer_than_three_answers_are_left_alone() {
        let a = [0.9f32, 0.1];
        let b = [0.0f32, 1.0];
        let out = center_clip(&[&a, &b, &a], &|i, _| i < 2, 1, 2, 1.0);
        assert_eq!(out, vec![a.to_vec(), b.to_vec(), a.to_vec()]);
    }

    proptest! {
        /// Clipped rows are probability rows, no farther from the centre than the radius, and
        /// node order does not change any row.
        #[test]
        fn clipped_rows_sum_to_one_and_ignore_order(
            (ms, samples, classes) in (3usize..8, 1usize..6, 2usize..6).prop_flat_map(|(n, s, c)| (proptest::collection::vec(proptest::collection::vec(0.001f32..1.0, s * c), n), Just(s), Just(c))),
            factor in 1.0f32..4.0,
        ) {
            let mut ms = ms;
            for m in &mut ms {
                renormalise(m, classes);
            }
            let views: Vec<&[f32]> = ms.iter().map(|m| m.as_slice()).collect();
            let out = center_clip(&views, &everyone, samples, classes, factor);
            for m in &out {
                for row in m.chunks_exact(classes) {
                    prop_assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                    prop_assert!(row.iter().all(|v| *v >= -1e-6));
                }
            }
            let reversed: Vec<&[f32]> = views.iter().rev().copied().collect();
            let mut back = center_clip(&reversed, &everyone, samples, classes, factor);
            back.reverse();
            prop_assert_eq!(out, back);
        }
    }
}
