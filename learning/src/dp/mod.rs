//! DP-SGD (Abadi et al. 2016) for training on private rows: every step samples each private row
//! independently with probability q (Poisson sampling), clips each sampled row's gradient to
//! L2 norm C, sums the clipped gradients, adds Gaussian noise N(0, σ²C²) to every coordinate and
//! divides by the expected batch size q·N. One step is one sampled Gaussian mechanism with
//! (q, σ): what [`crate::privacy`] accounts.
//!
//! Per-example gradients are never materialised for linear layers: the gradient of a linear
//! layer's weight for row i is `g_i a_iᵀ` (g_i: the loss gradient at the layer's output,
//! a_i: its input), whose squared norm is `‖g_i‖²·‖a_i‖²`, and its bias adds `‖g_i‖²`. For a
//! convolution, the per-row weight gradient is `g_i U_iᵀ` with `U_i` the unfolded input
//! patches, one batched matrix product. So a step costs two forward and backward passes of the
//! batch: one that measures every row's gradient norm from the layers' inputs and output
//! gradients ([`Tap`]s), and one on the loss weighted by each row's clipping factor
//! `min(1, C/‖∇_i‖)`, whose gradient is exactly the sum of clipped per-row gradients. The first
//! pass runs on parameters that track no gradient, so its backward pass computes only the
//! output gradients the norms need, not the weight gradients (the larger half of the work).
//!
//! The sampling and the noise draw from a ChaCha20 keystream under keys from the operating
//! system's cryptographic generator, a fresh 256-bit key every 256 KiB (the construction is
//! documented in `dp/generator.rs`), unless [`DpSgd::noise_seed`] fixes a seed: then from
//! xoshiro256++ seeded with it, for simulations that must be reproducible (the noise is known
//! to whoever knows the seed, and the guarantee holds only against others). Normal draws use
//! the ziggurat method of `rand_distr` (one 64-bit word a draw, but for the rare tail), written
//! straight into one buffer a parameter and added to its gradient in one tensor operation.
//!
//! Dropout is supported: both passes of a step reseed burn's generator alike, so they draw the
//! same masks.
//!
//! A row whose loss or gradient norm is not finite (an overflowing feature, a value no
//! preprocessing caught) gets a clipping factor of 0: it adds nothing to the step, and the step
//! goes on with the other rows, as for any row whose gradient clipping bounds. Aborting instead
//! would stop the training after its budget was paid, an event that depends on one record and
//! that the aggregator sees.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use protocol::seed::{Stream, derive};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::arch::{Layers, Tap};
use crate::loss::cross_entropy_rows;
use crate::privacy::Segment;

mod generator;

pub(crate) use generator::Generator;

/// DP-SGD settings of a training run on private rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSgd {
    /// Clipping norm C of each row's gradient.
    pub clip_norm: f32,
    /// Noise standard deviation over the clipping norm, σ.
    pub noise_multiplier: f64,
    /// Probability q that a private row is in a step's batch.
    pub sample_rate: f64,
    /// Seed of the sampling and the noise. `None` (the default, and the only choice that keeps
    /// the guarantee against whoever could learn the seed) draws from the operating system.
    #[serde(default)]
    pub noise_seed: Option<u64>,
}

impl DpSgd {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(Error::Config(format!("clip_norm {} must be positive", self.clip_norm)));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier > 0.0) {
            return Err(Error::Config(format!("noise_multiplier {} must be positive", self.noise_multiplier)));
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return Err(Error::Config(format!("sample_rate {} must be in (0, 1]", self.sample_rate)));
        }
        Ok(())
    }

    /// Steps of one epoch: `round(1/q)`, so that an epoch sees every row once in expectation.
    pub fn steps_per_epoch(&self) -> u64 {
        (1.0 / self.sample_rate).round().max(1.0) as u64
    }

    /// Steps of a run of `epochs` epochs: exactly what [`crate::joint::fit_joint`] takes.
    pub fn steps(&self, epochs: usize) -> u64 {
        self.steps_per_epoch() * epochs as u64
    }

    /// The accountant's record of `steps` steps with these settings.
    pub fn segment(&self, steps: u64) -> Segment {
        Segment { sample_rate: self.sample_rate, noise_multiplier: self.noise_multiplier, steps }
    }

    /// The generator of the sampling and the noise of one run (`run`: the run's seed).
    pub(crate) fn generator(&self, run: u64) -> Result<Generator, Error> {
        match self.noise_seed {
            Some(seed) => Ok(Generator::Seeded(crate::data::Rng::seed_from_u64(derive(seed, Stream::Noise, run)))),
            None => Generator::os(),
        }
    }
}

/// Poisson sampling: each of `rows` rows independently with probability `q`.
pub(crate) fn sample(rows: usize, q: f64, generator: &mut Generator) -> Vec<usize> {
    generator.sample(rows, q)
}

/// Squared L2 norm of each row's gradient, `[batch]`, from the taps of a backward pass of the
/// sum of per-row losses.
pub(crate) fn row_sq_norms(taps: &[Tap], grads: &Gradients) -> Result<Tensor<1>, Error> {
    let missing = || Error::Shape("a layer's output gradient is missing".into());
    let mut total: Option<Tensor<1>> = None;
    for tap in taps {
        let term: Tensor<1> = match tap {
            Tap::Linear { input, probe } => {
                let g = probe.grad(grads).ok_or_else(missing)?;
                let g2 = g.square().sum_dim(1).squeeze_dim::<1>(1);
                let a2 = input.clone().square().sum_dim(1).squeeze_dim::<1>(1);
                g2 * (a2 + 1.0)
            }
            Tap::Conv3x3 { input, probe } => {
                let g = probe.grad(grads).ok_or_else(missing)?;
                let [b, cout, h, w] = g.dims();
                let g: Tensor<3> = g.reshape([b, cout, h * w]);
                let patches = unfold4d(input.clone(), [3, 3], UnfoldOptions::new([1, 1], [1, 1], [1, 1]));
                let weight: Tensor<3> = g.clone().matmul(patches.swap_dims(1, 2));
                let w2 = weight.square().sum_dim(2).sum_dim(1).reshape([b]);
                let b2 = g.sum_dim(2).square().sum_dim(1).reshape([b]);
                w2 + b2
            }
        };
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total.ok_or_else(|| Error::Shape("the model has no weight layer".into()))
}

/// Clipping factors `min(1, C/‖∇_i‖)` of the rows of one batch (first pass of a step); 0 for a
/// row whose loss or gradient norm is not finite. Every row's loss and gradient depend on that
/// row alone, so a non-finite row leaves the others' factors as they are.
pub(crate) fn clip_factors(
    layers: &Layers,
    x: Tensor<2>,
    one_hot: Tensor<2>,
    clip_norm: f32,
) -> Result<Vec<f32>, Error> {
    let mut taps = Vec::new();
    // Only the taps' gradients are needed: parameters that track none skip their own.
    let logits = layers.clone().no_grad().forward_tapped(x, &mut taps);
    let losses = cross_entropy_rows(logits, one_hot);
    let values: Vec<f32> =
        losses.clone().try_into_vec_as::<f32>().map_err(|e| Error::Shape(format!("row losses: {e:?}")))?;
    let grads = losses.sum().backward();
    let norms: Vec<f32> = row_sq_norms(&taps, &grads)?
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Shape(format!("gradient norms: {e:?}")))?;
    Ok(values
        .iter()
        .zip(&norms)
        .map(|(loss, n)| match loss.is_finite() && n.is_finite() {
            true => (clip_norm / n.sqrt().max(1e-12)).min(1.0),
            false => 0.0,
        })
        .collect())
}

/// Adds N(0, std²) to every coordinate of the gradient of every parameter of `layers`
/// (a parameter without a gradient gets the noise alone).
pub(crate) fn add_noise(layers: &Layers, grads: &mut GradientsParams, std: f32, generator: &mut Generator) {
    struct Noise<'a> {
        grads: &'a mut GradientsParams,
        std: f32,
        generator: &'a mut Generator,
    }
    impl ModuleVisitor for Noise<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val().inner();
            let dims = value.dims();
            let draws = self.generator.normals(dims.iter().product(), self.std);
            let noise = Tensor::<D>::from_data(TensorData::new(draws, dims), &value.device());
            let grad = match self.grads.remove::<D>(param.id) {
                Some(g) => g + noise,
                None => noise,
            };
            self.grads.register::<D>(param.id, grad);
        }
    }
    layers.visit(&mut Noise { grads, std, generator });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{one_hot, rows_tensor};
    use crate::{Architecture, BackendKind, Model};

    /// Squared norm of every parameter gradient of `layers` for one row, by plain autodiff.
    fn brute_sq_norm(layers: &Layers, x: &[f32], label: u32, dim: usize, classes: usize, device: &Device) -> f32 {
        struct SqNorm<'a> {
            grads: &'a GradientsParams,
            total: f32,
        }
        impl ModuleVisitor for SqNorm<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.grads.get::<D>(param.id) {
                    let s: f32 = g.square().sum().into_scalar();
                    self.total += s;
                }
            }
        }
        let xt = rows_tensor(x, &[0], dim, device);
        let loss = cross_entropy_rows(layers.forward(xt), one_hot(&[label], &[0], classes, device)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), layers);
        let mut v = SqNorm { grads: &grads, total: 0.0 };
        layers.visit(&mut v);
        v.total
    }

    fn check_norms(arch: Architecture, dim: usize) {
        let classes = 4;
        let model = Model::new(&arch, dim, classes, BackendKind::Flex, 5).unwrap();
        let device = model.backend.device().autodiff();
        let layers = model.model.clone().train();
        let rows = 5;
        let features: Vec<f32> = (0..rows * dim).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let labels: Vec<u32> = (0..rows as u32).map(|i| i % classes as u32).collect();
        let idx: Vec<usize> = (0..rows).collect();
        let mut taps = Vec::new();
        let logits = layers.forward_tapped(rows_tensor(&features, &idx, dim, &device), &mut taps);
        let grads = cross_entropy_rows(logits, one_hot(&labels, &idx, classes, &device)).sum().backward();
        let fast: Vec<f32> = row_sq_norms(&taps, &grads).unwrap().try_into_vec_as::<f32>().unwrap();
        for i in 0..rows {
            let slow = brute_sq_norm(&layers, &features[i * dim..(i + 1) * dim], labels[i], dim, classes, &device);
            assert!((fast[i] - slow).abs() <= 1e-3 * slow.max(1e-3), "row {i}: {} against {slow}", fast[i]);
        }
    }

    #[test]
    fn per_row_gradient_norms_match_one_row_at_a_time_autodiff() {
        check_norms(Architecture::Mlp { hidden: vec![7, 5], dropout: 0.0 }, 6);
        check_norms(Architecture::Mlp { hidden: vec![], dropout: 0.0 }, 3);
        check_norms(Architecture::Cnn { channels: [2, 3], hidden: 6, dropout: 0.0 }, 64);
    }

    #[test]
    fn clipping_factors_bound_every_row_and_leave_small_rows_alone() {
        let model =
            Model::new(&Architecture::Mlp { hidden: vec![8], dropout: 0.0 }, 4, 3, BackendKind::Flex, 2).unwrap();
        let device = model.backend.device().autodiff();
        let layers = model.model.clone().train();
        let features: Vec<f32> = (0..12).map(|i| i as f32 * 0.7 - 3.0).collect();
        let labels = [0u32, 1, 2];
        let idx = [0usize, 1, 2];
        let x = rows_tensor(&features, &idx, 4, &device);
        let tight = clip_factors(&layers, x.clone(), one_hot(&labels, &idx, 3, &device), 1e-4).unwrap();
        assert!(tight.iter().all(|&c| c > 0.0 && c < 1.0), "{tight:?}");
        let loose = clip_factors(&layers, x, one_hot(&labels, &idx, 3, &device), 1e6).unwrap();
        assert_eq!(loose, vec![1.0; 3]);
    }

    #[test]
    fn a_non_finite_row_gets_factor_zero_and_leaves_the_others_alone() {
        let model =
            Model::new(&Architecture::Mlp { hidden: vec![8], dropout: 0.0 }, 4, 3, BackendKind::Flex, 2).unwrap();
        let device = model.backend.device().autodiff();
        let layers = model.model.clone().train();
        let mut features: Vec<f32> = (0..12).map(|i| i as f32 * 0.7 - 3.0).collect();
        let labels = [0u32, 1, 2];
        let idx = [0usize, 1, 2];
        let factors = |features: &[f32], idx: &[usize]| {
            let x = rows_tensor(features, idx, 4, &device);
            clip_factors(&layers, x, one_hot(&labels, idx, 3, &device), 0.05).unwrap()
        };
        let clean = factors(&features, &idx);
        for bad in [f32::NAN, f32::INFINITY, 1e30] {
            features[4] = bad; // row 1
            let f = factors(&features, &idx);
            assert_eq!(f, vec![clean[0], 0.0, clean[2]], "feature {bad}");
        }
    }

    #[test]
    fn noise_has_the_asked_spread_and_reaches_every_parameter() {
        let model =
            Model::new(&Architecture::Mlp { hidden: vec![50], dropout: 0.0 }, 40, 10, BackendKind::Flex, 2).unwrap();
        let layers = model.model.clone().train();
        let mut grads = GradientsParams::new();
        let mut generator = Generator::Seeded(crate::data::Rng::seed_from_u64(1));
        add_noise(&layers, &mut grads, 0.5, &mut generator);
        assert_eq!(grads.len(), 4, "two weights and two biases");
        struct Moments<'a>(&'a GradientsParams, f64, f64, usize);
        impl ModuleVisitor for Moments<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let v: Vec<f32> = self.0.get::<D>(param.id).unwrap().try_into_vec_as().unwrap();
                self.1 += v.iter().map(|&x| x as f64).sum::<f64>();
                self.2 += v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
                self.3 += v.len();
            }
        }
        let mut m = Moments(&grads, 0.0, 0.0, 0);
        layers.visit(&mut m);
        let n = m.3 as f64;
        assert_eq!(m.3, 40 * 50 + 50 + 50 * 10 + 10);
        let (mean, sd) = (m.1 / n, (m.2 / n - (m.1 / n).powi(2)).sqrt());
        assert!(mean.abs() < 0.03 && (sd - 0.5).abs() < 0.02, "mean {mean}, sd {sd}");
    }

    #[test]
    fn poisson_batches_have_the_expected_size_and_a_seed_fixes_them() {
        let dp = DpSgd { clip_norm: 1.0, noise_multiplier: 1.0, sample_rate: 0.1, noise_seed: Some(3) };
        assert_eq!(dp.steps_per_epoch(), 10);
        assert_eq!(dp.steps(3), 30);
        let mut a = dp.generator(7).unwrap();
        let sizes: Vec<usize> = (0..200).map(|_| sample(1000, 0.1, &mut a).len()).collect();
        let mean = sizes.iter().sum::<usize>() as f64 / 200.0;
        assert!((mean - 100.0).abs() < 3.0, "{mean}");
        assert!(sizes.iter().any(|&s| s != sizes[0]), "batch sizes vary");
        let mut b = dp.generator(7).unwrap();
        assert_eq!(sample(1000, 0.1, &mut b), {
            let mut c = dp.generator(7).unwrap();
            sample(1000, 0.1, &mut c)
        });
        let os = DpSgd { noise_seed: None, ..dp.clone() };
        assert_ne!(sample(1000, 0.5, &mut os.generator(7).unwrap()), sample(1000, 0.5, &mut os.generator(7).unwrap()));
        for bad in [
            DpSgd { clip_norm: 0.0, ..dp.clone() },
            DpSgd { noise_multiplier: f64::NAN, ..dp.clone() },
            DpSgd { sample_rate: 1.5, ..dp.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
