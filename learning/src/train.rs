//! Training runs: supervised training ([`fit`]) and distillation from soft labels (the FedMD
//! digest step and the aggregator's global student both use [`distill`]). What a run is given
//! and reports is re-exported here from the layers below: its settings ([`TrainConfig`],
//! [`DistillConfig`], from [`crate::config`]), its rows ([`DistillSet`]), its [`TrainReport`],
//! the distillation loss and [`argmax`].
//!
//! Everything here is synchronous and runs on the calling thread: async callers wrap it in
//! `spawn_blocking` or a dedicated thread.

use burn::module::Module;
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
    let _rng = net.hold_dropout_rng(seed);
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
            let logits = logits_of(&model.valid(), set.inputs, &holdout, dim, net.backend, 256)?;
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
