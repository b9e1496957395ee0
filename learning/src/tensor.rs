//! Between plain rows and tensors: rows of a row-major slice as a batch tensor (features, labels,
//! one-hot labels, per-row values), a tensor read back, and the argmax of a row.

use burn::prelude::*;

use crate::Error;

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

/// One-hot rows of the labels of rows `idx`, `[idx.len(), classes]`.
pub(crate) fn one_hot(labels: &[u32], idx: &[usize], classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; idx.len() * classes];
    for (r, &i) in idx.iter().enumerate() {
        v[r * classes + labels[i] as usize] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [idx.len(), classes]), device)
}

/// The values of a tensor, read back from the backend.
pub(crate) fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, Error> {
    t.try_into_vec_as::<f32>().map_err(|source| Error::TensorRead { source })
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
