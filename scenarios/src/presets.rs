//! Built-in scenarios, as typed values: one function a preset, variants by struct update from
//! the preset they vary (`Scenario { rounds: 30, ..quickstart() }`). `fd-scenarios show NAME`
//! prints one as TOML, to copy and edit.
//!
//! Data paths start with [`DATA`], the folder of the shipped data sets, which [`preset`]
//! resolves (to [`crate::spec::data_dir`] for the command line).

use std::path::{Path, PathBuf};

use aggregator::config::{Cohort, DEFAULT_SAMPLE_COUNT_CLIP, RoundConfig, SecureAggregation, StudentConfig, Teaching};
use learning::abstain::Abstain;
use learning::consensus::{ConsensusConfig, Rule};
use learning::data::{DataFormat, DataSpec, LabelColumn, Partition, Preprocess};
use learning::joint::Cover;
use learning::train::{DistillConfig, TrainConfig};
use learning::{Architecture, BackendKind};
use node::config::DigestConfig;
use protocol::Encoding;

use crate::faults::Attack;
use crate::spec::{Baselines, Fault, NodesPrivacy, NodesSpec, Scenario, SplitSpec, Transport, Variant};

/// A built-in scenario.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Its name, as `fd-scenarios run NAME` takes it.
    pub name: &'static str,
    /// What it is, in a line.
    pub about: &'static str,
    /// The scenario, its data paths under [`DATA`].
    pub build: fn() -> Scenario,
}

/// Every preset, in the order `fd-scenarios list` shows them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "quickstart",
        about: "UCI digits, 10 nodes, Dirichlet α = 0.5, MLP nodes and student, 10 rounds (seconds)",
        build: quickstart,
    },
    Preset {
        name: "secure-quickstart",
        about: "quickstart with secure aggregation: the aggregator sees only the sum of the nodes' soft labels (SecAgg+)",
        build: secure_quickstart,
    },
    Preset {
        name: "digits-a05",
        about: "quickstart run to convergence: 30 rounds, every node learning every consensus sample each round (digest.cover)",
        build: digits_a05,
    },
    Preset {
        name: "secure-digits-a05",
        about: "digits-a05 with secure aggregation: the accuracy secure aggregation costs at convergence",
        build: secure_digits_a05,
    },
    Preset {
        name: "digits-a01",
        about: "UCI digits, 10 nodes, Dirichlet α = 0.1 (strongly non-IID), 30 rounds",
        build: digits_a01,
    },
    Preset {
        name: "ablation",
        about: "digits-a01 with abstention, and one technique off (or changed) in each variant: what each piece buys",
        build: ablation,
    },
    Preset {
        name: "mnist-dirichlet",
        about: "MNIST, 10 nodes, Dirichlet α = 0.1, 5,000 public samples (1,500 a round), CNN nodes and student, 20 rounds",
        build: mnist_dirichlet,
    },
    Preset {
        name: "mnist-dirichlet-a05", about: "mnist-dirichlet with Dirichlet α = 0.5", build: mnist_dirichlet_a05
    },
    Preset {
        name: "attack-samples",
        about: "quickstart under weighted_by_samples with reported counts: node 0 flips its labels and claims 2^20 samples",
        build: attack_samples,
    },
    Preset {
        name: "attack-samples-control",
        about: "attack-samples without the clip on reported counts (the control)",
        build: attack_samples_control,
    },
    Preset {
        name: "attack-confidence",
        about: "quickstart under the confidence rule with centered clipping: node 0 sends one-hot wrong labels",
        build: attack_confidence,
    },
    Preset {
        name: "attack-confidence-control",
        about: "attack-confidence without centered clipping and the cap on a node's share (the control)",
        build: attack_confidence_control,
    },
    Preset {
        name: "mnist-shards",
        about: "MNIST, 10 nodes holding 2 classes each, MLP, 20 rounds",
        build: mnist_shards,
    },
    Preset {
        name: "breast-cancer",
        about: "UCI breast cancer, 5 nodes, Dirichlet α = 1, standardised features, small MLP",
        build: breast_cancer,
    },
    Preset {
        name: "scale-100",
        about: "MNIST, 100 nodes, IID, small MLP: how the system scales on one machine",
        build: scale_100,
    },
    Preset {
        name: "scale-1000",
        about: "MNIST, 1,000 nodes, IID, small MLP, a cohort of 100 a round (FedAvg with the same cohorts): a simulator's scale",
        build: scale_1000,
    },
    Preset {
        name: "privacy-digits",
        about: "quickstart over 30 rounds (digits-a05 without digest.cover) with record-level DP-SGD, ε = 4 per node (sweep: --epsilons 1,2,4,8,inf)",
        build: privacy_digits,
    },
    Preset {
        name: "digits-compress",
        about: "quickstart with a CNN global student, compressed after the federation by every method into a CNN of half its channels, an MLP a tenth its size, and born-again CNNs",
        build: digits_compress,
    },
    Preset {
        name: "mnist-compress",
        about: "mnist-dirichlet, its global CNN compressed after the federation by every method into a CNN of half its channels and an MLP a tenth its size",
        build: mnist_compress,
    },
    Preset {
        name: "privacy-mnist",
        about: "MNIST, Dirichlet α = 0.5, MLP nodes with record-level DP-SGD, ε = 4 per node (sweep: --epsilons 1,2,4,8,inf)",
        build: privacy_mnist,
    },
];

/// The start of every preset's data paths: the folder of the shipped data sets.
pub const DATA: &str = "{data}";

/// The preset `name`, its data paths resolved against `data_dir`.
pub fn preset(name: &str, data_dir: &Path) -> Option<Scenario> {
    let p = PRESETS.iter().find(|p| p.name == name)?;
    Some(resolve((p.build)(), data_dir))
}

/// `s` with its data paths under [`DATA`] moved under `data_dir`.
pub fn resolve(mut s: Scenario, data_dir: &Path) -> Scenario {
    for path in [&mut s.data.path, &mut s.data.images, &mut s.data.labels].into_iter().flatten() {
        if let Ok(rest) = path.strip_prefix(DATA) {
            *path = data_dir.join(rest);
        }
    }
    s
}

/// A data set shipped in the repository's `data/`.
fn shipped(file: &str) -> PathBuf {
    Path::new(DATA).join(file)
}

/// Training settings: `epochs` passes at `learning_rate` in batches of `batch_size`, with Adam.
fn train(epochs: usize, learning_rate: f64, batch_size: usize) -> TrainConfig {
    TrainConfig { epochs, learning_rate, batch_size, ..TrainConfig::default() }
}

/// Distillation at `temperature` with these training settings.
fn distill(temperature: f32, train: TrainConfig) -> DistillConfig {
    DistillConfig { temperature, train, ..DistillConfig::default() }
}

/// An MLP with these hidden widths, no dropout.
fn mlp(hidden: &[usize]) -> Architecture {
    Architecture::Mlp { hidden: hidden.to_vec(), dropout: 0.0 }
}

/// The MNIST presets' CNN: 8 and 16 channels, 64 hidden units, no dropout.
fn cnn() -> Architecture {
    Architecture::Cnn { channels: [8, 16], hidden: 64, dropout: 0.0 }
}

/// Nodes learning from the consensus: the joint objective, with `epochs`, `learning_rate` and
/// `batch_size` for the sequential mode.
fn digest(epochs: usize, learning_rate: f64, batch_size: usize) -> DigestConfig {
    DigestConfig { enabled: true, epochs, learning_rate, batch_size, ..DigestConfig::default() }
}

/// Nodes with this architecture and training, the runner declaring their row counts and giving
/// each a copy of the reference set.
fn nodes(architecture: Architecture, train: TrainConfig, digest: DigestConfig) -> NodesSpec {
    NodesSpec {
        architecture,
        overrides: Vec::new(),
        train,
        digest,
        copy_reference: true,
        declare_samples: true,
        privacy: None,
        abstain: None,
    }
}

/// Rounds of `samples` reference samples at `temperature`, every node needed, the default clip
/// on reported counts.
fn round(samples: u32, temperature: f32, encoding: Encoding, deadline_secs: f64) -> RoundConfig {
    RoundConfig {
        samples,
        temperature,
        encoding,
        compact_consensus: false,
        consensus_encoding: None,
        consensus_samples: None,
        quorum: None,
        deadline_secs,
        sample_count_clip: DEFAULT_SAMPLE_COUNT_CLIP,
        secure_aggregation: None,
        cohort: None,
    }
}

/// `rule`, without sharpening, masking or clipping.
fn consensus(rule: Rule) -> ConsensusConfig {
    ConsensusConfig { rule, ..ConsensusConfig::default() }
}

/// `[nodes.privacy]` of the privacy presets: ε = 4, δ = 10⁻⁵ per node, clipping norm 1.
fn privacy() -> NodesPrivacy {
    NodesPrivacy { epsilon: 4.0, delta: 1e-5, clip_norm: 1.0, rounds: None, nodes: None }
}

/// MNIST's training images, scaled to [0, 1].
fn mnist() -> DataSpec {
    DataSpec {
        format: DataFormat::Idx,
        path: None,
        label: None,
        skip_lines: 0,
        header: false,
        delimiter: ',',
        images: Some(shipped("mnist/train-images-idx3-ubyte.gz")),
        labels: Some(shipped("mnist/train-labels-idx1-ubyte.gz")),
        rows: None,
        classes: None,
        // 1/255, as a scenario file's 0.00392156862745098 reads into an f32.
        preprocess: Preprocess::Scale { factor: (1.0_f64 / 255.0) as f32 },
    }
}

/// MNIST's split: 5,000 test rows, 5,000 reference rows, at least 100 private rows a node.
fn mnist_split(nodes: usize, partition: Partition) -> SplitSpec {
    SplitSpec { test: 5000, reference: 5000, nodes, partition, min_size: 100 }
}

/// [`quickstart`] with secure aggregation at its defaults (threshold, degree, scale 255).
pub fn secure_quickstart() -> Scenario {
    let mut s = quickstart();
    s.name = "secure-quickstart".into();
    s.round.secure_aggregation =
        Some(SecureAggregation { threshold: None, degree: None, scale: 255, stage_secs: 10.0 });
    s
}

/// [`digits_a05`] with secure aggregation at its defaults.
pub fn secure_digits_a05() -> Scenario {
    let mut s = digits_a05();
    s.name = "secure-digits-a05".into();
    s.round.secure_aggregation = secure_quickstart().round.secure_aggregation;
    s
}

/// UCI digits, 10 nodes, Dirichlet α = 0.5, MLP nodes and student, 10 rounds.
pub fn quickstart() -> Scenario {
    Scenario {
        name: "quickstart".into(),
        seed: 42,
        transport: Transport::InProcess,
        backend: BackendKind::Flex,
        rounds: 10,
        data: DataSpec {
            format: DataFormat::Csv,
            path: Some(shipped("digits/digits.csv.gz")),
            label: Some(LabelColumn::Index(-1)),
            skip_lines: 0,
            header: false,
            delimiter: ',',
            images: None,
            labels: None,
            rows: None,
            classes: None,
            preprocess: Preprocess::Scale { factor: 0.0625 },
        },
        split: SplitSpec {
            test: 360,
            reference: 500,
            nodes: 10,
            min_size: 20,
            partition: Partition::Dirichlet { alpha: 0.5 },
        },
        nodes: nodes(mlp(&[128]), train(5, 0.003, 32), digest(2, 0.001, 64)),
        student: StudentConfig {
            architecture: mlp(&[64]),
            warm_start: true,
            distill: distill(3.0, train(20, 0.003, 32)),
            teaching: Teaching::Consensus,
        },
        round: round(250, 3.0, Encoding::Q8, 20.0),
        consensus: consensus(Rule::Mean),
        faults: Vec::new(),
        baselines: Baselines::default(),
        ablation: Vec::new(),
        compress: Vec::new(),
    }
}

/// quickstart run to convergence: 30 rounds, every node learning every consensus sample each
/// round.
pub fn digits_a05() -> Scenario {
    let q = quickstart();
    Scenario {
        name: "digits-a05".into(),
        rounds: 30,
        nodes: NodesSpec { digest: DigestConfig { cover: Cover::Both, ..q.nodes.digest }, ..q.nodes },
        ..q
    }
}

/// UCI digits, Dirichlet α = 0.1 (strongly non-IID), 30 rounds.
pub fn digits_a01() -> Scenario {
    let q = quickstart();
    Scenario {
        name: "digits-a01".into(),
        rounds: 30,
        split: SplitSpec { partition: Partition::Dirichlet { alpha: 0.1 }, ..q.split },
        ..q
    }
}

/// An `[[ablation]]` variant.
fn variant(name: &str, about: &str, set: toml::Table, unset: &[&str]) -> Variant {
    Variant { name: name.into(), about: about.into(), set, unset: unset.iter().map(|k| (*k).to_owned()).collect() }
}

/// digits-a01 with abstention (the full run), and each variant turning one technique off or
/// swapping it for its alternative.
pub fn ablation() -> Scenario {
    let a = digits_a01();
    Scenario {
        name: "ablation".into(),
        nodes: NodesSpec { abstain: Some(Abstain { quantile: Some(0.05), ..Abstain::default() }), ..a.nodes },
        ablation: vec![
            variant(
                "sequential",
                "nodes digest the consensus, then train on private rows (FedMD), instead of the joint objective",
                toml::toml! { "nodes.digest.mode" = "sequential" },
                &[],
            ),
            variant(
                "no-digest",
                "nodes never learn from the consensus",
                toml::toml! { "nodes.digest.enabled" = false },
                &[],
            ),
            variant("no-abstention", "every node labels every sample", toml::Table::new(), &["nodes.abstain"]),
            variant(
                "student-teaches",
                "nodes learn from the global student's labels instead of the consensus",
                toml::toml! { "student.teaching" = { kind = "student" } },
                &[],
            ),
            variant(
                "confidence",
                "the consensus weighs nodes by confidence instead of the plain mean",
                toml::toml! { "consensus.rule" = { kind = "confidence" } },
                &[],
            ),
            variant(
                "cold-student",
                "the global student starts from scratch every round instead of from last round's",
                toml::toml! { "student.warm_start" = false },
                &[],
            ),
            variant(
                "early-stopping",
                "server distillation stops early by agreement on a held-out 10 % of the round's samples",
                toml::toml! { "student.distill.early_stopping" = { holdout = 0.1, patience = 3 } },
                &[],
            ),
        ],
        ..a
    }
}

/// MNIST, 10 nodes, Dirichlet α = 0.1, 5,000 public samples (1,500 a round), CNN nodes and
/// student, 20 rounds.
pub fn mnist_dirichlet() -> Scenario {
    Scenario {
        name: "mnist-dirichlet".into(),
        seed: 7,
        transport: Transport::InProcess,
        backend: BackendKind::Flex,
        rounds: 20,
        data: mnist(),
        split: mnist_split(10, Partition::Dirichlet { alpha: 0.1 }),
        nodes: nodes(cnn(), train(1, 0.002, 64), DigestConfig { cover: Cover::Both, ..digest(1, 0.001, 64) }),
        student: StudentConfig {
            architecture: cnn(),
            warm_start: true,
            distill: distill(3.0, train(5, 0.002, 64)),
            teaching: Teaching::Consensus,
        },
        round: round(1500, 3.0, Encoding::Q8, 120.0),
        consensus: consensus(Rule::CONFIDENCE),
        faults: Vec::new(),
        baselines: Baselines::default(),
        ablation: Vec::new(),
        compress: Vec::new(),
    }
}

/// mnist-dirichlet with Dirichlet α = 0.5.
pub fn mnist_dirichlet_a05() -> Scenario {
    let m = mnist_dirichlet();
    Scenario {
        name: "mnist-dirichlet-a05".into(),
        split: SplitSpec { partition: Partition::Dirichlet { alpha: 0.5 }, ..m.split },
        ..m
    }
}

/// quickstart under `weighted_by_samples` with counts the nodes report: node 0 flips its labels
/// and claims 2^20 private rows. One roster member tries to take the consensus over; each attack
/// has a control with the hardening off, so that the attack is seen to bite where it is not
/// stopped.
pub fn attack_samples() -> Scenario {
    let q = quickstart();
    Scenario {
        name: "attack-samples".into(),
        nodes: NodesSpec { declare_samples: false, ..q.nodes },
        consensus: consensus(Rule::WeightedBySamples),
        faults: vec![Fault { node: 0, attack: Attack::LabelFlip, claim_samples: Some(1 << 20), ..Fault::default() }],
        ..q
    }
}

/// attack-samples without the clip on reported counts.
pub fn attack_samples_control() -> Scenario {
    let a = attack_samples();
    Scenario { name: "attack-samples-control".into(), round: RoundConfig { sample_count_clip: 1e9, ..a.round }, ..a }
}

/// quickstart under the confidence rule with centered clipping: node 0 sends one-hot rows on a
/// wrong class.
pub fn attack_confidence() -> Scenario {
    Scenario {
        name: "attack-confidence".into(),
        consensus: ConsensusConfig { center_clip: Some(2.0), ..consensus(Rule::CONFIDENCE) },
        faults: vec![Fault { node: 0, attack: Attack::OneHotFlip, ..Fault::default() }],
        ..quickstart()
    }
}

/// attack-confidence without centered clipping and with no effective cap on a node's share.
pub fn attack_confidence_control() -> Scenario {
    Scenario {
        name: "attack-confidence-control".into(),
        consensus: consensus(Rule::Confidence { power: 1.0, max_share: 10.0 }),
        ..attack_confidence()
    }
}

/// MNIST, 10 nodes holding 2 classes each, MLP nodes and student, 20 rounds.
pub fn mnist_shards() -> Scenario {
    Scenario {
        name: "mnist-shards".into(),
        seed: 11,
        transport: Transport::InProcess,
        backend: BackendKind::Flex,
        rounds: 20,
        data: mnist(),
        split: mnist_split(10, Partition::Classes { k: 2 }),
        nodes: nodes(mlp(&[256]), train(1, 0.002, 64), digest(1, 0.001, 64)),
        student: StudentConfig {
            architecture: mlp(&[256]),
            warm_start: true,
            distill: distill(3.0, train(5, 0.002, 64)),
            teaching: Teaching::Consensus,
        },
        round: round(2000, 3.0, Encoding::Q8, 120.0),
        consensus: consensus(Rule::CONFIDENCE),
        faults: Vec::new(),
        baselines: Baselines::default(),
        ablation: Vec::new(),
        compress: Vec::new(),
    }
}

/// UCI breast cancer, 5 nodes, Dirichlet α = 1, features standardised on the reference rows,
/// small MLPs, 5 rounds.
pub fn breast_cancer() -> Scenario {
    Scenario {
        name: "breast-cancer".into(),
        seed: 3,
        transport: Transport::InProcess,
        backend: BackendKind::Flex,
        rounds: 5,
        data: DataSpec {
            format: DataFormat::Csv,
            path: Some(shipped("breast-cancer/breast_cancer.csv")),
            label: Some(LabelColumn::Index(-1)),
            skip_lines: 1,
            header: false,
            delimiter: ',',
            images: None,
            labels: None,
            rows: None,
            classes: None,
            // Empty statistics: the run computes them from the reference rows.
            preprocess: Preprocess::Standardise { mean: Vec::new(), std: Vec::new() },
        },
        split: SplitSpec {
            test: 114,
            reference: 150,
            nodes: 5,
            min_size: 10,
            partition: Partition::Dirichlet { alpha: 1.0 },
        },
        nodes: nodes(mlp(&[32]), train(10, 0.003, 16), DigestConfig::default()),
        student: StudentConfig {
            architecture: mlp(&[16]),
            warm_start: true,
            distill: distill(2.0, train(30, 0.003, 16)),
            teaching: Teaching::Consensus,
        },
        round: round(100, 2.0, Encoding::F16, 20.0),
        consensus: ConsensusConfig::default(),
        faults: Vec::new(),
        baselines: Baselines::default(),
        ablation: Vec::new(),
        compress: Vec::new(),
    }
}

/// MNIST, 100 nodes, IID, small MLPs, 3 rounds, a quorum of 90: how the system scales on one
/// machine.
pub fn scale_100() -> Scenario {
    Scenario {
        name: "scale-100".into(),
        seed: 100,
        transport: Transport::InProcess,
        backend: BackendKind::Flex,
        rounds: 3,
        data: mnist(),
        split: mnist_split(100, Partition::Iid),
        nodes: nodes(mlp(&[64]), train(1, 0.003, 64), DigestConfig { enabled: false, ..DigestConfig::default() }),
        student: StudentConfig {
            architecture: mlp(&[128]),
            warm_start: true,
            distill: distill(3.0, train(3, 0.002, 64)),
            teaching: Teaching::Consensus,
        },
        round: RoundConfig { quorum: Some(90), ..round(1000, 3.0, Encoding::Q8, 300.0) },
        consensus: ConsensusConfig::default(),
        faults: Vec::new(),
        baselines: Baselines { local: false, centralized: true, fedavg: false, public_labels: false },
        ablation: Vec::new(),
        compress: Vec::new(),
    }
}

/// MNIST, 1,000 nodes, IID (50 private rows each), the small MLP nodes and student of
/// [`scale_100`], 20 rounds of a cohort of 100 drawn from the seed (each node asked twice on
/// average), and FedAvg with the same cohorts: how far one machine goes, against Flower's simulation of 1,000
/// virtual clients.
pub fn scale_1000() -> Scenario {
    let s = scale_100();
    Scenario {
        name: "scale-1000".into(),
        seed: 1000,
        rounds: 20,
        split: SplitSpec { min_size: 40, ..mnist_split(1000, Partition::Iid) },
        // Five passes over 50 rows in batches of 16: 20 steps a round, as Flower's clients take.
        nodes: NodesSpec { train: train(5, 0.003, 16), ..s.nodes },
        // One pass over the pool a round: the pool grows by 1,000 rows a round, and three passes
        // over 20,000 rows would make the late rounds the student's.
        student: StudentConfig { distill: distill(3.0, train(1, 0.002, 64)), ..s.student },
        round: RoundConfig { quorum: None, cohort: Some(Cohort::Count(100)), ..s.round },
        baselines: Baselines { local: false, centralized: false, fedavg: true, public_labels: false },
        ..s
    }
}

/// quickstart over 30 rounds with record-level DP-SGD, ε = 4 per node. It is digits-a05 without
/// `digest.cover` (which does not apply under DP-SGD; without DP, the sweep's last point, it is
/// left out as it was measured).
pub fn privacy_digits() -> Scenario {
    let q = quickstart();
    Scenario {
        name: "privacy-digits".into(),
        rounds: 30,
        nodes: NodesSpec { privacy: Some(privacy()), ..q.nodes },
        ..q
    }
}

/// mnist-dirichlet-a05 with MLP nodes under record-level DP-SGD, ε = 4 per node.
pub fn privacy_mnist() -> Scenario {
    let m = mnist_dirichlet_a05();
    Scenario {
        name: "privacy-mnist".into(),
        nodes: NodesSpec {
            // MLP nodes with larger batches (256, at learning rate 0.01) and two epochs a round:
            // under DP-SGD a step's noise shrinks with the batch, and the nodes must be worth
            // listening to from round 1. DP-FedAvg trains with the same settings.
            architecture: mlp(&[128]),
            train: train(2, 0.01, 256),
            // A light pull towards the consensus: the nodes' DP-SGD noise is their own, and
            // models pulled hard together lose what averaging ten of them buys. (`cover` does not
            // apply under DP-SGD; without DP, the sweep's last point, it is left out as it was
            // measured.)
            digest: DigestConfig { weight: 0.1, ..digest(1, 0.001, 64) },
            privacy: Some(privacy()),
            ..m.nodes
        },
        // An MLP student (noise-free, trained on public rows only) and 2,000 samples a round:
        // the nodes' MLPs make FedAvg's rounds 8.2 MB, so the bytes stay at 1/16.
        student: StudentConfig { architecture: mlp(&[256]), ..m.student },
        round: RoundConfig { samples: 2000, ..m.round },
        // The centralized and public-label baselines do not depend on ε: mnist-dirichlet-a05
        // has them for the same split.
        baselines: Baselines { centralized: false, public_labels: false, ..Baselines::default() },
        ..m
    }
}

/// The compression jobs of the `*-compress` presets: every method but born-again into each
/// smaller student (with int8 weights), then born-again generations of the teacher's size and
/// the no-distillation baseline of that size.
fn compress_jobs(students: &[Architecture], epochs: usize, batch_size: usize) -> Vec<learning::compress::Job> {
    use learning::compress::{CompressConfig, Job, Method};
    let settings = CompressConfig { int8: true, train: train(epochs, 0.003, batch_size), ..CompressConfig::default() };
    let mut jobs: Vec<Job> = students
        .iter()
        .map(|a| Job {
            student: Some(a.clone()),
            methods: Method::ALL
                .into_iter()
                .filter(|m| *m != Method::BornAgain)
                .filter(|m| *m != Method::Attention || matches!(a, Architecture::Cnn { .. }))
                .collect(),
            settings: settings.clone(),
        })
        .collect();
    // Born-again beside the same architecture without distillation: what the generations add.
    jobs.push(Job { student: None, methods: vec![Method::Baseline, Method::BornAgain], settings });
    jobs
}

/// quickstart with a CNN global student (8×8 digits: 8 and 16 channels, 64 hidden, 6,058
/// parameters), compressed into a CNN of half its channels (4, 8, 32 hidden) and an MLP a tenth
/// its size (64-8-10, 610 parameters).
pub fn digits_compress() -> Scenario {
    let q = quickstart();
    Scenario {
        name: "digits-compress".into(),
        student: StudentConfig { architecture: cnn(), ..q.student },
        compress: compress_jobs(&[Architecture::Cnn { channels: [4, 8], hidden: 32, dropout: 0.0 }, mlp(&[8])], 30, 32),
        ..q
    }
}

/// mnist-dirichlet, its global CNN (8 and 16 channels, 64 hidden) compressed into a CNN of half
/// its channels (4, 8, 32 hidden) and an MLP a tenth its size (784-6-10).
pub fn mnist_compress() -> Scenario {
    let m = mnist_dirichlet();
    Scenario {
        name: "mnist-compress".into(),
        compress: compress_jobs(&[Architecture::Cnn { channels: [4, 8], hidden: 32, dropout: 0.0 }, mlp(&[6])], 10, 64),
        ..m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_named_as_listed() {
        for p in PRESETS {
            let s = preset(p.name, Path::new("/data")).unwrap_or_else(|| panic!("{}", p.name));
            assert_eq!(s.name, p.name);
            s.validate().unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
        }
        assert!(preset("no-such-preset", Path::new("/data")).is_none());
    }

    #[test]
    fn data_paths_move_under_the_data_folder() {
        let s = preset("quickstart", Path::new("/x/data")).unwrap();
        assert_eq!(s.data.path.as_deref(), Some(Path::new("/x/data/digits/digits.csv.gz")));
        let m = preset("mnist-shards", Path::new("/x/data")).unwrap();
        assert_eq!(m.data.images.as_deref(), Some(Path::new("/x/data/mnist/train-images-idx3-ubyte.gz")));
        assert_eq!(m.data.labels.as_deref(), Some(Path::new("/x/data/mnist/train-labels-idx1-ubyte.gz")));
    }
}
