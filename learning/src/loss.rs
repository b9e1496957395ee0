//! Losses: the distillation objective (KL at temperature T × T², or MSE on centred logits, mixed
//! with cross-entropy on hard labels), and cross-entropy row by row (what per-example gradient
//! clipping needs).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::config::{DistillConfig, DistillLossKind};

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

/// Cross-entropy of each row: `logits` `[batch, classes]`, `one_hot` labels `[batch, classes]`
/// → `[batch]`.
pub fn cross_entropy_rows(logits: Tensor<2>, one_hot: Tensor<2>) -> Tensor<1> {
    (log_softmax(logits, 1) * one_hot).sum_dim(1).squeeze_dim::<1>(1).neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::one_hot;
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

    #[test]
    fn cross_entropy_rows_match_burn_s_mean_cross_entropy() {
        let device = Device::flex();
        let z = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0, -1.0, 0.5, 0.5, 3.0], [2, 3]), &device);
        let labels = [0u32, 2];
        let rows: Vec<f32> =
            cross_entropy_rows(z.clone(), one_hot(&labels, &[0, 1], 3, &device)).try_into_vec_as::<f32>().unwrap();
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
        let mean: f32 = CrossEntropyLossConfig::new().init(&device).forward(z, y).into_scalar();
        assert!(((rows[0] + rows[1]) / 2.0 - mean).abs() < 1e-5, "{rows:?} vs {mean}");
        assert!(rows[0] > 0.0 && rows[1] > 0.0 && (rows[0] - rows[1]).abs() > 1e-3);
    }
}
