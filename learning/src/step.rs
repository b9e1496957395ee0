//! What every training loop of this crate shares: what a distillation learns from
//! ([`DistillSet`]), what a run reports ([`TrainReport`]), the finite-loss check, one descent
//! step and the mean loss of an epoch.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::arch::Layers;

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
    /// Steps that trained the model (with or without DP-SGD).
    #[serde(default)]
    pub steps: u64,
    /// Steps of work done after training and thrown away, so that the run takes as long as a
    /// fixed number of steps whatever its rows (see [`crate::joint::fit_joint_padded`]).
    #[serde(default)]
    pub padding_steps: u64,
}

/// Fails when a loss is not finite: training diverged.
pub(crate) fn check_finite(loss: f32, what: &str) -> Result<(), Error> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Diverged(format!("{what} loss became {loss}; lower the learning rate")))
    }
}

/// An optimiser and its learning rate, stepping a model in training mode.
pub(crate) struct Descent {
    optim: ModuleOptimizer,
    learning_rate: f64,
    what: &'static str,
}

impl Descent {
    pub(crate) fn new(optim: ModuleOptimizer, learning_rate: f64, what: &'static str) -> Self {
        Self { optim, learning_rate, what }
    }

    /// Checks the loss, backpropagates it and steps: returns the stepped model and the loss.
    pub(crate) fn step(&mut self, layers: Layers, loss: Tensor<1>) -> Result<(Layers, f32), Error> {
        let (grads, value) = self.gradients(&layers, loss)?;
        Ok((self.apply(layers, grads), value))
    }

    /// Checks the loss and backpropagates it: the parameters' gradients and the loss.
    pub(crate) fn gradients(&self, layers: &Layers, loss: Tensor<1>) -> Result<(GradientsParams, f32), Error> {
        let value: f32 = loss.clone().into_scalar();
        check_finite(value, self.what)?;
        Ok((GradientsParams::from_grads(loss.backward(), layers), value))
    }

    /// Steps with gradients computed elsewhere.
    pub(crate) fn apply(&mut self, layers: Layers, grads: GradientsParams) -> Layers {
        self.optim.step(self.learning_rate, layers, grads)
    }
}

/// Mean loss of the steps of one epoch.
#[derive(Default)]
pub(crate) struct EpochLoss {
    total: f64,
    steps: usize,
}

impl EpochLoss {
    pub(crate) fn add(&mut self, loss: f32) {
        self.total += loss as f64;
        self.steps += 1;
    }

    pub(crate) fn mean(&self) -> f32 {
        (self.total / self.steps.max(1) as f64) as f32
    }
}
