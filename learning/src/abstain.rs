//! Abstention (Selective-FD, Shao et al., Nature Communications 2024): a node declines to label
//! the public samples its own model is out of its depth on, so that the consensus of a sample
//! averages only the nodes that recognise it.
//!
//! A sample's score is the model's confidence on it ([`Score`]: the largest softmax probability
//! at T = 1, or the negative energy `logsumexp(z)`); the node abstains where the score is below a
//! threshold. The threshold is either fixed by the operator ([`Abstain::threshold`]) or
//! calibrated as the `quantile` of the scores of the node's own private training rows
//! ([`calibrate`]): with `quantile = 0.05`, a sample that looks less familiar than 95 % of the
//! node's training rows is abstained on.
//!
//! Privacy: [`calibrate`] reads private rows outside any DP-SGD step; under a privacy budget
//! only a fixed threshold may be used (the node's config refuses the other). Given the
//! threshold, abstaining is post-processing of the model's outputs on public rows.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::Model;
use crate::data::Dataset;

/// Rows scored per forward pass.
const BATCH: usize = 256;

/// How familiar a sample looks to a model; higher is more familiar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    /// max softmax(z) at T = 1, in (0, 1].
    #[default]
    MaxSoftmax,
    /// The negative free energy logsumexp(z) of the logits.
    Energy,
}

/// When a node abstains (`[abstain]` in `node.toml`): set exactly one of `quantile` and
/// `threshold`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Abstain {
    /// The score.
    pub score: Score,
    /// Calibrate the threshold each round as this quantile, in (0, 1), of the scores of the
    /// node's private training rows (reads private rows: refused with `[privacy]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f32>,
    /// A fixed threshold set by the operator (reads no private row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

impl Abstain {
    /// Checks that exactly one of `quantile` and `threshold` is set, and in range.
    pub fn validate(&self) -> Result<(), Error> {
        match (self.quantile, self.threshold) {
            (Some(q), None) if q > 0.0 && q < 1.0 => Ok(()),
            (Some(q), None) => Err(Error::Config(format!("abstain.quantile {q} must be in (0, 1)"))),
            (None, Some(t)) if t.is_finite() => Ok(()),
            (None, Some(t)) => Err(Error::Config(format!("abstain.threshold {t} must be finite"))),
            _ => Err(Error::Config("abstain: set exactly one of `quantile` and `threshold`".into())),
        }
    }

    /// Whether finding the threshold reads private rows.
    pub fn reads_private_rows(&self) -> bool {
        self.quantile.is_some()
    }

    /// The threshold for `model`: the fixed one, or [`calibrate`]d on `private` (which is only
    /// read in that case).
    pub fn threshold(&self, model: &Model, private: &Dataset) -> Result<f32, Error> {
        match (self.threshold, self.quantile) {
            (Some(t), _) => Ok(t),
            (None, Some(q)) => calibrate(model, private, self.score, q),
            (None, None) => Err(Error::Config("abstain: no quantile and no threshold".into())),
        }
    }
}

/// The score of each row of the logits `z` (`rows × classes`).
pub fn scores(z: &[f32], classes: usize, score: Score) -> Vec<f32> {
    z.chunks_exact(classes)
        .map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
            match score {
                // max_i e^{z_i} / Σ e^{z_j} = 1 / Σ e^{z_j − max}.
                Score::MaxSoftmax => 1.0 / sum,
                Score::Energy => m + sum.ln(),
            }
        })
        .collect()
}

/// The `q`-quantile (nearest rank, rounding down) of `values`; `None` if there are none.
pub fn quantile(values: &[f32], q: f32) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let k = ((q.clamp(0.0, 1.0) * v.len() as f32).floor() as usize).min(v.len() - 1);
    Some(v[k])
}

/// The threshold at which `model` would abstain on a `q` fraction of its private training rows.
/// Reads every private row: not for use under a privacy budget.
pub fn calibrate(model: &Model, private: &Dataset, score: Score, q: f32) -> Result<f32, Error> {
    let z = model.logits(&private.features, BATCH)?;
    quantile(&scores(&z, model.classes, score), q)
        .ok_or_else(|| Error::Shape("no private rows to calibrate abstention on".into()))
}

/// Which rows of the public `inputs` `model` abstains on at `threshold` (`true`: abstains).
pub fn abstentions(model: &Model, inputs: &[f32], score: Score, threshold: f32) -> Result<Vec<bool>, Error> {
    let z = model.logits(inputs, BATCH)?;
    Ok(scores(&z, model.classes, score).into_iter().map(|s| s < threshold || s.is_nan()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{TrainConfig, fit};
    use crate::{Architecture, BackendKind};

    #[test]
    fn scores_are_the_max_softmax_and_the_logsumexp() {
        let z = [2.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let p = scores(&z, 3, Score::MaxSoftmax);
        let e2 = 2f32.exp();
        assert!((p[0] - e2 / (e2 + 2.0)).abs() < 1e-6);
        assert!((p[1] - 1.0 / 3.0).abs() < 1e-6);
        let e = scores(&z, 3, Score::Energy);
        assert!((e[0] - (e2 + 2.0).ln()).abs() < 1e-5);
        assert!((e[1] - (1.0 + 3f32.ln())).abs() < 1e-5);
    }

    #[test]
    fn quantiles_and_validation() {
        let v = [5.0f32, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 0.2), Some(2.0));
        assert_eq!(quantile(&v, 0.99), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert!(Abstain { quantile: Some(0.05), ..Default::default() }.validate().is_ok());
        assert!(Abstain { threshold: Some(0.5), ..Default::default() }.validate().is_ok());
        assert!(Abstain::default().validate().is_err(), "neither set");
        assert!(
            Abstain { quantile: Some(0.05), threshold: Some(0.5), ..Default::default() }.validate().is_err(),
            "both set"
        );
        assert!(Abstain { quantile: Some(1.0), ..Default::default() }.validate().is_err());
        assert!(Abstain { threshold: Some(f32::NAN), ..Default::default() }.validate().is_err());
    }

    /// Two classes in 2 features at (±1, 0); far-away points at (0, ±6) belong to neither.
    fn data() -> Dataset {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let c = i % 2;
            let jitter = (i as f32 * 0.37).sin() * 0.3;
            x.extend([if c == 0 { -1.0 } else { 1.0 } + jitter, jitter]);
            y.push(c as u32);
        }
        Dataset::new(x, y, 2, 3).unwrap()
    }

    #[test]
    fn the_calibrated_threshold_abstains_on_the_quantile_of_training_rows_and_on_what_was_never_seen() {
        let d = data();
        let mut model =
            Model::new(&Architecture::Mlp { hidden: vec![16], dropout: 0.0 }, 2, 3, BackendKind::Flex, 1).unwrap();
        fit(&mut model, &d, &TrainConfig { epochs: 30, learning_rate: 1e-2, ..Default::default() }, 1).unwrap();
        let a = Abstain { quantile: Some(0.1), ..Default::default() };
        let t = a.threshold(&model, &d).unwrap();
        let own = abstentions(&model, &d.features, Score::MaxSoftmax, t).unwrap();
        let rate = own.iter().filter(|a| **a).count() as f32 / own.len() as f32;
        assert!(rate <= 0.1 + 1e-6, "at most the quantile of its own rows is abstained on: {rate}");
        // On the boundary between its two classes the model is unsure: it abstains there.
        let unsure = abstentions(&model, &[0.0, 0.0], Score::MaxSoftmax, t).unwrap();
        assert_eq!(unsure, vec![true]);
        // A fixed threshold above every score abstains everywhere; below, nowhere.
        assert!(abstentions(&model, &d.features, Score::MaxSoftmax, 1.1).unwrap().iter().all(|a| *a));
        assert!(abstentions(&model, &d.features, Score::MaxSoftmax, 0.0).unwrap().iter().all(|a| !*a));
        let fixed = Abstain { threshold: Some(0.7), ..Default::default() };
        assert_eq!(
            fixed.threshold(&model, &Dataset::new(vec![], vec![], 2, 3).unwrap()).unwrap(),
            0.7,
            "a fixed threshold reads no row"
        );
    }
}
