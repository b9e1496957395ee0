//! Evaluation over plain arrays: accuracy, per-class accuracy, confusion matrix, negative
//! log-likelihood, expected calibration error and agreement with a teacher; plus model size
//! and latency in [`ModelFacts`].

use serde::{Deserialize, Serialize};

use crate::tensor::argmax;

/// Metrics of probabilities against true labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of rows whose argmax is the label.
    pub accuracy: f32,
    /// Accuracy per class (NaN-free: classes without rows get 0).
    pub per_class_accuracy: Vec<f32>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u32>>,
    /// Mean −log p(label).
    pub nll: f32,
    /// Expected calibration error over 15 equal-width confidence bins.
    pub ece: f32,
    /// Rows evaluated.
    pub rows: usize,
}

/// Evaluates row-major probabilities (`rows × classes`) against `labels`.
pub fn evaluate(probs: &[f32], labels: &[u32], classes: usize) -> Metrics {
    let rows = labels.len();
    let mut confusion = vec![vec![0u32; classes]; classes];
    let mut nll = 0f64;
    const BINS: usize = 15;
    let mut bin_conf = [0f64; BINS];
    let mut bin_acc = [0f64; BINS];
    let mut bin_n = [0usize; BINS];
    for (row, &y) in probs.chunks_exact(classes).zip(labels) {
        let pred = argmax(row);
        confusion[y as usize][pred] += 1;
        nll -= (row[y as usize].max(1e-12) as f64).ln();
        let conf = row[pred] as f64;
        let b = ((conf * BINS as f64) as usize).min(BINS - 1);
        bin_conf[b] += conf;
        bin_acc[b] += (pred == y as usize) as u8 as f64;
        bin_n[b] += 1;
    }
    let correct: u32 = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class_accuracy = (0..classes)
        .map(|c| {
            let n: u32 = confusion[c].iter().sum();
            if n == 0 { 0.0 } else { confusion[c][c] as f32 / n as f32 }
        })
        .collect();
    let ece = (0..BINS).map(|b| (bin_acc[b] - bin_conf[b]).abs()).sum::<f64>() / rows.max(1) as f64;
    Metrics {
        accuracy: correct as f32 / rows.max(1) as f32,
        per_class_accuracy,
        confusion,
        nll: (nll / rows.max(1) as f64) as f32,
        ece: ece as f32,
        rows,
    }
}

/// Fraction of rows where two row-major matrices have the same argmax.
pub fn agreement(a: &[f32], b: &[f32], classes: usize) -> f32 {
    let rows = a.len() / classes;
    let same = a.chunks_exact(classes).zip(b.chunks_exact(classes)).filter(|(x, y)| argmax(x) == argmax(y)).count();
    same as f32 / rows.max(1) as f32
}

/// Size and speed of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// Architecture label.
    pub architecture: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Bytes of the burnpack weights file.
    pub bytes: u64,
    /// Inference latency at batch 1, µs per sample.
    pub latency_us_batch1: f64,
    /// Inference latency at batch 256, µs per sample.
    pub latency_us_batch256: f64,
}

impl ModelFacts {
    /// Measures a network.
    pub fn of(net: &crate::Model) -> Result<Self, crate::Error> {
        Ok(Self {
            architecture: net.architecture.label(net.input_dim, net.classes),
            parameters: net.num_params(),
            bytes: net.to_bytes()?.len() as u64,
            latency_us_batch1: net.latency_us(1, 50)?,
            latency_us_batch256: net.latency_us(256, 5)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_hand_computed_example() {
        let probs = [0.9f32, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7];
        let labels = [0u32, 1, 1, 1];
        let m = evaluate(&probs, &labels, 2);
        assert_eq!(m.accuracy, 0.75);
        assert_eq!(m.confusion, vec![vec![1, 0], vec![1, 2]]);
        assert_eq!(m.per_class_accuracy, vec![1.0, 2.0 / 3.0]);
        let nll = -(0.9f32.ln() + 0.8f32.ln() + 0.4f32.ln() + 0.7f32.ln()) / 4.0;
        assert!((m.nll - nll).abs() < 1e-5);
        // bins: 0.9 → acc 1, 0.8 → 1, 0.6 → 0, 0.7 → 1 (all in separate bins)
        let ece = ((1.0 - 0.9) + (1.0 - 0.8) + 0.6 + (1.0 - 0.7)) / 4.0;
        assert!((m.ece - ece).abs() < 1e-5, "{} vs {ece}", m.ece);
        assert_eq!(agreement(&probs, &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0], 2), 0.75);
    }
}
