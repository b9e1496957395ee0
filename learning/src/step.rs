//! What every training loop of this crate shares: batches as tensors, the finite-loss check,
//! the seeded dropout generator, and one descent step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::Error;
use crate::arch::Layers;
use crate::model::Model;

/// Rows `idx` of a row-major matrix of `width` columns, as a `[idx.len(), width]` tensor.
pub(crate) fn rows_tensor(values: &[f32], idx: &[usize], width: usize, device: &Device) -> Tensor<2> {
    let mut buf = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        buf.extend_from_slice(&values[i * width..(i + 1) * width]);
    }
    Tensor::from_data(TensorData::new(buf, [idx.len(), width]), device)
}

/// Labels of rows `idx`, as a `[idx.len()]` tensor.
pub(crate) fn labels_tensor(labels: &[u32], idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// Values of rows `idx` of a per-row vector, as a `[idx.len()]` tensor.
pub(crate) fn row_values(values: &[f32], idx: &[usize], device: &Device) -> Tensor<1> {
    let v: Vec<f32> = idx.iter().map(|&i| values[i]).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

pub(crate) fn check_finite(loss: f32, what: &str) -> Result<(), Error> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Diverged(format!("{what} loss became {loss}; lower the learning rate")))
    }
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
