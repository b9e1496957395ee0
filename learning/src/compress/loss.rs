//! The feature terms of the compression methods, each a mean over the batch (the logit term is
//! [`crate::loss::distill_loss`]):
//!
//! - [`hint_loss`] (FitNets, Romero et al. 2015): squared error between the regressed student
//!   representation and the teacher's, averaged over rows and units.
//! - [`attention_loss`] (Zagoruyko and Komodakis 2017, as their code computes it): a feature map
//!   `[batch, c, h, w]` gives the spatial map `Q = mean over channels of A²`, flattened to
//!   `h·w` and scaled to unit L2 norm; the loss of a pair of maps is the mean over rows and
//!   positions of `(Q_s − Q_t)²`.
//! - [`crd_loss`] (Tian et al. 2020, with in-batch negatives): the student's and teacher's
//!   projected embeddings scaled to unit norm; each row's pair is the positive and the batch's
//!   other rows the negatives; InfoNCE at temperature τ, taken both ways (student anchors
//!   against teacher embeddings, and teacher anchors against student ones) and averaged.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// FitNets' hint loss: `mean((regressed − teacher)²)`, both `[batch, width]`.
pub fn hint_loss(regressed: Tensor<2>, teacher: Tensor<2>) -> Tensor<1> {
    (regressed - teacher).square().mean()
}

/// Rows scaled to unit L2 norm (a zero row stays zero).
pub fn unit_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// The attention map of a feature map `[batch, c, h, w]`: `mean_c(A²)` flattened to
/// `[batch, h·w]`, each row of unit L2 norm.
pub fn attention_map(features: Tensor<4>) -> Tensor<2> {
    let [batch, _, h, w] = features.dims();
    let q: Tensor<2> = features.square().mean_dim(1).reshape([batch, h * w]);
    unit_rows(q)
}

/// Attention transfer between student and teacher feature maps of the same spatial size:
/// `mean((Q_s − Q_t)²)`.
pub fn attention_loss(student: Tensor<4>, teacher: Tensor<4>) -> Tensor<1> {
    (attention_map(student) - attention_map(teacher)).square().mean()
}

/// Symmetric in-batch InfoNCE between embeddings `[batch, d]` (projected already), at
/// temperature `tau`.
pub fn crd_loss(student: Tensor<2>, teacher: Tensor<2>, tau: f32) -> Tensor<1> {
    let [batch, _] = student.dims();
    let (s, t) = (unit_rows(student), unit_rows(teacher));
    let scores = s.matmul(t.transpose()).div_scalar(tau);
    let eye = Tensor::<2>::eye(batch, &scores.device());
    let one_way = |z: Tensor<2>| (log_softmax(z, 1) * eye.clone()).sum_dim(1).mean().neg();
    (one_way(scores.clone()) + one_way(scores.transpose())).div_scalar(2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Device::flex())
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn hint_loss_by_hand() {
        // differences 1, −2, 0, 3 → (1 + 4 + 0 + 9) / 4
        let l = scalar(hint_loss(t2(&[1.0, 0.0, 2.0, 5.0], [2, 2]), t2(&[0.0, 2.0, 2.0, 2.0], [2, 2])));
        assert!((l - 3.5).abs() < 1e-6, "{l}");
    }

    #[test]
    fn attention_loss_by_hand() {
        // One row, 2 channels of 1×2 maps. Student: channels [1, 2] and [3, 0] → mean of squares
        // [(1 + 9)/2, (4 + 0)/2] = [5, 2] → /√29. Teacher: [2, 0] and [0, 0] → [2, 0] → [1, 0].
        let s = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 0.0], [1, 2, 1, 2]), &Device::flex());
        let t = Tensor::<4>::from_data(TensorData::new(vec![2.0f32, 0.0, 0.0, 0.0], [1, 2, 1, 2]), &Device::flex());
        let n = 29f32.sqrt();
        let want = ((5.0 / n - 1.0).powi(2) + (2.0 / n).powi(2)) / 2.0;
        let l = scalar(attention_loss(s.clone(), t));
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
        assert!(scalar(attention_loss(s.clone(), s.mul_scalar(3.0))).abs() < 1e-9, "scale invariant");
    }

    #[test]
    fn crd_loss_by_hand() {
        // Two rows; student embeddings e1, e2; teacher e1, (e1 + e2)/√2 after normalising.
        let s = t2(&[2.0, 0.0, 0.0, 1.0], [2, 2]);
        let t = t2(&[1.0, 0.0, 1.0, 1.0], [2, 2]);
        let tau = 0.5f32;
        let r = std::f32::consts::FRAC_1_SQRT_2;
        // cosine scores S[i][j] = s_i · t_j: [[1, r], [0, r]]
        let sc = [[1.0f32, r], [0.0, r]];
        let nce = |m: [[f32; 2]; 2]| {
            let mut total = 0.0;
            for (i, row) in m.iter().enumerate() {
                let z: Vec<f32> = row.iter().map(|v| v / tau).collect();
                let lse = (z[0].exp() + z[1].exp()).ln();
                total += lse - z[i];
            }
            total / 2.0
        };
        let transposed = [[sc[0][0], sc[1][0]], [sc[0][1], sc[1][1]]];
        let want = (nce(sc) + nce(transposed)) / 2.0;
        let l = scalar(crd_loss(s, t, tau));
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
    }
}
