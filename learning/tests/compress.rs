//! Compression end to end on the shipped UCI digits: a small CNN teacher trained on private
//! rows, compressed on public rows into a smaller CNN and an MLP, every student exported and
//! measured.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;

use learning::compress::{self, CompressConfig, Job, Method, PublicSet, TestSet};
use learning::data::{self, CsvOptions, Preprocess};
use learning::train::{self, TrainConfig};
use learning::{Architecture, BackendKind, Model};

fn digits() -> data::Dataset {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/digits/digits.csv.gz");
    let mut d = data::load_csv(&path, &CsvOptions::default()).unwrap();
    Preprocess::Scale { factor: 1.0 / 16.0 }.apply(&mut d.features, d.dim).unwrap();
    d
}

#[test]
fn a_digits_teacher_compressed_by_every_method_writes_its_exports_and_its_table() {
    let d = digits();
    let s = data::split(d.len(), 360, 400, 5).unwrap();
    let (private, public, test) = (d.subset(&s.private), d.subset(&s.reference), d.subset(&s.test));
    let cnn = Architecture::Cnn { channels: [8, 16], hidden: 64, dropout: 0.0 };
    let mut teacher = Model::new(&cnn, 64, 10, BackendKind::Flex, 1).unwrap();
    train::fit(&mut teacher, &private, &TrainConfig { epochs: 8, learning_rate: 3e-3, ..Default::default() }, 1)
        .unwrap();
    let consensus = (0..public.len() as u32)
        .step_by(2)
        .map(|r| (r, teacher.soft_labels(&public.features[r as usize * 64..(r as usize + 1) * 64], 3.0, 1).unwrap()))
        .collect();
    let set = PublicSet { inputs: &public.features, labels: Some(&public.labels), consensus: Some(&consensus) };
    let test_set = TestSet { inputs: &test.features, labels: &test.labels };
    let settings = CompressConfig {
        int8: true,
        generations: 2,
        train: TrainConfig { epochs: 12, learning_rate: 3e-3, batch_size: 32, ..Default::default() },
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();

    let half = Job {
        student: Some(Architecture::Cnn { channels: [4, 8], hidden: 32, dropout: 0.0 }),
        methods: Method::ALL.into_iter().filter(|m| *m != Method::BornAgain).collect(),
        settings: settings.clone(),
    };
    let done = compress::compress(&teacher, &half, &set, test_set, &tmp.path().join("half"), 3).unwrap();
    // The teacher, then each of 7 methods and its int8 version.
    assert_eq!(done.rows.len(), 1 + 7 * 2);
    assert_eq!(done.rows[0].name, "teacher");
    for folder in &done.folders {
        for file in ["student.bpk", "student.json", "student.safetensors", "student.onnx", "student.int8.safetensors"] {
            assert!(folder.join(file).is_file(), "{} lacks {file}", folder.display());
        }
        assert!(Model::load(&folder.join("student"), BackendKind::Flex).is_ok());
    }
    let teacher_row = &done.rows[0];
    for r in &done.rows[1..] {
        assert!(r.parameters < teacher_row.parameters && r.bytes < teacher_row.bytes, "{r:?}");
        assert!(r.accuracy > 0.3, "{} learnt little: {}", r.name, r.accuracy);
    }
    let int8 = done.rows.iter().find(|r| r.name == "kd int8").unwrap();
    let float = done.rows.iter().find(|r| r.name == "kd").unwrap();
    assert!(int8.bytes * 2 < float.bytes, "int8 {} against {} bytes", int8.bytes, float.bytes);
    let table = compress::measure::markdown(&done.rows, &compress::EnergyMeter::new(None));
    println!("{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 1 + done.rows.len());

    // An MLP student: attention transfer is refused before anything is trained or written.
    let mlp = Job {
        student: Some(Architecture::Mlp { hidden: vec![8], dropout: 0.0 }),
        methods: vec![Method::Kd, Method::Attention],
        settings: settings.clone(),
    };
    assert!(compress::compress(&teacher, &mlp, &set, test_set, &tmp.path().join("mlp"), 3).is_err());
    assert!(!tmp.path().join("mlp").exists());

    // Born-again: two generations and their ensemble, of the teacher's size.
    let again =
        Job { student: None, methods: vec![Method::BornAgain], settings: CompressConfig { int8: false, ..settings } };
    let done = compress::compress(&teacher, &again, &set, test_set, &tmp.path().join("again"), 3).unwrap();
    let names: Vec<&str> = done.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["teacher", "born-again g1", "born-again g2", "born-again ensemble"]);
    assert_eq!(done.rows[3].parameters, 2 * done.rows[0].parameters);
}
