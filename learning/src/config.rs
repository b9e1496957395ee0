//! Settings of a training or distillation run, as written in configuration files (serde, with
//! defaults) and checked by `validate` before any run starts.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

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
