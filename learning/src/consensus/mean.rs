//! The streaming (weighted) mean: exact fixed-point sums, independent of arrival order.

use crate::Error;

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
    /// Per-sample total weight (per-sample rules weight each row on its own).
    weight: Vec<i64>,
    /// Per sample, the matrices that gave it a positive weight.
    counts: Vec<u32>,
    classes: usize,
    nodes: usize,
}

impl MeanAccumulator {
    /// An empty accumulator.
    pub fn new(samples: usize, classes: usize) -> Self {
        Self { sum: vec![0; samples * classes], weight: vec![0; samples], counts: vec![0; samples], classes, nodes: 0 }
    }

    /// Adds one node's matrix with weight `w` (its sample count, or 1).
    pub fn add(&mut self, probs: &[f32], w: f64) -> Result<(), Error> {
        let samples = self.weight.len();
        self.add_rows(probs, &vec![w; samples])
    }

    /// Adds one node's matrix with a weight for each of its rows (the per-sample rules; 0 where
    /// the node abstains).
    pub fn add_rows(&mut self, probs: &[f32], row_weights: &[f64]) -> Result<(), Error> {
        if probs.len() != self.sum.len() || row_weights.len() != self.weight.len() {
            return Err(Error::Shape(format!(
                "matrix of {} values and {} row weights, expected {} and {}",
                probs.len(),
                row_weights.len(),
                self.sum.len(),
                self.weight.len()
            )));
        }
        if let Some(w) = row_weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::Consensus { detail: format!("node weight {w} must be finite and ≥ 0") });
        }
        if self.nodes >= 8192 {
            return Err(Error::Consensus { detail: "the streaming mean takes at most 8,192 nodes".into() });
        }
        let c = self.classes;
        for (count, &w) in self.counts.iter_mut().zip(row_weights) {
            *count += u32::from(w > 0.0);
        }
        for (((acc, row), total), &w) in
            self.sum.chunks_exact_mut(c).zip(probs.chunks_exact(c)).zip(self.weight.iter_mut()).zip(row_weights)
        {
            let scale = w.min(MAX_NODE_WEIGHT) * FIXED;
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

    /// Per sample, how many matrices gave it a positive weight (0: nobody contributed).
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }
}
