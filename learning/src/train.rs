//! Training: supervised local training, the distillation loss, and distillation from soft labels
//! (the FedMD digest step and the aggregator's global student both use [`distill`]).
//!
//! Everything here is synchronous and runs on the calling thread: async callers wrap it in
//! `spawn_blocking` or a dedicated thread.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use protocol::seed::Stream;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::{rng, Dataset};
use crate::arch::Layers;
use crate::model::Model;
use crate::Error;

/// Optimiser family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam.
    #[default]
    Adam,
    /// Stochastic gradient descent (with optional momentum).
    Sgd,
}

/// Settings of one training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub learning_rate: f64,
    /// Rows per batch.
    pub batch_size: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// L2 penalty added to the gradient (0 = none).
    pub weight_decay: f32,
    /// SGD momentum (0 = none; ignored by Adam).
    pub momentum: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { optimizer: OptimizerKind::Adam, learning_rate: 1e-3, batch_size: 64, epochs: 5, weight_decay: 0.0, momentum: 0.0 }
    }
}

impl TrainConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Config(format!("learning_rate {} must be positive", self.learning_rate)));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("batch_size must be positive".into()));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Config(format!("weight_decay {} must be ≥ 0", self.weight_decay)));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::Config(format!("momentum {} must be in [0, 1)", self.momentum)));
        }
        Ok(())
    }

    pub(crate) fn optimizer(&self) -> ModuleOptimizer {
        let decay = (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay));
        match self.optimizer {
            OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
            OptimizerKind::Sgd => {
                let momentum = (self.momentum > 0.0).then(|| MomentumConfig::new().with_momentum(self.momentum));
                SgdConfig::new().with_weight_decay(decay).with_momentum(momentum).init()
            }
        }
    }
}

/// The distillation objective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillLossKind {
    /// (1 − α) · KL(p_teacher,T ‖ p_student,T) · T² + α · CE(hard labels).
    #[default]
    Kl,
    /// (1 − α) · MSE between centred logits + α · CE. Teacher logits are recovered from its
    /// probabilities as T · log p (softmax is shift invariant, so both sides are centred).
    Mse,
}

/// Early stopping on a held-out slice of the distillation inputs, by agreement with the teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Fraction of the rows held out (0 < f < 1).
    pub holdout: f32,
    /// Epochs without improvement before stopping.
    pub patience: usize,
}

/// Settings of a distillation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Softmax temperature T of teacher and student.
    pub temperature: f32,
    /// Weight α of the hard-label cross-entropy (0 when there are no labels).
    pub alpha: f32,
    /// Loss on the soft targets.
    pub loss: DistillLossKind,
    /// Optimiser, batch size, epochs.
    pub train: TrainConfig,
    /// Optional early stopping.
    pub early_stopping: Option<EarlyStopping>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self { temperature: 3.0, alpha: 0.0, loss: DistillLossKind::Kl, train: TrainConfig::default(), early_stopping: None }
    }
}

impl DistillConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), Error> {
        self.train.validate()?;
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Config(format!("temperature {} must be positive", self.temperature)));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::Config(format!("alpha {} must be in [0, 1]", self.alpha)));
        }
        if let Some(es) = &self.early_stopping {
            if !(es.holdout > 0.0 && es.holdout < 1.0) {
                return Err(Error::Config(format!("early_stopping.holdout {} must be in (0, 1)", es.holdout)));
            }
        }
        Ok(())
    }
}

/// What a distillation run learns from.
#[derive(Clone, Copy, Debug)]
pub struct DistillSet<'a> {
    /// Row-major inputs, `rows × dim`.
    pub inputs: &'a [f32],
    /// Teacher probabilities at the configured temperature, `rows × classes`.
    pub targets: &'a [f32],
    /// Per-row weight (0 masks a row); `None` weighs every row 1.
    pub weights: Option<&'a [f32]>,
    /// Hard labels for the α term, if known.
    pub labels: Option<&'a [u32]>,
}

/// The distillation loss for a batch (mean over rows, weighted by `weights` if given).
///
/// `student_logits`, `teacher_probs`: `[batch, classes]`; `weights`: `[batch]`; `labels`: `[batch]`.
/// With [`DistillLossKind::Kl`] the soft term is multiplied by T², which keeps its gradient
/// with respect to the logits, T · (p_student,T − p_teacher,T), at the same scale whatever T
/// (Hinton et al., 2015); with α = 0 the loss is exactly zero when the student reproduces the teacher.
pub fn distill_loss(
    student_logits: Tensor<2>,
    teacher_probs: Tensor<2>,
    weights: Option<Tensor<1>>,
    labels: Option<Tensor<1, Int>>,
    cfg: &DistillConfig,
) -> Tensor<1> {
    let t = cfg.temperature;
    let device = student_logits.device();
    let per_row: Tensor<1> = match cfg.loss {
        DistillLossKind::Kl => {
            let log_ps = log_softmax(student_logits.clone().div_scalar(t), 1);
            let log_pt = teacher_probs.clone().clamp_min(1e-12).log();
            (teacher_probs * (log_pt - log_ps)).sum_dim(1).squeeze_dim::<1>(1).mul_scalar(t * t)
        }
        DistillLossKind::Mse => {
            let zt = teacher_probs.clamp_min(1e-12).log().mul_scalar(t);
            let zt = zt.clone() - zt.mean_dim(1);
            let zs = student_logits.clone() - student_logits.clone().mean_dim(1);
            (zs - zt).square().mean_dim(1).squeeze_dim::<1>(1)
        }
    };
    let soft = match weights {
        Some(w) => (per_row * w.clone()).sum() / w.sum().clamp_min(1e-12),
        None => per_row.mean(),
    };
    match labels {
        Some(y) if cfg.alpha > 0.0 => {
            let ce = CrossEntropyLossConfig::new().init(&device).forward(student_logits, y);
            soft.mul_scalar(1.0 - cfg.alpha) + ce.mul_scalar(cfg.alpha)
        }
        _ => soft,
    }
}

pub(crate) fn rows_tensor(values: &[f32], idx: &[usize], width: usize, device: &Device) -> Tensor<2> {
    let mut buf = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        buf.extend_from_slice(&values[i * width..(i + 1) * width]);
    }
    Tensor::from_data(TensorData::new(buf, [idx.len(), width]), device)
}

pub(crate) fn labels_tensor(labels: &[u32], idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// Summary of a training or distillation run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean loss of each epoch run.
    pub epoch_loss: Vec<f32>,
    /// Epochs run (early stopping may cut it short).
    pub epochs_run: usize,
    /// Best held-out agreement with the teacher, when early stopping was on.
    pub best_agreement: Option<f32>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

pub(crate) fn check_finite(loss: f32, what: &str) -> Result<(), Error> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Diverged(format!("{what} loss became {loss}; lower the learning rate")))
    }
}

/// Supervised training on labelled rows (cross-entropy), seeded.
pub fn fit(net: &mut Model, data: &Dataset, cfg: &TrainConfig, seed: u64) -> Result<TrainReport, Error> {
    cfg.validate()?;
    net.check_data(data.dim, data.classes)?;
    let start = std::time::Instant::now();
    let device = net.backend.device().autodiff();
    let _rng = seeded_rng(net, seed);
    let mut model = net.model.clone().train();
    let mut optim = cfg.optimizer();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut report = TrainReport::default();
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng(seed, Stream::Shuffle, 100 + epoch as u64));
        let mut total = 0f64;
        let mut batches = 0usize;
        for idx in order.chunks(cfg.batch_size) {
            let x = rows_tensor(&data.features, idx, data.dim, &device);
            let y = labels_tensor(&data.labels, idx, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            let value: f32 = loss.clone().into_scalar();
            check_finite(value, "training")?;
            total += value as f64;
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
        }
        report.epoch_loss.push((total / batches.max(1) as f64) as f32);
        report.epochs_run += 1;
    }
    net.model = model;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Trains the network towards teacher soft labels (and optionally hard labels), seeded.
///
/// Used for the FedMD digest step on a node (α = 0, consensus targets) and for the aggregator's
/// global student. With early stopping, a seeded slice of the rows is held out, agreement of the
/// student's argmax with the teacher's is measured after every epoch, and the best model is kept.
pub fn distill(net: &mut Model, set: DistillSet<'_>, cfg: &DistillConfig, seed: u64) -> Result<TrainReport, Error> {
    cfg.validate()?;
    let (dim, classes) = (net.input_dim, net.classes);
    let rows = set.inputs.len() / dim.max(1);
    if set.inputs.len() != rows * dim || set.targets.len() != rows * classes || rows == 0 {
        return Err(Error::Shape(format!(
            "distillation set: {} inputs and {} targets do not make rows of {dim} inputs and {classes} classes",
            set.inputs.len(),
            set.targets.len()
        )));
    }
    if set.weights.is_some_and(|w| w.len() != rows) || set.labels.is_some_and(|l| l.len() != rows) {
        return Err(Error::Shape(format!("weights or labels do not have {rows} rows")));
    }
    if let Some(v) = set.targets.iter().chain(set.inputs).find(|v| !v.is_finite()) {
        return Err(Error::Shape(format!("distillation set holds a non-finite value {v}")));
    }
    let start = std::time::Instant::now();
    let device = net.backend.device().autodiff();
    let _rng = seeded_rng(net, seed);
    let mut model = net.model.clone().train();
    let mut optim = cfg.train.optimizer();
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut rng(seed, Stream::Shuffle, 7));
    let holdout: Vec<usize> = match &cfg.early_stopping {
        Some(es) => {
            let n = ((rows as f32 * es.holdout).round() as usize).clamp(1, rows.saturating_sub(1).max(1));
            order.split_off(rows - n)
        }
        None => Vec::new(),
    };
    if order.is_empty() {
        return Err(Error::Shape("no rows left to distil on after the holdout".into()));
    }
    let teacher_top: Vec<usize> = holdout.iter().map(|&i| argmax(&set.targets[i * classes..(i + 1) * classes])).collect();
    let mut report = TrainReport::default();
    let mut best: Option<(f32, Layers)> = None;
    let mut since_best = 0usize;
    for epoch in 0..cfg.train.epochs {
        order.shuffle(&mut rng(seed, Stream::Shuffle, 1000 + epoch as u64));
        let mut total = 0f64;
        let mut batches = 0usize;
        for idx in order.chunks(cfg.train.batch_size) {
            let x = rows_tensor(set.inputs, idx, dim, &device);
            let t = rows_tensor(set.targets, idx, classes, &device);
            let w = set.weights.map(|w| {
                let v: Vec<f32> = idx.iter().map(|&i| w[i]).collect();
                Tensor::<1>::from_data(TensorData::new(v, [idx.len()]), &device)
            });
            let y = set.labels.map(|l| labels_tensor(l, idx, &device));
            let loss = distill_loss(model.forward(x), t, w, y, cfg);
            let value: f32 = loss.clone().into_scalar();
            check_finite(value, "distillation")?;
            total += value as f64;
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.train.learning_rate, model, grads);
        }
        report.epoch_loss.push((total / batches.max(1) as f64) as f32);
        report.epochs_run += 1;
        if let Some(es) = &cfg.early_stopping {
            let logits = crate::model::logits_of(&model.valid(), set.inputs, &holdout, dim, net.backend, 256)?;
            let agree = logits
                .chunks_exact(classes)
                .zip(&teacher_top)
                .filter(|(row, t)| argmax(row) == **t)
                .count() as f32
                / holdout.len() as f32;
            if best.as_ref().is_none_or(|(b, _)| agree > *b) {
                best = Some((agree, model.clone()));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= es.patience {
                    break;
                }
            }
        }
    }
    net.model = match best {
        Some((agree, m)) => {
            report.best_agreement = Some(agree);
            m
        }
        None => model,
    };
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Dropout draws from burn's process-wide generator: a network that uses it holds the generator,
/// seeded, for the whole run; one that does not leaves it alone.
pub(crate) fn seeded_rng(net: &Model, seed: u64) -> Option<std::sync::MutexGuard<'static, ()>> {
    net.architecture.uses_rng().then(|| {
        let guard = crate::model::rng_lock();
        net.backend.seed(seed);
        guard
    })
}

/// Index of the largest value (first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;

    fn grad_norm(t: f32, zs: &[f32], zt: &[f32]) -> f32 {
        let device = Device::flex().autodiff();
        let s = Tensor::<2>::from_data(TensorData::new(zs.to_vec(), [2, 4]), &device).require_grad();
        let teacher = softmax(Tensor::<2>::from_data(TensorData::new(zt.to_vec(), [2, 4]), &device).div_scalar(t), 1);
        let cfg = DistillConfig { temperature: t, ..Default::default() };
        let grads = distill_loss(s.clone(), teacher, None, None, &cfg).backward();
        let g: Vec<f32> = s.grad(&grads).expect("grad").try_into_vec_as::<f32>().expect("vec");
        g.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    #[test]
    fn kl_loss_is_zero_for_identical_logits_and_positive_otherwise() {
        let device = Device::flex();
        let z = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0], [2, 3]), &device);
        for t in [1.0f32, 4.0] {
            let cfg = DistillConfig { temperature: t, ..Default::default() };
            let teacher = softmax(z.clone().div_scalar(t), 1);
            let same: f32 = distill_loss(z.clone(), teacher.clone(), None, None, &cfg).into_scalar();
            assert!(same.abs() < 1e-5, "T={t}: {same}");
            let other: f32 = distill_loss(z.clone().mul_scalar(-1.0), teacher.clone(), None, None, &cfg).into_scalar();
            assert!(other > 1e-2, "T={t}: {other}");
            let mse = DistillConfig { loss: DistillLossKind::Mse, ..cfg.clone() };
            let same: f32 = distill_loss(z.clone().add_scalar(5.0), teacher.clone(), None, None, &mse).into_scalar();
            assert!(same.abs() < 1e-4, "mse is shift invariant: {same}");
            let other: f32 = distill_loss(z.clone().mul_scalar(-1.0), teacher, None, None, &mse).into_scalar();
            assert!(other > 1e-2);
        }
    }

    #[test]
    fn t_squared_keeps_the_gradient_scale_at_high_temperature() {
        // Zero-mean logits: at high T the gradient of T²·KL tends to (z_s − z_t)/C, independent of T.
        let zs = [1.0f32, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0];
        let zt = [-1.0f32, 1.0, 0.0, 0.0, 0.0, 2.0, -1.0, -1.0];
        let (g10, g20, g40) = (grad_norm(10.0, &zs, &zt), grad_norm(20.0, &zs, &zt), grad_norm(40.0, &zs, &zt));
        assert!((g10 / g20 - 1.0).abs() < 0.05, "{g10} vs {g20}");
        assert!((g20 / g40 - 1.0).abs() < 0.05, "{g20} vs {g40}");
        // Without the T² factor the gradient would shrink 4× per doubling of T.
        let limit = {
            let d: Vec<f32> = zs.iter().zip(&zt).map(|(a, b)| (a - b) / 4.0).collect();
            d.iter().map(|v| v * v).sum::<f32>().sqrt() / 2.0 // mean over the 2 rows
        };
        assert!((g40 / limit - 1.0).abs() < 0.05, "{g40} vs {limit}");
    }

    #[test]
    fn alpha_mixes_in_cross_entropy() {
        let device = Device::flex();
        let z = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0, 0.0, 2.0], [2, 2]), &device);
        let teacher = softmax(z.clone(), 1);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
        let cfg = DistillConfig { temperature: 1.0, alpha: 0.5, ..Default::default() };
        let mixed: f32 = distill_loss(z.clone(), teacher, None, Some(y), &cfg).into_scalar();
        // KL term is zero, CE of the wrong labels is log(1 + e²) ≈ 2.127, halved.
        assert!((mixed - 0.5 * (1.0f32 + 2f32.exp()).ln()).abs() < 1e-4, "{mixed}");
    }
}
