//! Training: supervised local training, the distillation loss, and distillation from soft labels
//! (the FedMD digest step and the aggregator's global student both use [`distill`]).
//!
//! Everything here is synchronous and runs on the calling thread: async callers wrap it in
//! `spawn_blocking` or a dedicated thread.

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use protocol::seed::Stream;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::arch::Layers;
use crate::data::{Dataset, rng};
use crate::joint::fit_joint;
pub use crate::loss::distill_loss;
use crate::model::Model;
use crate::step::{Descent, EpochLoss, labels_tensor, row_values, rows_tensor, seeded_rng};

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
        Self {
            optimizer: OptimizerKind::Adam,
            learning_rate: 1e-3,
            batch_size: 64,
            epochs: 5,
            weight_decay: 0.0,
            momentum: 0.0,
        }
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
        Self {
            temperature: 3.0,
            alpha: 0.0,
            loss: DistillLossKind::Kl,
            train: TrainConfig::default(),
            early_stopping: None,
        }
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
        if let Some(es) = &self.early_stopping
            && !(es.holdout > 0.0 && es.holdout < 1.0)
        {
            return Err(Error::Config(format!("early_stopping.holdout {} must be in (0, 1)", es.holdout)));
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
    /// DP-SGD steps taken on private rows (0 without differential privacy).
    #[serde(default)]
    pub dp_steps: u64,
}

/// Supervised training on labelled rows (cross-entropy), seeded: [`fit_joint`] without a teacher
/// and without privacy.
pub fn fit(net: &mut Model, data: &Dataset, cfg: &TrainConfig, seed: u64) -> Result<TrainReport, Error> {
    fit_joint(net, data, None, cfg, None, seed)
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
    let mut descent = Descent::new(cfg.train.optimizer(), cfg.train.learning_rate, "distillation");
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
    let teacher_top: Vec<usize> =
        holdout.iter().map(|&i| argmax(&set.targets[i * classes..(i + 1) * classes])).collect();
    let mut report = TrainReport::default();
    let mut best: Option<(f32, Layers)> = None;
    let mut since_best = 0usize;
    for epoch in 0..cfg.train.epochs {
        order.shuffle(&mut rng(seed, Stream::Shuffle, 1000 + epoch as u64));
        let mut epoch_loss = EpochLoss::default();
        for idx in order.chunks(cfg.train.batch_size) {
            let x = rows_tensor(set.inputs, idx, dim, &device);
            let t = rows_tensor(set.targets, idx, classes, &device);
            let w = set.weights.map(|w| row_values(w, idx, &device));
            let y = set.labels.map(|l| labels_tensor(l, idx, &device));
            let loss = distill_loss(model.forward(x), t, w, y, cfg);
            let value;
            (model, value) = descent.step(model, loss)?;
            epoch_loss.add(value);
        }
        report.epoch_loss.push(epoch_loss.mean());
        report.epochs_run += 1;
        if let Some(es) = &cfg.early_stopping {
            let logits = crate::model::logits_of(&model.valid(), set.inputs, &holdout, dim, net.backend, 256)?;
            let agree = logits.chunks_exact(classes).zip(&teacher_top).filter(|(row, t)| argmax(row) == **t).count()
                as f32
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
