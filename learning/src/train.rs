//! Training runs: supervised training ([`fit`]) and distillation from soft labels (the FedMD
//! digest step and the aggregator's global student both use [`distill`]). What a run is given
//! and reports is re-exported here from the layers below: its settings ([`TrainConfig`],
//! [`DistillConfig`], from [`crate::config`]), its rows ([`DistillSet`]), its [`TrainReport`],
//! the distillation loss and [`argmax`].
//!
//! Everything here is synchronous and runs on the calling thread: async callers wrap it in
//! `spawn_blocking` or a dedicated thread.

use burn::module::Module;
use burn::prelude::*;
use protocol::seed::Stream;
use rand::seq::SliceRandom;

use crate::Error;
use crate::arch::Layers;
pub use crate::config::{DistillConfig, DistillLossKind, EarlyStopping, OptimizerKind, TrainConfig};
use crate::data::{Dataset, rng};
use crate::joint::fit_joint;
pub use crate::loss::distill_loss;
use crate::model::{Model, logits_of};
use crate::step::{Descent, EpochLoss};
pub use crate::step::{DistillSet, TrainReport};
pub use crate::tensor::argmax;
use crate::tensor::{labels_tensor, row_values, rows_tensor};

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
    let rows = check_set(net, &set)?;
    let start = std::time::Instant::now();
    let device = net.backend.device().autodiff();
    let _rng = net.hold_dropout_rng(seed);
    let mut model = net.model.clone().train();
    let mut descent = Descent::new(cfg.train.optimizer(), cfg.train.learning_rate, "distillation");
    let (mut order, holdout) = hold_out(rows, cfg.early_stopping.as_ref(), seed)?;
    let mut stopping =
        cfg.early_stopping.as_ref().map(|es| EarlyStop::new(holdout, es.patience, set.targets, net.classes));
    let mut report = TrainReport::default();
    for epoch in 0..cfg.train.epochs {
        order.shuffle(&mut rng(seed, Stream::Shuffle, 1000 + epoch as u64));
        let loss;
        (model, loss) = distill_epoch(model, &mut descent, &set, &order, cfg, (net.input_dim, net.classes), &device)?;
        report.epoch_loss.push(loss);
        report.epochs_run += 1;
        if let Some(stop) = &mut stopping
            && stop.stop_after(&model, net, set.inputs)?
        {
            break;
        }
    }
    net.model = match stopping.and_then(|s| s.best) {
        Some((agree, best)) => {
            report.best_agreement = Some(agree);
            best
        }
        None => model,
    };
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Rows of a distillation set, after checking its shapes and values against the model's.
fn check_set(net: &Model, set: &DistillSet<'_>) -> Result<usize, Error> {
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
    Ok(rows)
}

/// The rows in a seeded order, split into those distilled on and, with early stopping, those
/// held out.
fn hold_out(rows: usize, early_stopping: Option<&EarlyStopping>, seed: u64) -> Result<(Vec<usize>, Vec<usize>), Error> {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut rng(seed, Stream::Shuffle, 7));
    let holdout: Vec<usize> = match early_stopping {
        Some(es) => {
            let n = ((rows as f32 * es.holdout).round() as usize).clamp(1, rows.saturating_sub(1).max(1));
            order.split_off(rows - n)
        }
        None => Vec::new(),
    };
    if order.is_empty() {
        return Err(Error::Shape("no rows left to distil on after the holdout".into()));
    }
    Ok((order, holdout))
}

/// One epoch over the rows `order`, in batches: the stepped model and the epoch's mean loss.
/// `shape`: the model's inputs and classes per row.
fn distill_epoch(
    mut model: Layers,
    descent: &mut Descent,
    set: &DistillSet<'_>,
    order: &[usize],
    cfg: &DistillConfig,
    (dim, classes): (usize, usize),
    device: &Device,
) -> Result<(Layers, f32), Error> {
    let mut epoch_loss = EpochLoss::default();
    for idx in order.chunks(cfg.train.batch_size) {
        let x = rows_tensor(set.inputs, idx, dim, device);
        let t = rows_tensor(set.targets, idx, classes, device);
        let w = set.weights.map(|w| row_values(w, idx, device));
        let y = set.labels.map(|l| labels_tensor(l, idx, device));
        let loss = distill_loss(model.forward(x), t, w, y, cfg);
        let value;
        (model, value) = descent.step(model, loss)?;
        epoch_loss.add(value);
    }
    Ok((model, epoch_loss.mean()))
}

/// Early stopping: the held-out rows, the teacher's class on each, and the best model so far.
struct EarlyStop {
    holdout: Vec<usize>,
    teacher_top: Vec<usize>,
    patience: usize,
    best: Option<(f32, Layers)>,
    since_best: usize,
}

impl EarlyStop {
    fn new(holdout: Vec<usize>, patience: usize, targets: &[f32], classes: usize) -> Self {
        let teacher_top = holdout.iter().map(|&i| argmax(&targets[i * classes..(i + 1) * classes])).collect();
        Self { holdout, teacher_top, patience, best: None, since_best: 0 }
    }

    /// After an epoch: measures the student's agreement with the teacher on the held-out rows,
    /// keeps the model if it is the best yet, and says whether patience has run out.
    fn stop_after(&mut self, model: &Layers, net: &Model, inputs: &[f32]) -> Result<bool, Error> {
        let logits = logits_of(&model.valid(), inputs, &self.holdout, net.input_dim, net.backend, 256)?;
        let agree =
            logits.chunks_exact(net.classes).zip(&self.teacher_top).filter(|(row, t)| argmax(row) == **t).count()
                as f32
                / self.holdout.len() as f32;
        if self.best.as_ref().is_none_or(|(b, _)| agree > *b) {
            self.best = Some((agree, model.clone()));
            self.since_best = 0;
            return Ok(false);
        }
        self.since_best += 1;
        Ok(self.since_best >= self.patience)
    }
}
