//! Joint local training: cross-entropy on the private rows and distillation towards a teacher
//! on public rows, in the same steps. A node that learns this way keeps what the federation
//! taught it, instead of digesting the consensus and then overwriting it with private epochs.
//!
//! Each step takes one private batch and one public batch and minimises
//! `CE(private) + λ · KL(teacher_T ‖ student_T) · T²` (the soft term weighted per public row).
//! An epoch is one pass over the private rows; public batches are drawn in turn from a shuffled
//! order that carries over from epoch to epoch (and is reshuffled when used up), so every
//! public row is seen equally often at the cost of one extra forward pass per step.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use protocol::seed::Stream;
use rand::seq::SliceRandom;

use crate::data::{rng, Dataset};
use crate::model::Model;
use crate::train::{check_finite, distill_loss, labels_tensor, rows_tensor, seeded_rng, DistillConfig, DistillSet, TrainConfig, TrainReport};
use crate::Error;

/// Trains on `private` (hard labels) and towards `public`'s teacher (soft labels) at once,
/// with weight `weight` (λ ≥ 0) on the soft term, for `cfg.epochs` epochs. `distill` gives the
/// temperature and loss of the soft term; its own optimiser settings are not used.
pub fn fit_joint(model: &mut Model, private: &Dataset, public: DistillSet<'_>, weight: f32, cfg: &TrainConfig, distill: &DistillConfig, seed: u64) -> Result<TrainReport, Error> {
    cfg.validate()?;
    distill.validate()?;
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(Error::Config(format!("joint weight {weight} must be ≥ 0")));
    }
    model.check_data(private.dim, private.classes)?;
    let (dim, classes) = (model.input_dim, model.classes);
    let rows = public.inputs.len() / dim.max(1);
    if public.inputs.len() != rows * dim || public.targets.len() != rows * classes || public.weights.is_some_and(|w| w.len() != rows) {
        return Err(Error::Shape(format!("public set: {} inputs and {} targets are not rows of {dim} inputs and {classes} classes", public.inputs.len(), public.targets.len())));
    }
    if let Some(v) = public.targets.iter().chain(public.inputs).find(|v| !v.is_finite()) {
        return Err(Error::Shape(format!("public set holds a non-finite value {v}")));
    }
    if private.is_empty() {
        return Err(Error::Shape("no private rows".into()));
    }
    let start = std::time::Instant::now();
    let device = model.backend.device().autodiff();
    let _rng = seeded_rng(model, seed);
    let mut layers = model.model.clone().train();
    let mut optim = cfg.optimizer();
    let ce = CrossEntropyLossConfig::new().init(&device);
    let mut own: Vec<usize> = (0..private.len()).collect();
    let mut taught: Vec<usize> = (0..rows).collect();
    let (mut cursor, mut passes) = (rows, 0u64);
    let mut report = TrainReport::default();
    for epoch in 0..cfg.epochs {
        own.shuffle(&mut rng(seed, Stream::Shuffle, 100 + epoch as u64));
        let mut total = 0f64;
        let mut steps = 0usize;
        for idx in own.chunks(cfg.batch_size) {
            let x = rows_tensor(&private.features, idx, dim, &device);
            let y = labels_tensor(&private.labels, idx, &device);
            let mut loss = ce.forward(layers.forward(x), y);
            if weight > 0.0 && rows > 0 {
                if cursor >= rows {
                    taught.shuffle(&mut rng(seed, Stream::Shuffle, 5000 + passes));
                    (cursor, passes) = (0, passes + 1);
                }
                let t_idx = &taught[cursor..(cursor + cfg.batch_size).min(rows)];
                cursor += t_idx.len();
                let xt = rows_tensor(public.inputs, t_idx, dim, &device);
                let tt = rows_tensor(public.targets, t_idx, classes, &device);
                let w = public.weights.map(|w| {
                    let v: Vec<f32> = t_idx.iter().map(|&i| w[i]).collect();
                    Tensor::<1>::from_data(TensorData::new(v, [t_idx.len()]), &device)
                });
                let soft = distill_loss(layers.forward(xt), tt, w, None, distill);
                loss = loss + soft.mul_scalar(weight);
            }
            let value: f32 = loss.clone().into_scalar();
            check_finite(value, "joint training")?;
            total += value as f64;
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &layers);
            layers = optim.step(cfg.learning_rate, layers, grads);
        }
        report.epoch_loss.push((total / steps.max(1) as f64) as f32);
        report.epochs_run += 1;
    }
    model.model = layers;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, BackendKind};

    /// Rows of 2 features; class 1 iff the first feature is positive.
    fn rows(n: usize, offset: f32) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let a = (i as f32 / n as f32) * 2.0 - 1.0 + offset;
            x.extend([a, (i % 3) as f32 * 0.1]);
            y.push((a > 0.0) as u32);
        }
        (x, y)
    }

    #[test]
    fn the_teacher_term_pulls_the_public_rows_and_the_private_rows_are_still_learnt() {
        // Private rows cover only a < 0.2; the teacher says the opposite of the rule on public
        // rows with a > 0.5: with λ > 0 the model follows the teacher there, with λ = 0 it does not.
        let (px, py) = rows(64, -0.4);
        let private = Dataset::new(px, py, 2, 2).unwrap();
        let public_x: Vec<f32> = (0..32).flat_map(|i| [0.5 + i as f32 / 64.0, 0.0]).collect();
        let targets: Vec<f32> = (0..32).flat_map(|_| [0.95f32, 0.05]).collect();
        let public = DistillSet { inputs: &public_x, targets: &targets, weights: None, labels: None };
        let cfg = TrainConfig { epochs: 60, learning_rate: 1e-2, batch_size: 16, ..Default::default() };
        let distill = DistillConfig { temperature: 1.0, ..Default::default() };
        let fresh = || Model::new(&Architecture::Mlp { hidden: vec![16], dropout: 0.0 }, 2, 2, BackendKind::Flex, 3).unwrap();
        let class0_share = |m: &Model| m.predict(&public_x).unwrap().iter().filter(|&&c| c == 0).count();
        let mut taught = fresh();
        fit_joint(&mut taught, &private, public, 1.0, &cfg, &distill, 9).unwrap();
        let mut alone = fresh();
        fit_joint(&mut alone, &private, public, 0.0, &cfg, &distill, 9).unwrap();
        assert!(class0_share(&taught) >= 28, "taught: {} of 32 follow the teacher", class0_share(&taught));
        assert!(class0_share(&alone) <= 4, "alone: {} of 32 follow the (absent) teacher", class0_share(&alone));
        let own = taught.predict(&private.features).unwrap();
        let right = own.iter().zip(&private.labels).filter(|(a, b)| a == b).count();
        assert!(right >= 58, "private rows still learnt: {right} of 64");
        // The same seed gives the same model.
        let mut again = fresh();
        fit_joint(&mut again, &private, public, 1.0, &cfg, &distill, 9).unwrap();
        assert_eq!(again.logits(&public_x, 64).unwrap(), taught.logits(&public_x, 64).unwrap());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (px, py) = rows(8, 0.0);
        let private = Dataset::new(px, py, 2, 2).unwrap();
        let cfg = TrainConfig::default();
        let distill = DistillConfig::default();
        let mut m = Model::new(&Architecture::Mlp { hidden: vec![4], dropout: 0.0 }, 2, 2, BackendKind::Flex, 1).unwrap();
        let x = [0.1f32, 0.2];
        let nan = [f32::NAN, 1.0];
        let ok = [0.5f32, 0.5];
        assert!(fit_joint(&mut m, &private, DistillSet { inputs: &x, targets: &nan, weights: None, labels: None }, 1.0, &cfg, &distill, 1).is_err());
        assert!(fit_joint(&mut m, &private, DistillSet { inputs: &x[..1], targets: &ok, weights: None, labels: None }, 1.0, &cfg, &distill, 1).is_err());
        assert!(fit_joint(&mut m, &private, DistillSet { inputs: &x, targets: &ok, weights: None, labels: None }, -1.0, &cfg, &distill, 1).is_err());
    }
}
