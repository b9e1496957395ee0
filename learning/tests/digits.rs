//! Real training on the shipped UCI digits data.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::path::PathBuf;

use learning::data::{self, CsvOptions, Preprocess};
use learning::eval;
use learning::train::{self, DistillConfig, DistillSet, EarlyStopping, TrainConfig};
use learning::{Architecture, BackendKind, Model};

fn digits() -> data::Dataset {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/digits/digits.csv.gz");
    let mut d = data::load_csv(&path, &CsvOptions::default()).expect("digits load");
    Preprocess::Scale { factor: 1.0 / 16.0 }.apply(&mut d.features, d.dim).expect("scale");
    d
}

fn mlp() -> Architecture {
    Architecture::Mlp { hidden: vec![128], dropout: 0.0 }
}

#[test]
fn an_mlp_trained_on_digits_passes_90_percent_and_reloads_identically() {
    let d = digits();
    assert_eq!((d.len(), d.dim, d.classes), (1797, 64, 10));
    let s = data::split(d.len(), 360, 0, 1).unwrap();
    let (train_set, test) = (d.subset(&s.private), d.subset(&s.test));
    let mut net = Model::new(&mlp(), 64, 10, BackendKind::Flex, 3).unwrap();
    let cfg = TrainConfig { epochs: 15, learning_rate: 3e-3, ..Default::default() };
    let report = train::fit(&mut net, &train_set, &cfg, 3).unwrap();
    assert!(report.epoch_loss.last().unwrap() < &report.epoch_loss[0], "{:?}", report.epoch_loss);
    let probs = net.soft_labels(&test.features, 1.0, 128).unwrap();
    let m = eval::evaluate(&probs, &test.labels, 10);
    assert!(m.accuracy >= 0.90, "test accuracy {}", m.accuracy);

    let tmp = tempdir("reload");
    let dir = tmp.path();
    let path = dir.join("model");
    let bytes = net.save(&path).unwrap();
    assert!(bytes > 4 * net.num_params() as u64);
    let back = Model::load(&path, BackendKind::Flex).unwrap();
    assert_eq!(back.logits(&test.features, 64).unwrap(), net.logits(&test.features, 64).unwrap());
    net.export_safetensors(&dir.join("model.safetensors")).unwrap();
    // The safetensors file is reproducible byte for byte, 8-byte aligned, and holds every weight.
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    net.export_safetensors(&dir.join("again.safetensors")).unwrap();
    assert!(st == std::fs::read(dir.join("again.safetensors")).unwrap(), "same weights, same bytes");
    let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    assert_eq!(header_len % 8, 0);
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + header_len]).unwrap();
    assert_eq!(header["Mlp.layers.0.weight"]["shape"], serde_json::json!([128, 64]), "PyTorch's [out, in]");
    assert_eq!(st.len() - 8 - header_len, 4 * net.num_params());

    // A loaded network keeps training.
    let mut back = back;
    train::fit(&mut back, &train_set, &TrainConfig { epochs: 1, ..cfg }, 4).unwrap();
    assert_ne!(back.logits(&test.features[..64], 1).unwrap(), net.logits(&test.features[..64], 1).unwrap());

    // Corrupt weights give an error, not a panic.
    std::fs::write(path.with_extension("bpk"), b"not a burnpack").unwrap();
    assert!(Model::load(&path, BackendKind::Flex).is_err());
}

#[test]
fn a_student_distilled_from_soft_labels_learns_the_teacher() {
    let d = digits();
    let s = data::split(d.len(), 300, 700, 2).unwrap();
    let (private, reference, test) = (d.subset(&s.private), d.subset(&s.reference), d.subset(&s.test));
    let mut teacher = Model::new(&mlp(), 64, 10, BackendKind::Flex, 5).unwrap();
    train::fit(&mut teacher, &private, &TrainConfig { epochs: 15, learning_rate: 3e-3, ..Default::default() }, 5)
        .unwrap();
    let t = 3.0;
    let targets = teacher.soft_labels(&reference.features, t, 256).unwrap();
    let small = Architecture::Mlp { hidden: vec![32], dropout: 0.0 };
    let mut student = Model::new(&small, 64, 10, BackendKind::Flex, 6).unwrap();
    let cfg = DistillConfig {
        temperature: t,
        train: TrainConfig { epochs: 40, learning_rate: 3e-3, batch_size: 32, ..Default::default() },
        early_stopping: Some(EarlyStopping { holdout: 0.1, patience: 8 }),
        ..Default::default()
    };
    let set = DistillSet { inputs: &reference.features, targets: &targets, weights: None, labels: None };
    let report = train::distill(&mut student, set, &cfg, 7).unwrap();
    assert!(report.best_agreement.unwrap() > 0.85, "{report:?}");
    let tp = teacher.soft_labels(&test.features, 1.0, 256).unwrap();
    let sp = student.soft_labels(&test.features, 1.0, 256).unwrap();
    assert!(eval::agreement(&tp, &sp, 10) > 0.85);
    assert!(eval::evaluate(&sp, &test.labels, 10).accuracy > 0.85);
    assert!(student.num_params() < teacher.num_params() / 3);

    // Wrong shapes and non-finite targets are refused.
    let bad = DistillSet { inputs: &reference.features, targets: &targets[..10], weights: None, labels: None };
    assert!(train::distill(&mut student, bad, &cfg, 7).is_err());
    let mut nan = targets.clone();
    nan[3] = f32::NAN;
    let bad = DistillSet { inputs: &reference.features, targets: &nan, weights: None, labels: None };
    assert!(train::distill(&mut student, bad, &cfg, 7).is_err());
}

#[test]
fn training_is_deterministic_for_a_seed_on_both_backends() {
    let d = digits().subset(&(0..400).collect::<Vec<_>>());
    for backend in [BackendKind::Ndarray, BackendKind::Flex] {
        let run = |seed| {
            let arch = Architecture::Mlp { hidden: vec![32], dropout: 0.1 };
            let mut net = Model::new(&arch, 64, 10, backend, seed).unwrap();
            train::fit(&mut net, &d, &TrainConfig { epochs: 2, ..Default::default() }, seed).unwrap();
            net.logits(&d.features[..640], 64).unwrap()
        };
        assert_eq!(run(11), run(11), "{backend:?}");
        assert_ne!(run(11), run(12), "{backend:?}");
    }
}

#[test]
fn a_small_cnn_trains_on_8x8_images() {
    let d = digits();
    let s = data::split(d.len(), 300, 0, 3).unwrap();
    let arch = Architecture::Cnn { channels: [8, 16], hidden: 64, dropout: 0.0 };
    let mut net = Model::new(&arch, 64, 10, BackendKind::Flex, 1).unwrap();
    train::fit(
        &mut net,
        &d.subset(&s.private),
        &TrainConfig { epochs: 4, learning_rate: 3e-3, ..Default::default() },
        1,
    )
    .unwrap();
    let test = d.subset(&s.test);
    let acc = eval::evaluate(&net.soft_labels(&test.features, 1.0, 128).unwrap(), &test.labels, 10).accuracy;
    assert!(acc > 0.85, "cnn accuracy {acc}");
    let tmp = tempdir("cnn");
    let dir = tmp.path();
    net.save(&dir.join("cnn")).unwrap();
    let back = Model::load(&dir.join("cnn"), BackendKind::Flex).unwrap();
    assert_eq!(back.predict(&test.features).unwrap(), net.predict(&test.features).unwrap());
}

/// A fresh folder for a test's files, removed when the test ends (also when it fails).
fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("learning-{name}-")).tempdir().unwrap()
}

/// DP-SGD on the digits: at a noise that gives a usable ε the model still learns; at a noise
/// far above it, it does not; and the seeded run repeats exactly.
#[test]
fn dp_sgd_learns_the_digits_at_a_useful_epsilon_and_not_under_overwhelming_noise() {
    use learning::dp::DpSgd;
    use learning::joint::fit_joint;
    use learning::privacy;
    let d = digits();
    let s = data::split(d.len(), 360, 0, 1).unwrap();
    let (train_set, test) = (d.subset(&s.private), d.subset(&s.test));
    let cfg = TrainConfig { epochs: 15, batch_size: 64, learning_rate: 3e-3, ..Default::default() };
    let q = 64.0 / train_set.len() as f64;
    let accuracy = |noise_multiplier: f64| {
        let dp = DpSgd { clip_norm: 1.0, noise_multiplier, sample_rate: q, noise_seed: Some(7) };
        let mut net = Model::new(&mlp(), 64, 10, BackendKind::Flex, 3).unwrap();
        let report = fit_joint(&mut net, &train_set, None, &cfg, Some(&dp), 5).unwrap();
        assert_eq!(report.dp_steps, dp.steps(cfg.epochs));
        let acc = eval::evaluate(&net.soft_labels(&test.features, 1.0, 128).unwrap(), &test.labels, 10).accuracy;
        let eps = privacy::epsilon(&[dp.segment(report.dp_steps)], 1e-5).unwrap().epsilon;
        (acc, eps, net.logits(&test.features[..64], 1).unwrap())
    };
    let (useful, eps, logits) = accuracy(1.0);
    assert!(eps < 8.0, "σ = 1 over {} steps gives ε = {eps}", (1.0 / q).round() * 15.0);
    assert!(useful >= 0.80, "DP-SGD at ε = {eps}: test accuracy {useful}");
    let (drowned, _, _) = accuracy(200.0);
    assert!(drowned < useful - 0.2, "σ = 200 should drown the signal: {drowned} against {useful}");
    assert_eq!(accuracy(1.0).2, logits, "a seeded DP run repeats exactly");
}
