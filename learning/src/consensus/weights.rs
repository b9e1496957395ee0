//! Per-node, per-sample weights of the confidence rule, and the cap on any one node's share.

/// Normalised entropy H(p)/log C of one row, in [0, 1].
pub fn normalised_entropy(row: &[f32]) -> f32 {
    if row.len() < 2 {
        return 0.0;
    }
    let h: f32 = row.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
    (h / (row.len() as f32).ln()).clamp(0.0, 1.0)
}

/// The weight of each node (outer) on each sample (inner) under the confidence rule: the
/// tempered confidence `(1 − H(p)/log C)^power` of the node's row, then, sample by sample,
/// [`capped_weights`] with `max_share`. Depends on each node's own rows and on the multiset of
/// weights of a sample, never on the order of the nodes.
pub fn confidence_weights(
    matrices: &[&[f32]],
    samples: usize,
    classes: usize,
    power: f32,
    max_share: f32,
) -> Vec<Vec<f64>> {
    confidence_weights_abstaining(matrices, &vec![None; matrices.len()], samples, classes, power, max_share)
}

/// [`confidence_weights`] where node `i` abstains on the samples `s` with `abstained[i][s]`:
/// its weight there is 0, and the cap of each sample is over the nodes that did not abstain.
pub fn confidence_weights_abstaining(
    matrices: &[&[f32]],
    abstained: &[Option<&[bool]>],
    samples: usize,
    classes: usize,
    power: f32,
    max_share: f32,
) -> Vec<Vec<f64>> {
    let mut weights: Vec<Vec<f64>> = matrices
        .iter()
        .map(|m| {
            m.chunks_exact(classes)
                .map(|row| (1.0 - normalised_entropy(row) as f64).max(1e-6).powf(power as f64))
                .collect()
        })
        .collect();
    let knows = |i: usize, s: usize| !abstained.get(i).copied().flatten().is_some_and(|m| m[s]);
    let mut column = Vec::with_capacity(matrices.len());
    for s in 0..samples {
        column.clear();
        column.extend((0..weights.len()).filter(|&i| knows(i, s)).map(|i| weights[i][s]));
        let mut capped = capped_weights(&column, max_share as f64).into_iter();
        for (i, w) in weights.iter_mut().enumerate() {
            w[s] = if knows(i, s) { capped.next().unwrap_or(0.0) } else { 0.0 };
        }
    }
    weights
}

/// Clips the weights of one sample so that no node carries more than `max_share` times the equal
/// share 1/n of their total: each weight becomes min(w, λ), with λ the largest level at which the
/// clipped weights satisfy the cap (water-filling; `max_share` ≥ 1 always admits one). Weights
/// within the cap are returned unchanged. λ is computed from the sorted weights, so the result
/// does not depend on the order of the nodes.
pub fn capped_weights(weights: &[f64], max_share: f64) -> Vec<f64> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let cap = (max_share.max(1.0) / n as f64).min(1.0);
    let mut sorted = weights.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    // f(λ) = cap · Σ min(w, λ) − λ is concave with f(0) = 0: the clipped weights meet the cap
    // exactly where f ≥ 0, an interval [0, λ*]. Walk the segments between sorted weights.
    if cap * total >= sorted[0] {
        return weights.to_vec();
    }
    let mut rest = total; // Σ of the weights below the k clipped ones
    let mut level = sorted[n - 1];
    for k in 1..n {
        rest -= sorted[k - 1];
        let next = sorted[k];
        // On [next, sorted[k − 1]], f(λ) = cap · (rest + k·λ) − λ.
        if cap * (rest + k as f64 * next) >= next {
            level = cap * rest / (1.0 - cap * k as f64);
            break;
        }
    }
    weights.iter().map(|&w| w.min(level)).collect()
}
