//! Training on private rows: cross-entropy on the private rows and, optionally, distillation
//! towards a teacher on public rows in the same steps, optionally under DP-SGD. A node that learns
//! this way keeps what the federation taught it, instead of digesting the consensus and then
//! overwriting it with private epochs.
//!
//! Each step takes one private batch and one public batch and minimises
//! `CE(private) + λ · KL(teacher_T ‖ student_T) · T²` (the soft term weighted per public row).
//! Public batches are drawn in turn from a shuffled order that carries over from epoch to epoch
//! (and is reshuffled when used up), so every public row is seen equally often.
//!
//! Without privacy, an epoch is one pass over the shuffled private rows in batches of
//! `batch_size` (or, with [`Cover::Both`], the longer of that and one pass over the
//! public rows, the private rows cycling). With [`DpSgd`], an epoch is [`DpSgd::steps_per_epoch`] steps, each on a Poisson
//! sample of the private rows, whose gradient is clipped per row and noised (see [`crate::dp`]);
//! the public term's gradient is added to it unclipped and without noise, since it depends on
//! no private row (only on the model, already private, and on public rows). This function is
//! the only place in this crate where a gradient of a private row is computed.
//!
//! The number of steps grows with the private rows, so the time a training takes tells its row
//! count to whoever sees when the answer comes. [`fit_joint_padded`] hides it: after training,
//! it does the work of as many more steps as take the run to a fixed number, on copies of the
//! model that are thrown away (the model and every figure stay what they would have been).

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use protocol::seed::Stream;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::arch::Layers;
use crate::config::{DistillConfig, TrainConfig};
use crate::data::{Dataset, rng};
use crate::dp::{self, DpSgd, Generator};
use crate::loss::{cross_entropy_rows, distill_loss};
use crate::model::Model;
use crate::step::{Descent, DistillSet, EpochLoss, TrainReport};
use crate::tensor::{labels_tensor, one_hot, row_values, rows_tensor};

/// A teacher on public rows, learnt from in the same steps as the private rows.
#[derive(Clone, Copy, Debug)]
pub struct Teaching<'a> {
    /// Public rows and the teacher's soft labels on them.
    pub set: DistillSet<'a>,
    /// Weight λ ≥ 0 of the soft term.
    pub weight: f32,
    /// Temperature and loss of the soft term (its optimiser settings are not used).
    pub distill: &'a DistillConfig,
    /// What an epoch covers without DP-SGD (under DP-SGD the sampling rate fixes the steps).
    pub cover: Cover,
}

/// What one epoch of [`fit_joint`] covers without DP-SGD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cover {
    /// One pass over the private rows.
    #[default]
    Private,
    /// As many steps as the longer of one pass over the private rows and one over the public
    /// rows, the private batches cycling (reshuffled each pass): a node with few private rows
    /// still learns every public row each epoch.
    Both,
}

impl Teaching<'_> {
    /// Rows of the public set, after checking shapes and values against the model's.
    fn check(&self, dim: usize, classes: usize) -> Result<usize, Error> {
        self.distill.validate()?;
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(Error::Config(format!("joint weight {} must be ≥ 0", self.weight)));
        }
        let set = &self.set;
        let rows = set.inputs.len() / dim.max(1);
        if set.inputs.len() != rows * dim
            || set.targets.len() != rows * classes
            || set.weights.is_some_and(|w| w.len() != rows)
        {
            return Err(Error::Shape(format!(
                "public set: {} inputs and {} targets are not rows of {dim} inputs and {classes} classes",
                set.inputs.len(),
                set.targets.len()
            )));
        }
        if let Some(v) = set.targets.iter().chain(set.inputs).find(|v| !v.is_finite()) {
            return Err(Error::Shape(format!("public set holds a non-finite value {v}")));
        }
        Ok(rows)
    }
}

/// Draws the public batches of a run: a shuffled order, used up in turn and reshuffled.
struct PublicBatches {
    order: Vec<usize>,
    cursor: usize,
    passes: u64,
    seed: u64,
}

impl PublicBatches {
    fn new(rows: usize, seed: u64) -> Self {
        Self { order: (0..rows).collect(), cursor: rows, passes: 0, seed }
    }

    fn next(&mut self, size: usize) -> &[usize] {
        if self.cursor >= self.order.len() {
            self.order.shuffle(&mut rng(self.seed, Stream::Shuffle, 5000 + self.passes));
            (self.cursor, self.passes) = (0, self.passes + 1);
        }
        let start = self.cursor;
        self.cursor = (start + size).min(self.order.len());
        &self.order[start..self.cursor]
    }
}

/// Trains on `private` (hard labels) and, with `teaching`, towards its teacher (soft labels) at
/// once, for `cfg.epochs` epochs; under DP-SGD when `dp` is given (then exactly
/// [`DpSgd::steps`]`(cfg.epochs)` steps, reported in [`TrainReport::dp_steps`]).
pub fn fit_joint(
    model: &mut Model,
    private: &Dataset,
    teaching: Option<Teaching<'_>>,
    cfg: &TrainConfig,
    dp: Option<&DpSgd>,
    seed: u64,
) -> Result<TrainReport, Error> {
    fit_joint_padded(model, private, teaching, cfg, dp, seed, 0)
}

/// [`fit_joint`], then padding: when the run took fewer than `pad_to` steps, as many more steps
/// of the same work (a private batch of the same size, the soft term, under DP-SGD the sampling,
/// clipping and noise) on a copy of the model that is thrown away, so that every run takes
/// `pad_to` steps of work whatever the number of private rows ([`TrainReport::padding_steps`]).
/// The trained model is exactly [`fit_joint`]'s. A run that takes more than `pad_to` steps is not
/// cut short: its [`TrainReport::steps`] says so.
pub fn fit_joint_padded(
    model: &mut Model,
    private: &Dataset,
    teaching: Option<Teaching<'_>>,
    cfg: &TrainConfig,
    dp: Option<&DpSgd>,
    seed: u64,
    pad_to: u64,
) -> Result<TrainReport, Error> {
    let (teaching, public_rows) = check_run(model, private, teaching, cfg, dp)?;
    let start = std::time::Instant::now();
    let device = model.backend.device().autodiff();
    let _rng = model.hold_dropout_rng(seed);
    let layers = model.model.clone().train();
    let descent = Descent::new(cfg.optimizer(), cfg.learning_rate, "private training");
    let mut run = Joint {
        model,
        private,
        teaching,
        public_rows,
        public: PublicBatches::new(public_rows, seed),
        descent,
        device,
        cfg,
        seed,
    };
    let mut report = TrainReport::default();
    let layers = match dp {
        None => run.plain_epochs(layers, pad_to, &mut report)?,
        Some(dp) => run.dp_epochs(layers, dp, pad_to, &mut report)?,
    };
    model.model = layers;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Checks the settings and shapes of a run. Returns the teaching that takes part (none when its
/// weight is 0 or it has no rows) and the number of its public rows.
fn check_run<'a>(
    model: &Model,
    private: &Dataset,
    teaching: Option<Teaching<'a>>,
    cfg: &TrainConfig,
    dp: Option<&DpSgd>,
) -> Result<(Option<Teaching<'a>>, usize), Error> {
    cfg.validate()?;
    if let Some(dp) = dp {
        dp.validate()?;
    }
    model.check_data(private.dim, private.classes)?;
    let public_rows = match &teaching {
        Some(t) => t.check(model.input_dim, model.classes)?,
        None => 0,
    };
    let teaching = teaching.filter(|t| t.weight > 0.0 && public_rows > 0);
    if private.is_empty() {
        return Err(Error::Shape("no private rows".into()));
    }
    Ok((teaching, public_rows))
}

/// One run of [`fit_joint`]: the rows, the teacher, the optimiser and the public batches' order.
struct Joint<'a> {
    model: &'a Model,
    private: &'a Dataset,
    teaching: Option<Teaching<'a>>,
    public_rows: usize,
    public: PublicBatches,
    descent: Descent,
    /// The backend's autodiff device.
    device: Device,
    cfg: &'a TrainConfig,
    seed: u64,
}

/// What every DP-SGD step of a run shares: the settings, the generator of samples and noise,
/// and the scales they fix.
struct DpRun<'a> {
    dp: &'a DpSgd,
    generator: Generator,
    /// The expected batch size q·N, by which the sum of clipped gradients is divided.
    expected: f32,
    /// Public rows a step: the expected private batch, at least 1.
    public_batch: usize,
    /// Standard deviation of the noise on the divided gradient, σ·C / (q·N).
    std: f32,
}

/// The shuffle stream of pass `pass` over the private rows in epoch `epoch`. The first pass of an
/// epoch shuffles as it always has; further passes (with [`Cover::Both`]) draw from streams of
/// their own.
fn shuffle_stream(epoch: usize, pass: usize) -> u64 {
    if pass == 0 { 100 + epoch as u64 } else { (1 << 32) + ((epoch as u64) << 16) + pass as u64 }
}

impl Joint<'_> {
    /// Without privacy: every epoch shuffles the private rows and steps through them in batches;
    /// with [`Cover::Both`], for as many steps as one pass over the public rows takes if that is
    /// more, the private batches cycling.
    fn plain_epochs(&mut self, mut layers: Layers, pad_to: u64, report: &mut TrainReport) -> Result<Layers, Error> {
        let ce = CrossEntropyLossConfig::new().init(&self.device);
        let batch_size = self.cfg.batch_size;
        let mut own: Vec<usize> = (0..self.private.len()).collect();
        let private_batches = self.private.len().div_ceil(batch_size);
        let steps = match &self.teaching {
            Some(t) if t.cover == Cover::Both => private_batches.max(self.public_rows.div_ceil(batch_size)),
            _ => private_batches,
        };
        for epoch in 0..self.cfg.epochs {
            let mut epoch_loss = EpochLoss::default();
            for step in 0..steps {
                let (pass, batch) = (step / private_batches, step % private_batches);
                if batch == 0 {
                    own.shuffle(&mut rng(self.seed, Stream::Shuffle, shuffle_stream(epoch, pass)));
                }
                let idx = &own[batch * batch_size..((batch + 1) * batch_size).min(own.len())];
                let value;
                (layers, value) = self.plain_step(layers, &ce, idx)?;
                epoch_loss.add(value);
                report.steps += 1;
            }
            report.epoch_loss.push(epoch_loss.mean());
            report.epochs_run += 1;
        }
        // Padding: full batches in the last order, cycling, on a copy that is thrown away (the
        // optimiser's state is this run's own and ends with it).
        for pad in 0..pad_to.saturating_sub(report.steps) as usize {
            let start = (pad * batch_size) % own.len();
            let idx: Vec<usize> = (0..batch_size.min(own.len())).map(|k| own[(start + k) % own.len()]).collect();
            self.plain_step(layers.clone(), &ce, &idx)?;
            report.padding_steps += 1;
        }
        Ok(layers)
    }

    /// One step without privacy: cross-entropy on the private rows `idx`, plus the soft term.
    fn plain_step(&mut self, layers: Layers, ce: &CrossEntropyLoss, idx: &[usize]) -> Result<(Layers, f32), Error> {
        let x = rows_tensor(&self.private.features, idx, self.model.input_dim, &self.device);
        let y = labels_tensor(&self.private.labels, idx, &self.device);
        let mut loss = ce.forward(layers.forward(x), y);
        if let Some(soft) = self.soft_term(&layers, self.cfg.batch_size) {
            loss = loss + soft;
        }
        self.descent.step(layers, loss)
    }

    /// Under DP-SGD: every epoch is [`DpSgd::steps_per_epoch`] steps.
    fn dp_epochs(
        &mut self,
        mut layers: Layers,
        dp: &DpSgd,
        pad_to: u64,
        report: &mut TrainReport,
    ) -> Result<Layers, Error> {
        let generator = dp.generator(self.seed)?;
        let expected = (dp.sample_rate * self.private.len() as f64) as f32;
        let public_batch = (expected.round() as usize).max(1);
        let std = (dp.noise_multiplier as f32) * dp.clip_norm / expected;
        let mut run = DpRun { dp, generator, expected, public_batch, std };
        for _ in 0..self.cfg.epochs {
            let mut epoch_loss = EpochLoss::default();
            for _ in 0..dp.steps_per_epoch() {
                layers = self.dp_step(layers, &mut run, &mut epoch_loss)?;
                report.dp_steps += 1;
                report.steps += 1;
            }
            report.epoch_loss.push(epoch_loss.mean());
            report.epochs_run += 1;
        }
        // Padding: the same DP-SGD steps (sampling, clipping, noise) on a copy thrown away.
        for _ in report.steps..pad_to {
            self.dp_step(layers.clone(), &mut run, &mut EpochLoss::default())?;
            report.padding_steps += 1;
        }
        Ok(layers)
    }

    /// One DP-SGD step: the clipped private term on a Poisson sample of the private rows, the soft
    /// term added unclipped, then Gaussian noise on the gradient of their sum.
    fn dp_step(&mut self, layers: Layers, run: &mut DpRun<'_>, epoch_loss: &mut EpochLoss) -> Result<Layers, Error> {
        let idx = dp::sample(self.private.len(), run.dp.sample_rate, &mut run.generator);
        let dropout_seed: u64 = rand::RngExt::random(&mut run.generator);
        let mut loss = self.clipped_private_term(&layers, &idx, dropout_seed, run)?;
        if let Some(soft) = self.soft_term(&layers, run.public_batch) {
            loss = Some(match loss {
                Some(l) => l + soft,
                None => soft,
            });
        }
        let mut grads = match loss {
            Some(loss) => {
                let (grads, value) = self.descent.gradients(&layers, loss)?;
                epoch_loss.add(value);
                grads
            }
            None => GradientsParams::new(),
        };
        dp::add_noise(&layers, &mut grads, run.std, &mut run.generator);
        run.generator.check()?;
        Ok(self.descent.apply(layers, grads))
    }

    /// The private term of a DP-SGD step on the sampled rows `idx` (`None` when none was sampled):
    /// each row's cross-entropy weighted by its clipping factor, summed and divided by the
    /// expected batch size. Both passes over the batch draw the same dropout masks.
    fn clipped_private_term(
        &self,
        layers: &Layers,
        idx: &[usize],
        dropout_seed: u64,
        run: &DpRun<'_>,
    ) -> Result<Option<Tensor<1>>, Error> {
        let mut idx = idx.to_vec();
        loop {
            if idx.is_empty() {
                return Ok(None);
            }
            let x = rows_tensor(&self.private.features, &idx, self.model.input_dim, &self.device);
            let y = one_hot(&self.private.labels, &idx, self.model.classes, &self.device);
            self.model.reseed_dropout(dropout_seed);
            let factors = dp::clip_factors(layers, x.clone(), y.clone(), run.dp.clip_norm)?;
            if factors.iter().all(|f| *f > 0.0) {
                let factors = Tensor::from_data(TensorData::new(factors, [idx.len()]), &self.device);
                self.model.reseed_dropout(dropout_seed);
                return Ok(Some((cross_entropy_rows(layers.forward(x), y) * factors).sum().div_scalar(run.expected)));
            }
            // A row with factor 0 adds nothing, and a non-finite one would make the whole sum
            // non-finite: the batch goes on without them (still divided by the expected batch
            // size), its other rows measured again since dropout masks follow the batch's shape.
            idx = idx.iter().zip(&factors).filter(|(_, f)| **f > 0.0).map(|(i, _)| *i).collect();
        }
    }

    /// The soft term of a step, on the next `size` public rows (`None` without a teacher).
    fn soft_term(&mut self, layers: &Layers, size: usize) -> Option<Tensor<1>> {
        let t = self.teaching.as_ref()?;
        let idx = self.public.next(size);
        let x = rows_tensor(t.set.inputs, idx, self.model.input_dim, &self.device);
        let targets = rows_tensor(t.set.targets, idx, self.model.classes, &self.device);
        let w = t.set.weights.map(|w| row_values(w, idx, &self.device));
        Some(distill_loss(layers.forward(x), targets, w, None, t.distill).mul_scalar(t.weight))
    }
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
        let fresh =
            || Model::new(&Architecture::Mlp { hidden: vec![16], dropout: 0.0 }, 2, 2, BackendKind::Flex, 3).unwrap();
        let class0_share = |m: &Model| m.predict(&public_x).unwrap().iter().filter(|&&c| c == 0).count();
        let mut taught = fresh();
        fit_joint(
            &mut taught,
            &private,
            Some(Teaching { set: public, weight: 1.0, distill: &distill, cover: Cover::Private }),
            &cfg,
            None,
            9,
        )
        .unwrap();
        let mut alone = fresh();
        fit_joint(
            &mut alone,
            &private,
            Some(Teaching { set: public, weight: 0.0, distill: &distill, cover: Cover::Private }),
            &cfg,
            None,
            9,
        )
        .unwrap();
        assert!(class0_share(&taught) >= 28, "taught: {} of 32 follow the teacher", class0_share(&taught));
        assert!(class0_share(&alone) <= 4, "alone: {} of 32 follow the (absent) teacher", class0_share(&alone));
        let own = taught.predict(&private.features).unwrap();
        let right = own.iter().zip(&private.labels).filter(|(a, b)| a == b).count();
        assert!(right >= 58, "private rows still learnt: {right} of 64");
        // The same seed gives the same model.
        let mut again = fresh();
        fit_joint(
            &mut again,
            &private,
            Some(Teaching { set: public, weight: 1.0, distill: &distill, cover: Cover::Private }),
            &cfg,
            None,
            9,
        )
        .unwrap();
        assert_eq!(again.logits(&public_x, 64).unwrap(), taught.logits(&public_x, 64).unwrap());
    }

    #[test]
    fn covering_the_public_rows_teaches_a_node_with_few_private_rows_every_public_row() {
        // 8 private rows (one batch) and 64 public rows (eight batches, second feature 1, unlike
        // any private row) that the teacher puts in class 1. In 3 epochs, one pass over the
        // private rows takes 3 steps and sees 24 public rows; covering them takes 24 steps.
        let (px, py) = rows(8, -0.4);
        let private = Dataset::new(px, py, 2, 2).unwrap();
        let public_x: Vec<f32> = (0..64).flat_map(|i| [-1.0 + i as f32 / 128.0, 1.0]).collect();
        let targets: Vec<f32> = (0..64).flat_map(|_| [0.05f32, 0.95]).collect();
        let public = DistillSet { inputs: &public_x, targets: &targets, weights: None, labels: None };
        let cfg = TrainConfig { epochs: 3, learning_rate: 3e-3, batch_size: 8, ..Default::default() };
        let distill = DistillConfig { temperature: 1.0, ..Default::default() };
        let fit = |cover: Cover| {
            let mut m =
                Model::new(&Architecture::Mlp { hidden: vec![16], dropout: 0.0 }, 2, 2, BackendKind::Flex, 3).unwrap();
            let report = fit_joint(
                &mut m,
                &private,
                Some(Teaching { set: public, weight: 1.0, distill: &distill, cover }),
                &cfg,
                None,
                9,
            )
            .unwrap();
            let probs = m.soft_labels(&public_x, 1.0, 64).unwrap();
            let class1 = probs.chunks(2).map(|p| p[1]).sum::<f32>() / 64.0;
            (report.epochs_run, class1, probs)
        };
        let (epochs_one, class1_one, _) = fit(Cover::Private);
        let (epochs_cover, class1_cover, probs) = fit(Cover::Both);
        assert_eq!((epochs_one, epochs_cover), (3, 3));
        assert!(
            class1_cover > class1_one + 0.1,
            "teacher's class on the public rows: {class1_one} after one private pass an epoch, {class1_cover} covering them"
        );
        assert_eq!(fit(Cover::Both).2, probs, "the same seed gives the same model");
    }

    fn dp(sample_rate: f64) -> DpSgd {
        DpSgd { clip_norm: 1.0, noise_multiplier: 1.0, sample_rate, noise_seed: Some(4) }
    }

    fn fresh() -> Model {
        Model::new(&Architecture::Mlp { hidden: vec![8], dropout: 0.0 }, 2, 2, BackendKind::Flex, 3).unwrap()
    }

    #[test]
    fn a_non_finite_row_under_dp_sgd_adds_nothing_and_the_training_goes_on() {
        let (mut px, py) = rows(16, 0.0);
        px[6] = f32::NAN; // row 3
        px[10] = 1e30; // row 5: overflows
        let private = Dataset::new(px, py, 2, 2).unwrap();
        let cfg = TrainConfig { epochs: 2, learning_rate: 1e-2, batch_size: 16, ..Default::default() };
        // Every row in every step: without the zero factor, the first step would fail.
        let dp = dp(1.0);
        let mut m = fresh();
        let report = fit_joint(&mut m, &private, None, &cfg, Some(&dp), 1).unwrap();
        assert_eq!(report.dp_steps, dp.steps(2));
        assert!(m.logits(&[0.5, 0.0, -0.5, 0.1], 2).unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn padding_makes_runs_on_different_row_counts_take_the_same_steps_and_changes_no_model() {
        let cfg = TrainConfig { epochs: 2, learning_rate: 1e-2, batch_size: 20, ..Default::default() };
        let small = Dataset::new(rows(40, 0.0).0, rows(40, 0.0).1, 2, 2).unwrap();
        let large = Dataset::new(rows(120, 0.0).0, rows(120, 0.0).1, 2, 2).unwrap();
        for (name, dp_small, dp_large) in
            [("plain", None, None), ("dp-sgd", Some(dp(20.0 / 40.0)), Some(dp(20.0 / 120.0)))]
        {
            let run = |data: &Dataset, dp: Option<&DpSgd>, pad_to: u64| {
                let mut m = fresh();
                let report = fit_joint_padded(&mut m, data, None, &cfg, dp, 7, pad_to).unwrap();
                (report, m.logits(&data.features, 64).unwrap())
            };
            let (a, _) = run(&small, dp_small.as_ref(), 0);
            let (b, _) = run(&large, dp_large.as_ref(), 0);
            assert_eq!((a.steps, b.steps, a.padding_steps), (4, 12, 0), "{name}: unpadded, the steps tell the rows");
            let (a, model_a) = run(&small, dp_small.as_ref(), 30);
            let (b, _) = run(&large, dp_large.as_ref(), 30);
            assert_eq!((a.steps + a.padding_steps, b.steps + b.padding_steps), (30, 30), "{name}");
            assert_eq!((a.steps, a.padding_steps), (4, 26), "{name}");
            assert_eq!(model_a, run(&small, dp_small.as_ref(), 0).1, "{name}: padding leaves the model as it was");
            let (long, _) = run(&large, dp_large.as_ref(), 10);
            assert_eq!((long.steps, long.padding_steps), (12, 0), "{name}: a longer run is not cut short");
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (px, py) = rows(8, 0.0);
        let private = Dataset::new(px, py, 2, 2).unwrap();
        let cfg = TrainConfig::default();
        let distill = DistillConfig::default();
        let mut m =
            Model::new(&Architecture::Mlp { hidden: vec![4], dropout: 0.0 }, 2, 2, BackendKind::Flex, 1).unwrap();
        let x = [0.1f32, 0.2];
        let nan = [f32::NAN, 1.0];
        let ok = [0.5f32, 0.5];
        assert!(
            fit_joint(
                &mut m,
                &private,
                Some(Teaching {
                    set: DistillSet { inputs: &x, targets: &nan, weights: None, labels: None },
                    weight: 1.0,
                    distill: &distill,
                    cover: Cover::Private
                }),
                &cfg,
                None,
                1
            )
            .is_err()
        );
        assert!(
            fit_joint(
                &mut m,
                &private,
                Some(Teaching {
                    set: DistillSet { inputs: &x[..1], targets: &ok, weights: None, labels: None },
                    weight: 1.0,
                    distill: &distill,
                    cover: Cover::Private
                }),
                &cfg,
                None,
                1
            )
            .is_err()
        );
        assert!(
            fit_joint(
                &mut m,
                &private,
                Some(Teaching {
                    set: DistillSet { inputs: &x, targets: &ok, weights: None, labels: None },
                    weight: -1.0,
                    distill: &distill,
                    cover: Cover::Private
                }),
                &cfg,
                None,
                1
            )
            .is_err()
        );
    }
}
