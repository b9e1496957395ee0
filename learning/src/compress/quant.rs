//! Int8 weights: every float parameter quantised on its own (per tensor, symmetric):
//! `scale = max|w| / 127`, `q = round(w / scale)` in `[-127, 127]`, and read back as `q · scale`.
//!
//! The file is safetensors: each parameter `pNNN` (in the order the layers hold them) as `I8`
//! with its shape, its scale as an `F32` scalar `pNNN.scale`, and the model's spec (architecture
//! and shapes) as JSON in the header's `__metadata__`, so that the file alone rebuilds the model.
//! Inference runs in f32 on the dequantised weights (weight-only quantisation: the file is what
//! is smaller, activations stay float), so a model loaded from the file computes exactly what
//! [`quantised`] returns.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde_json::{Map, Value, json};

use crate::fs::atomic_write;
use crate::model::{Model, ModelSpec};
use crate::{BackendKind, Error};

/// One quantised tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Tensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// The int8 values.
    pub values: Vec<i8>,
    /// What one step of the integers is worth.
    pub scale: f32,
}

impl Int8Tensor {
    /// Quantises `values` (per tensor, symmetric).
    pub fn quantise(values: &[f32], shape: Vec<usize>) -> Self {
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let values = values.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8).collect();
        Self { shape, values, scale }
    }

    /// The float values it stands for.
    pub fn dequantise(&self) -> Vec<f32> {
        self.values.iter().map(|&q| q as f32 * self.scale).collect()
    }
}

struct Shapes(Vec<Vec<usize>>);

impl ModuleVisitor for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().shape().to_vec());
    }
}

/// Every float parameter of `model`, quantised.
pub fn quantise(model: &Model) -> Result<Vec<Int8Tensor>, Error> {
    let mut shapes = Shapes(Vec::new());
    model.model.visit(&mut shapes);
    Ok(model.parameters()?.iter().zip(shapes.0).map(|(v, s)| Int8Tensor::quantise(v, s)).collect())
}

/// The model with its weights replaced by their int8 values, dequantised.
pub fn quantised(model: &Model) -> Result<Model, Error> {
    model.with_parameters(quantise(model)?.iter().map(Int8Tensor::dequantise).collect())
}

/// Writes `model`'s int8 weights to `path` (see the module's doc); returns the bytes written.
pub fn save_int8(model: &Model, path: &Path) -> Result<u64, Error> {
    let tensors = quantise(model)?;
    let bad = |e: serde_json::Error| Error::Spec { path: path.to_owned(), source: e };
    let spec = serde_json::to_string(&model.spec()).map_err(bad)?;
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "fedistil-int8", "spec": spec }));
    let mut data = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let start = data.len();
        data.extend(t.values.iter().map(|&q| q as u8));
        header.insert(
            format!("p{i:03}"),
            json!({ "dtype": "I8", "shape": t.shape, "data_offsets": [start, data.len()] }),
        );
        let start = data.len();
        data.extend_from_slice(&t.scale.to_le_bytes());
        header.insert(
            format!("p{i:03}.scale"),
            json!({ "dtype": "F32", "shape": [], "data_offsets": [start, data.len()] }),
        );
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).map_err(bad)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    atomic_write(path, &out)?;
    Ok(out.len() as u64)
}

/// Reads what [`save_int8`] wrote: the model, its weights dequantised.
pub fn load_int8(path: &Path, backend: BackendKind) -> Result<Model, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.to_owned(), source: e })?;
    let bad = |detail: &str| Error::Format { path: path.to_owned(), detail: detail.to_string() };
    let len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(|| bad("no header"))?;
    let end = usize::try_from(len).ok().and_then(|l| l.checked_add(8)).filter(|&e| e <= bytes.len());
    let end = end.ok_or_else(|| bad("header beyond the end"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| Error::Spec { path: path.to_owned(), source: e })?;
    let spec = header.get("__metadata__").and_then(|m| m.get("spec")).and_then(Value::as_str);
    let spec: ModelSpec = serde_json::from_str(spec.ok_or_else(|| bad("no model spec in the metadata"))?)
        .map_err(|e| Error::Spec { path: path.to_owned(), source: e })?;
    let data = &bytes[end..];
    let slice = |name: &str| -> Result<&[u8], Error> {
        let offsets = header.get(name).and_then(|t| t.get("data_offsets")).and_then(Value::as_array);
        let o: Vec<usize> = offsets.into_iter().flatten().filter_map(|v| v.as_u64().map(|v| v as usize)).collect();
        match o[..] {
            [a, b] if a <= b && b <= data.len() => Ok(&data[a..b]),
            _ => Err(bad(&format!("tensor {name}: bad or missing offsets"))),
        }
    };
    let count = header.keys().filter(|k| k.starts_with('p') && !k.ends_with(".scale")).count();
    let mut params = Vec::with_capacity(count);
    for i in 0..count {
        let q = slice(&format!("p{i:03}"))?;
        let s: [u8; 4] = slice(&format!("p{i:03}.scale"))?.try_into().map_err(|_| bad("a scale is not 4 bytes"))?;
        let scale = f32::from_le_bytes(s);
        params.push(q.iter().map(|&b| b as i8 as f32 * scale).collect());
    }
    Model::new(&spec.architecture, spec.input_dim, spec.classes, backend, 0)?.with_parameters(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Architecture;

    #[test]
    fn quantisation_by_hand() {
        let t = Int8Tensor::quantise(&[0.5, -1.27, 0.0, 0.004], vec![2, 2]);
        assert!((t.scale - 0.01).abs() < 1e-7);
        assert_eq!(t.values, vec![50, -127, 0, 0]);
        let back = t.dequantise();
        assert!((back[0] - 0.5).abs() < 1e-6 && (back[1] + 1.27).abs() < 1e-6 && back[3] == 0.0);
        assert_eq!(Int8Tensor::quantise(&[0.0, 0.0], vec![2]).values, vec![0, 0], "all zeros");
    }

    #[test]
    fn the_int8_file_rebuilds_the_quantised_model_and_is_about_a_quarter_of_the_float_one() {
        let arch = Architecture::Cnn { channels: [4, 8], hidden: 64, dropout: 0.0 };
        let m = Model::new(&arch, 256, 10, BackendKind::Flex, 5).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let bytes = save_int8(&m, &tmp.path().join("m.int8.safetensors")).unwrap();
        let loaded = load_int8(&tmp.path().join("m.int8.safetensors"), BackendKind::Flex).unwrap();
        let q = quantised(&m).unwrap();
        assert_eq!(loaded.parameters().unwrap(), q.parameters().unwrap());
        assert_ne!(q.parameters().unwrap(), m.parameters().unwrap());
        let x = vec![0.3f32; 256];
        assert_eq!(loaded.logits(&x, 1).unwrap(), q.logits(&x, 1).unwrap());
        let float = m.to_bytes().unwrap().len() as u64;
        assert!(bytes * 3 < float, "{bytes} int8 bytes against {float}");
        let mut corrupt = std::fs::read(tmp.path().join("m.int8.safetensors")).unwrap();
        corrupt.truncate(corrupt.len() - 3);
        std::fs::write(tmp.path().join("c"), corrupt).unwrap();
        assert!(load_int8(&tmp.path().join("c"), BackendKind::Flex).is_err());
    }
}
