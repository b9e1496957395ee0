//! ONNX export, checked outside burn: `onnx.checker` accepts the file and onnxruntime reproduces
//! burn's logits, for both architectures, at several batch sizes. The MLP's safetensors export
//! is also run in numpy with PyTorch's `[out, in]` weight layout.
//!
//! The check needs Python with `onnx`, `onnxruntime` and `safetensors` (versions in
//! `tests/python/requirements.txt`). It uses `$FD_PYTHON` if set (`.ci/run` sets it), otherwise
//! a virtual environment in `target/python`, which it creates from PyPI on first use: without
//! `FD_PYTHON`, this test needs network access. It never skips: when it cannot check, it fails
//! and says why.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use learning::data::{self, CsvOptions, Preprocess};
use learning::train::{self, TrainConfig};
use learning::{Architecture, BackendKind, Model};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Exports `net` into a scratch folder with `export` (which returns the file it wrote), writes
/// `inputs` and burn's logits for them, and runs `tests/python/<script>` on the three files.
/// Returns the script's output; a failing script fails the test.
fn python_check(
    net: &Model,
    inputs: &[f32],
    name: &str,
    script: &str,
    export: impl FnOnce(&Path) -> PathBuf,
) -> String {
    let tmp = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    let model = export(dir);
    write_f32(&dir.join("inputs.f32"), inputs);
    write_f32(&dir.join("expected.f32"), &net.logits(inputs, 64).unwrap());
    let out = Command::new(support::python("import onnx, onnxruntime, safetensors"))
        .arg(manifest().join("tests/python").join(script))
        .args([model, dir.join("inputs.f32"), dir.join("expected.f32")])
        .args([net.input_dim.to_string(), net.classes.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name}: {script} failed\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Exports `net` as ONNX, then has onnxruntime run it on `inputs`; returns the checker's JSON report.
fn check(net: &Model, inputs: &[f32], name: &str) -> serde_json::Value {
    let stdout = python_check(net, inputs, &format!("onnx-{name}"), "onnx_check.py", |dir| {
        let model = dir.join("model.onnx");
        let bytes = net.export_onnx(&model).unwrap();
        assert_eq!(std::fs::read(&model).unwrap(), bytes, "export_onnx returns what it wrote");
        assert!(
            bytes.len() > 4 * net.num_params(),
            "weights are embedded: {} bytes for {} parameters",
            bytes.len(),
            net.num_params()
        );
        model
    });
    serde_json::from_str(stdout.trim()).unwrap()
}

fn assert_matches(report: &serde_json::Value, logits: &[f32], name: &str) {
    let scale = logits.iter().fold(1f32, |m, v| m.max(v.abs())) as f64;
    let diff = report["max_abs_diff"].as_f64().unwrap();
    println!("{name}: {report}");
    assert_eq!(report["ok"], true, "{name}: {report}");
    assert_eq!(report["opset"], 18, "{name}: {report}");
    assert!(diff <= 1e-5 * scale, "{name}: onnxruntime differs from burn by {diff} (logits up to {scale})");
}

#[test]
#[ignore = "long tier (Python with onnx, onnxruntime): cargo test --workspace --release -- --ignored"]
fn a_trained_mlp_exports_to_onnx_that_onnxruntime_reproduces() {
    let path = manifest().join("../data/digits/digits.csv.gz");
    let mut d = data::load_csv(&path, &CsvOptions::default()).unwrap();
    Preprocess::Scale { factor: 1.0 / 16.0 }.apply(&mut d.features, d.dim).unwrap();
    let s = data::split(d.len(), 100, 0, 7).unwrap();
    let (train_set, test) = (d.subset(&s.private), d.subset(&s.test));
    // Dropout is in the architecture: the export must leave it out, as inference does.
    let arch = Architecture::Mlp { hidden: vec![32, 16], dropout: 0.2 };
    let mut net = Model::new(&arch, 64, 10, BackendKind::Flex, 11).unwrap();
    train::fit(&mut net, &train_set, &TrainConfig { epochs: 3, ..Default::default() }, 11).unwrap();

    let report = check(&net, &test.features, "mlp");
    assert_eq!(report["input_shape"], serde_json::json!(["batch", "64"]));

    // The safetensors export runs as PyTorch's nn.Linear layers would ([out, in] weights).
    let diff = python_check(&net, &test.features, "safetensors-mlp", "mlp_safetensors_check.py", |dir| {
        let model = dir.join("model.safetensors");
        net.export_safetensors(&model).unwrap();
        model
    });
    println!("mlp safetensors: max |numpy − burn| = {}", diff.trim());
    assert_eq!(report["output_shape"][1], "10");
    assert_matches(&report, &net.logits(&test.features, 64).unwrap(), "mlp");
}

#[test]
#[ignore = "long tier (Python with onnx, onnxruntime): cargo test --workspace --release -- --ignored"]
fn a_cnn_exports_to_onnx_that_onnxruntime_reproduces() {
    let dir = manifest().join("../data/mnist");
    let mut d = data::load_idx(&dir.join("t10k-images-idx3-ubyte.gz"), &dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    Preprocess::Scale { factor: 1.0 / 255.0 }.apply(&mut d.features, d.dim).unwrap();
    let d = d.subset(&(0..300).collect::<Vec<_>>());
    let (train_set, test) = (d.subset(&(0..200).collect::<Vec<_>>()), d.subset(&(200..300).collect::<Vec<_>>()));
    let arch = Architecture::Cnn { channels: [4, 8], hidden: 32, dropout: 0.25 };
    let mut net = Model::new(&arch, 784, 10, BackendKind::Flex, 12).unwrap();
    train::fit(&mut net, &train_set, &TrainConfig { epochs: 1, ..Default::default() }, 12).unwrap();

    let report = check(&net, &test.features, "cnn");
    let ops: Vec<&str> = report["nodes"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(ops.contains(&"Conv") && ops.contains(&"MaxPool"), "{ops:?}");
    assert_eq!(report["input_shape"], serde_json::json!(["batch", "1", "28", "28"]));
    assert_matches(&report, &net.logits(&test.features, 64).unwrap(), "cnn");
}
