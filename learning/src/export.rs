//! Export of a [`Model`] for other frameworks: safetensors (the weights in PyTorch's layout) and
//! ONNX (graph and weights). Files are written atomically.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};

use crate::Error;
use crate::arch::{Cnn, Layers, Mlp};
use crate::fs::atomic_write;
use crate::model::Model;

impl Model {
    /// Writes the weights as safetensors. Tensors are named by field path (`Mlp.layers.0.weight`, `Cnn.conv1.weight`, …).
    /// Linear weights are stored in PyTorch's `[out, in]` layout (burn keeps `[in, out]` in
    /// memory), so the file loads into an equivalent `torch.nn.Linear` as it is.
    pub fn export_safetensors(&self, path: &Path) -> Result<(), Error> {
        let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(burn::store::BurnToPyTorchAdapter);
        self.model.valid().save_into(&mut store).map_err(|source| Error::Safetensors { source })?;
        let bytes = store.get_bytes().map_err(|source| Error::Safetensors { source })?;
        atomic_write(path, &canonical_safetensors(&bytes)?)
    }

    /// Exports the model as ONNX (operator set 18, weights embedded) with burn-onnx, and writes
    /// it atomically to `path`. Returns the bytes written.
    ///
    /// The graph has one float32 input with a dynamic `batch` axis and returns the logits
    /// `[batch, classes]` (no softmax, as [`Model::logits`]); dropout is off, as in inference.
    /// An MLP takes rows `[batch, input_dim]`. A CNN takes images in PyTorch's NCHW layout,
    /// `[batch, 1, side, side]`: the same values as a row, reshaped.
    pub fn export_onnx(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let bytes = self.onnx_bytes()?;
        atomic_write(path, &bytes)?;
        Ok(bytes)
    }

    /// The ONNX model of [`Model::export_onnx`], in memory.
    pub fn onnx_bytes(&self) -> Result<Vec<u8>, Error> {
        use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};
        let device = self.backend.device();
        let exporter = OnnxExporter::new();
        // Two traces with different batch sizes tell the exporter which axis is the batch.
        let onnx = match self.model.valid() {
            Layers::Mlp(m) => {
                let rows = |n: usize| Tensor::<2>::zeros([n, self.input_dim], &device);
                let specs = [InputSpec::new([AxisSpec::dynamic("batch"), AxisSpec::Static])];
                exporter.export_dynamic(&m, rows(2), rows(3), &specs, |m: &Mlp, x| m.forward(x))
            }
            Layers::Cnn(m) => {
                // Rows are reshaped to images outside the graph: burn-onnx cannot yet tell the
                // static axes of [batch, 784] → [batch, 1, 28, 28] apart from the dynamic one.
                let side = m.side();
                let images = |n: usize| Tensor::<4>::zeros([n, 1, side, side], &device);
                let specs = [InputSpec::new([
                    AxisSpec::dynamic("batch"),
                    AxisSpec::Static,
                    AxisSpec::Static,
                    AxisSpec::Static,
                ])];
                exporter.export_dynamic(&m, images(2), images(3), &specs, |m: &Cnn, x| m.forward_images(x))
            }
        };
        let onnx = onnx
            .map_err(|source| Error::Onnx { model: self.architecture.label(self.input_dim, self.classes), source })?;
        Ok(onnx.into_bytes())
    }
}

/// Rewrites a safetensors file's JSON header with its keys sorted (burn writes its metadata map
/// in hash order), so that the same weights always give the same bytes. Tensor data is untouched:
/// its offsets are relative to the end of the header.
fn canonical_safetensors(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let bad = |detail| Error::SafetensorsHeader { detail, source: None };
    let json_err = |detail| move |e| Error::SafetensorsHeader { detail, source: Some(e) };
    let len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(|| bad("no header"))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("header beyond the end"))?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..end]).map_err(json_err("not JSON"))?;
    // serde_json's map is ordered by key: writing it back sorts every object.
    let mut json = serde_json::to_vec(&header).map_err(json_err("cannot write it back"))?;
    // The format pads the header with spaces so that tensor data starts 8-byte aligned.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - end);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}
