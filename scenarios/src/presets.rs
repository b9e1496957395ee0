//! Built-in scenarios. `fd-scenarios show NAME` prints one as TOML to copy and edit.

/// Names and one-line descriptions.
pub const PRESETS: &[(&str, &str)] = &[
    ("quickstart", "UCI digits, 10 nodes, Dirichlet α = 0.5, MLP nodes and student, 10 rounds (seconds)"),
    (
        "digits-a05",
        "quickstart run to convergence: 30 rounds, every node learning every consensus sample each round (digest.cover)",
    ),
    ("digits-a01", "UCI digits, 10 nodes, Dirichlet α = 0.1 (strongly non-IID), 30 rounds"),
    (
        "ablation",
        "digits-a01 with abstention, and one technique off (or changed) in each variant: what each piece buys",
    ),
    (
        "mnist-dirichlet",
        "MNIST, 10 nodes, Dirichlet α = 0.1, 5,000 public samples (1,500 a round), CNN nodes and student, 20 rounds",
    ),
    ("mnist-dirichlet-a05", "mnist-dirichlet with Dirichlet α = 0.5"),
    (
        "attack-samples",
        "quickstart under weighted_by_samples with reported counts: node 0 flips its labels and claims 2^20 samples",
    ),
    ("attack-samples-control", "attack-samples without the clip on reported counts (the control)"),
    (
        "attack-confidence",
        "quickstart under the confidence rule with centered clipping: node 0 sends one-hot wrong labels",
    ),
    (
        "attack-confidence-control",
        "attack-confidence without centered clipping and the cap on a node's share (the control)",
    ),
    ("mnist-shards", "MNIST, 10 nodes holding 2 classes each, MLP, 20 rounds"),
    ("breast-cancer", "UCI breast cancer, 5 nodes, Dirichlet α = 1, standardised features, small MLP"),
    ("scale-100", "MNIST, 100 nodes, IID, small MLP: how the system scales on one machine"),
    ("privacy-digits", "digits-a05 with record-level DP-SGD, ε = 4 per node (sweep: --epsilons 1,2,4,8,inf)"),
    (
        "privacy-mnist",
        "MNIST, Dirichlet α = 0.5, MLP nodes with record-level DP-SGD, ε = 4 per node (sweep: --epsilons 1,2,4,8,inf)",
    ),
];

/// `[nodes.privacy]` of the privacy presets: ε = 4, δ = 10⁻⁵ per node, clipping norm 1.
const PRIVACY: &str = "\n[nodes.privacy]\nepsilon = 4.0\ndelta = 1e-5\nclip_norm = 1.0\n";

const QUICKSTART: &str = r#"name = "quickstart"
seed = 42
transport = "in-process"
backend = "flex"
rounds = 10

[data]
format = "csv"
path = "{data}/digits/digits.csv.gz"
label = -1
preprocess = { kind = "scale", factor = 0.0625 }

[split]
test = 360
reference = 500
nodes = 10
min_size = 20
partition = { kind = "dirichlet", alpha = 0.5 }

[nodes]
architecture = { kind = "mlp", hidden = [128] }
train = { epochs = 5, learning_rate = 0.003, batch_size = 32 }
digest = { enabled = true, epochs = 2, learning_rate = 0.001, batch_size = 64 }

[student]
architecture = { kind = "mlp", hidden = [64] }
warm_start = true
distill = { temperature = 3.0, train = { epochs = 20, learning_rate = 0.003, batch_size = 32 } }

[round]
samples = 250
temperature = 3.0
encoding = "q8"
deadline_secs = 20

[consensus]
rule = { kind = "mean" }
"#;

const MNIST_DIRICHLET: &str = r#"name = "mnist-dirichlet"
seed = 7
transport = "in-process"
backend = "flex"
rounds = 20

[data]
format = "idx"
images = "{data}/mnist/train-images-idx3-ubyte.gz"
labels = "{data}/mnist/train-labels-idx1-ubyte.gz"
preprocess = { kind = "scale", factor = 0.00392156862745098 }

[split]
test = 5000
reference = 5000
nodes = 10
min_size = 100
partition = { kind = "dirichlet", alpha = 0.1 }

[nodes]
architecture = { kind = "cnn", channels = [8, 16], hidden = 64 }
train = { epochs = 1, learning_rate = 0.002, batch_size = 64 }
digest = { enabled = true, epochs = 1, learning_rate = 0.001, batch_size = 64, cover = "both" }

[student]
architecture = { kind = "cnn", channels = [8, 16], hidden = 64 }
warm_start = true
distill = { temperature = 3.0, train = { epochs = 5, learning_rate = 0.002, batch_size = 64 } }

[round]
samples = 1500
temperature = 3.0
encoding = "q8"
deadline_secs = 120

[consensus]
rule = { kind = "confidence" }
"#;

const MNIST_SHARDS: &str = r#"name = "mnist-shards"
seed = 11
transport = "in-process"
backend = "flex"
rounds = 20

[data]
format = "idx"
images = "{data}/mnist/train-images-idx3-ubyte.gz"
labels = "{data}/mnist/train-labels-idx1-ubyte.gz"
preprocess = { kind = "scale", factor = 0.00392156862745098 }

[split]
test = 5000
reference = 5000
nodes = 10
min_size = 100
partition = { kind = "classes", k = 2 }

[nodes]
architecture = { kind = "mlp", hidden = [256] }
train = { epochs = 1, learning_rate = 0.002, batch_size = 64 }
digest = { enabled = true, epochs = 1, learning_rate = 0.001, batch_size = 64 }

[student]
architecture = { kind = "mlp", hidden = [256] }
distill = { temperature = 3.0, train = { epochs = 5, learning_rate = 0.002, batch_size = 64 } }

[round]
samples = 2000
temperature = 3.0
encoding = "q8"
deadline_secs = 120

[consensus]
rule = { kind = "confidence" }
"#;

const BREAST_CANCER: &str = r#"name = "breast-cancer"
seed = 3
transport = "in-process"
backend = "flex"
rounds = 5

[data]
format = "csv"
path = "{data}/breast-cancer/breast_cancer.csv"
label = -1
skip_lines = 1
preprocess = { kind = "standardise", mean = [], std = [] }

[split]
test = 114
reference = 150
nodes = 5
min_size = 10
partition = { kind = "dirichlet", alpha = 1.0 }

[nodes]
architecture = { kind = "mlp", hidden = [32] }
train = { epochs = 10, learning_rate = 0.003, batch_size = 16 }

[student]
architecture = { kind = "mlp", hidden = [16] }
distill = { temperature = 2.0, train = { epochs = 30, learning_rate = 0.003, batch_size = 16 } }

[round]
samples = 100
temperature = 2.0
encoding = "f16"
deadline_secs = 20
"#;

const SCALE_100: &str = r#"name = "scale-100"
seed = 100
transport = "in-process"
backend = "flex"
rounds = 3

[data]
format = "idx"
images = "{data}/mnist/train-images-idx3-ubyte.gz"
labels = "{data}/mnist/train-labels-idx1-ubyte.gz"
preprocess = { kind = "scale", factor = 0.00392156862745098 }

[split]
test = 5000
reference = 5000
nodes = 100
min_size = 100
partition = { kind = "iid" }

[nodes]
architecture = { kind = "mlp", hidden = [64] }
train = { epochs = 1, learning_rate = 0.003, batch_size = 64 }
digest = { enabled = false }

[student]
architecture = { kind = "mlp", hidden = [128] }
distill = { temperature = 3.0, train = { epochs = 3, learning_rate = 0.002, batch_size = 64 } }

[round]
samples = 1000
temperature = 3.0
encoding = "q8"
quorum = 90
deadline_secs = 300

[baselines]
local = false
centralized = true
fedavg = false
public_labels = false
"#;

/// Node 0 of an attack preset: flipped labels and a claimed 2^20 private rows.
const ATTACKER_CLAIMS: &str = r#"
[[faults]]
node = 0
attack = "label_flip"
claim_samples = 1048576
"#;

/// The full run of the `ablation` preset adds abstention to `digits-a01`; each variant turns one
/// technique off or swaps it for its alternative.
const ABLATION: &str = r#"
[nodes.abstain]
quantile = 0.05

[[ablation]]
name = "sequential"
about = "nodes digest the consensus, then train on private rows (FedMD), instead of the joint objective"
set = { "nodes.digest.mode" = "sequential" }

[[ablation]]
name = "no-digest"
about = "nodes never learn from the consensus"
set = { "nodes.digest.enabled" = false }

[[ablation]]
name = "no-abstention"
about = "every node labels every sample"
unset = ["nodes.abstain"]

[[ablation]]
name = "student-teaches"
about = "nodes learn from the global student's labels instead of the consensus"
set = { "student.teaching" = { kind = "student" } }

[[ablation]]
name = "confidence"
about = "the consensus weighs nodes by confidence instead of the plain mean"
set = { "consensus.rule" = { kind = "confidence" } }

[[ablation]]
name = "cold-student"
about = "the global student starts from scratch every round instead of from last round's"
set = { "student.warm_start" = false }

[[ablation]]
name = "early-stopping"
about = "server distillation stops early by agreement on a held-out 10 % of the round's samples"
set = { "student.distill.early_stopping" = { holdout = 0.1, patience = 3 } }
"#;

/// Node 0 of an attack preset: one-hot rows on the wrong class.
const ATTACKER_ONE_HOT: &str = r#"
[[faults]]
node = 0
attack = "one_hot_flip"
"#;

/// The TOML of a preset, with `{data}` pointing at `data_dir`.
pub fn preset(name: &str, data_dir: &std::path::Path) -> Option<String> {
    // Variants: a base preset with its name and a few settings replaced.
    // An edit that matches nothing is a preset that silently is not what its comment says:
    // every preset is built by `every_preset_parses_and_validates`, so this fails there.
    let variant = |base: &str, edits: &[(&str, &str)]| {
        edits.iter().fold(base.to_owned(), |t, (from, to)| {
            assert!(t.contains(from), "preset edit `{from}` matches nothing");
            t.replacen(from, to, 1)
        })
    };
    let text = match name {
        "quickstart" => QUICKSTART.to_owned(),
        "digits-a05" => variant(
            QUICKSTART,
            &[
                (r#"name = "quickstart""#, r#"name = "digits-a05""#),
                ("rounds = 10", "rounds = 30"),
                (
                    "digest = { enabled = true, epochs = 2, learning_rate = 0.001, batch_size = 64 }",
                    r#"digest = { enabled = true, epochs = 2, learning_rate = 0.001, batch_size = 64, cover = "both" }"#,
                ),
            ],
        ),
        "digits-a01" => variant(
            QUICKSTART,
            &[
                (r#"name = "quickstart""#, r#"name = "digits-a01""#),
                ("rounds = 10", "rounds = 30"),
                ("alpha = 0.5", "alpha = 0.1"),
            ],
        ),
        "ablation" => {
            variant(
                QUICKSTART,
                &[
                    (r#"name = "quickstart""#, r#"name = "ablation""#),
                    ("rounds = 10", "rounds = 30"),
                    ("alpha = 0.5", "alpha = 0.1"),
                ],
            ) + ABLATION
        }
        "mnist-dirichlet" => MNIST_DIRICHLET.to_owned(),
        "mnist-dirichlet-a05" => variant(
            MNIST_DIRICHLET,
            &[(r#"name = "mnist-dirichlet""#, r#"name = "mnist-dirichlet-a05""#), ("alpha = 0.1", "alpha = 0.5")],
        ),
        "mnist-shards" => MNIST_SHARDS.to_owned(),
        // One roster member tries to take the consensus over; each attack has a control with
        // the hardening off, so that the attack is seen to bite where it is not stopped.
        "attack-samples" | "attack-samples-control" => {
            let mut edits = vec![
                (r#"name = "quickstart""#, format!(r#"name = "{name}""#)),
                (r#"rule = { kind = "mean" }"#, r#"rule = { kind = "weighted_by_samples" }"#.to_owned()),
                ("batch_size = 64 }\n", "batch_size = 64 }\ndeclare_samples = false\n".to_owned()),
            ];
            if name.ends_with("-control") {
                edits.push(("deadline_secs = 20", "deadline_secs = 20\nsample_count_clip = 1e9".to_owned()));
            }
            let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
            variant(QUICKSTART, &edits) + ATTACKER_CLAIMS
        }
        "attack-confidence" | "attack-confidence-control" => {
            let rule = if name.ends_with("-control") {
                r#"rule = { kind = "confidence", max_share = 10.0 }"#
            } else {
                "rule = { kind = \"confidence\" }\ncenter_clip = 2.0"
            };
            let renamed = format!(r#"name = "{name}""#);
            variant(QUICKSTART, &[(r#"name = "quickstart""#, &renamed), (r#"rule = { kind = "mean" }"#, rule)])
                + ATTACKER_ONE_HOT
        }
        "breast-cancer" => BREAST_CANCER.to_owned(),
        "scale-100" => SCALE_100.to_owned(),
        "privacy-digits" => {
            variant(
                QUICKSTART,
                &[(r#"name = "quickstart""#, r#"name = "privacy-digits""#), ("rounds = 10", "rounds = 30")],
            ) + PRIVACY
        }
        "privacy-mnist" => {
            // MLP nodes with larger batches (256, at learning rate 0.01) and two epochs a round:
            // under DP-SGD a step's noise shrinks with the batch, and the nodes must be worth
            // listening to from round 1. DP-FedAvg trains with the same settings.
            let text = variant(
                MNIST_DIRICHLET,
                &[
                    (r#"name = "mnist-dirichlet""#, r#"name = "privacy-mnist""#),
                    ("alpha = 0.1", "alpha = 0.5"),
                    (
                        r#"architecture = { kind = "cnn", channels = [8, 16], hidden = 64 }"#,
                        r#"architecture = { kind = "mlp", hidden = [128] }"#,
                    ),
                    (
                        "train = { epochs = 1, learning_rate = 0.002, batch_size = 64 }",
                        "train = { epochs = 2, learning_rate = 0.01, batch_size = 256 }",
                    ),
                    // A light pull towards the consensus: the nodes' DP-SGD noise is their own,
                    // and models pulled hard together lose what averaging ten of them buys.
                    // (`cover` does not apply under DP-SGD; without DP, the sweep's last point, it
                    // is left out as it was measured.)
                    (
                        r#"learning_rate = 0.001, batch_size = 64, cover = "both" }"#,
                        "learning_rate = 0.001, batch_size = 64, weight = 0.1 }",
                    ),
                    // An MLP student (noise-free, trained on public rows only) and 2,000 samples a
                    // round: the nodes' MLPs make FedAvg's rounds 8.2 MB, so the bytes stay at 1/16.
                    (
                        r#"architecture = { kind = "cnn", channels = [8, 16], hidden = 64 }"#,
                        r#"architecture = { kind = "mlp", hidden = [256] }"#,
                    ),
                    ("samples = 1500", "samples = 2000"),
                ],
            );
            // The centralized and public-label baselines do not depend on ε: mnist-dirichlet-a05
            // has them for the same split.
            text + PRIVACY + "\n[baselines]\ncentralized = false\npublic_labels = false\n"
        }
        _ => return None,
    };
    Some(text.replace("{data}", &data_dir.display().to_string()))
}
