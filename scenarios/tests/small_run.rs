//! A small federation (digits, 4 nodes, 2 rounds) run in-process over real libp2p peers.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod common;

use std::path::PathBuf;

use learning::consensus::Rule;
use scenarios::Scenario;
use scenarios::faults::Attack;
use scenarios::layout::{RunDir, node_name};
use scenarios::outcome::Outcome;
use scenarios::presets::preset;
use scenarios::run::{Results, RunOptions, run};
use scenarios::spec::{Fault, data_dir};
use scenarios::table::Table;
use tempfile::TempDir;

fn small(name: &str) -> Scenario {
    let mut s = preset("quickstart", &data_dir()).unwrap();
    s.name = name.into();
    s.rounds = 2;
    s.split.nodes = 4;
    s.split.reference = 400;
    s.round.samples = 200;
    s.round.deadline_secs = 3.0;
    s
}

/// Runs `s` into a fresh folder; returns its results and the folder, which goes when dropped.
async fn go(s: &Scenario) -> (Results, TempDir) {
    go_in(s, &s.name).await
}

async fn go_in(s: &Scenario, dir_name: &str) -> (Results, TempDir) {
    let dir = common::test_dir("small", dir_name);
    let r = run(s, &RunOptions { out: dir.path().to_owned(), ..RunOptions::default() })
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}", s.name));
    (r, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_writes_every_output_and_repeats_exactly() {
    let s = small("small");
    let (r, tmp) = go(&s).await;
    let dir = tmp.path();
    let run_dir = RunDir::new(dir);
    let global = run_dir.global_model();
    for f in [
        run_dir.config(),
        run_dir.results(),
        run_dir.rounds_csv(),
        run_dir.report(),
        run_dir.federation(),
        global.with_extension("bpk"),
        global.with_extension("safetensors"),
        global.with_extension("onnx"),
        run_dir.metrics(),
        run_dir.node(0).config(),
        run_dir.node(0).state().join("egress.jsonl"),
    ] {
        assert!(f.is_file(), "missing {}", f.display());
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.results()).unwrap()).unwrap();
    for key in [
        "rounds",
        "global_accuracy",
        "ensemble_accuracy",
        "mean_node_accuracy",
        "local_only",
        "centralized",
        "fedavg",
        "public_labels",
        "bytes_total",
        "bytes_per_round",
        "global_model",
        "node_model",
        "federation_seconds",
    ] {
        assert!(!json[key].is_null(), "results.json lacks {key}");
    }
    for key in ["round", "global_accuracy", "participants", "bytes_up", "bytes_down", "fedavg_accuracy", "seconds"] {
        assert!(!json["rounds"][0][key].is_null(), "rounds[0] lacks {key}");
    }
    for key in ["parameters", "bytes", "latency_us_batch1", "latency_us_batch256"] {
        assert!(json["global_model"][key].as_f64().unwrap() > 0.0, "global_model.{key}");
    }
    assert_eq!(r.rounds.len(), 2);
    assert!(r.rounds.iter().all(|x| x.participants.len() == 4));
    // Its table, from results.json alone: one seed's column; a run from the library records no
    // command.
    let table = Table::of(&Outcome::read(&run_dir).unwrap()).markdown();
    let global = format!("| federated distillation: global student | {:.2} |", 100.0 * r.global_accuracy);
    assert!(table.contains("| model | seed 42 | bytes per round |") && table.contains(&global), "{table}");
    assert!(table.contains("commit `unknown`"), "{table}");
    assert!(r.global_accuracy > 0.5, "{}", r.global_accuracy);
    assert!(r.global_accuracy > r.local_only.as_ref().unwrap().mean);
    // Egress ledger: a node sent only hellos, submissions and receipts — never its data.
    let ledger = net::ledger::Ledger::read(&run_dir.node(0).state().join("egress.jsonl")).unwrap();
    let kinds: std::collections::BTreeSet<String> = ledger.iter().map(|e| e.kind.clone()).collect();
    assert!(kinds.iter().all(|k| ["Hello", "Submission", "Receipt"].contains(&k.as_str())), "{kinds:?}");
    assert_eq!(ledger.iter().filter(|e| e.kind == "Submission").count(), 2);

    // Same seed, same numbers (timings aside). This run goes to a relative folder, as the CLI's
    // default `runs/…` does.
    let base = PathBuf::from("../target/tmp");
    std::fs::create_dir_all(&base).unwrap();
    let again_dir = tempfile::Builder::new().prefix("fd-small-again-").tempdir_in(&base).unwrap();
    let rel = base.join(again_dir.path().file_name().unwrap());
    let again = run(&small("small"), &RunOptions { out: rel.clone(), ..RunOptions::default() }).await.unwrap();
    // The config files it wrote run as they are, from any working directory: their paths hold.
    let rel = RunDir::new(rel);
    let n = node::NodeConfig::load(&rel.node(0).config()).unwrap();
    assert!(n.key.is_file() && n.reference.is_file() && n.state_dir.join("model.bpk").is_file(), "{n:?}");
    let a = aggregator::AggregatorConfig::load(&rel.federation()).unwrap();
    assert!(a.key.is_file() && a.reference.path.is_file() && a.output.join("global.bpk").is_file(), "{a:?}");
    assert_eq!(common::figures(&r), common::figures(&again));
    // And the model files byte for byte: every node's model.bpk and the global one (burn's
    // random parameter ids made the node files differ, issue #21 item 5).
    let mut files: Vec<(PathBuf, PathBuf)> =
        (0..4).map(|i| (run_dir.node(i).state().join("model.bpk"), rel.node(i).state().join("model.bpk"))).collect();
    files.push((run_dir.global_model().with_extension("bpk"), rel.global_model().with_extension("bpk")));
    for (a, b) in files {
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{} and {} differ", a.display(), b.display());
    }
}

/// `fd-scenarios run FILE --seeds 0,1` records its command, day and commit in `results.json`,
/// and `fd-scenarios table` makes the table from it alone: each seed's figure in its column as
/// that seed's own run wrote it, and their mean ± std.
#[test]
fn a_run_over_seeds_makes_its_own_table() {
    let tmp = common::test_dir("small", "table");
    let mut s = small("table");
    s.rounds = 1;
    s.baselines = scenarios::spec::Baselines { fedavg: true, ..scenarios::spec::Baselines::NONE };
    let file = tmp.path().join("table.toml");
    std::fs::write(&file, s.to_toml().unwrap()).unwrap();
    let out = RunDir::new(tmp.path().join("out"));
    let fd = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_fd-scenarios")).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let (file, root) = (file.as_os_str(), out.root().as_os_str());
    fd(&["run".as_ref(), file, "--seeds".as_ref(), "0,1".as_ref(), "--out".as_ref(), root, "--quiet".as_ref()]);
    let table = fd(&["table".as_ref(), root, "--markdown".as_ref()]);
    let Outcome::Seeds(summary) = Outcome::read(&out).unwrap() else { panic!("not a multi-seed run") };
    let made = summary.provenance.as_ref().expect("the command line records its provenance");
    assert!(made.command.starts_with("fd-scenarios run ") && made.command.contains("--seeds 0,1"), "{made:?}");
    assert!(!made.commit.is_empty() && made.date.len() == 10, "{made:?}");
    assert!(table.contains(&format!("`{}` on {}, commit `{}`", made.command, made.date, made.commit)), "{table}");
    let seeds: Vec<Results> = [0, 1]
        .iter()
        .map(|&seed| serde_json::from_slice(&std::fs::read(out.seed(seed).results()).unwrap()).unwrap())
        .collect();
    let g = &summary.global_accuracy;
    let row = format!(
        "| federated distillation: global student | {:.2} | {:.2} | {:.2} ± {:.2} |",
        100.0 * seeds[0].global_accuracy,
        100.0 * seeds[1].global_accuracy,
        100.0 * g.mean,
        100.0 * g.std
    );
    assert!(table.contains(&row), "{row}\n{table}");
    assert!(table.contains("| FedAvg, same rounds |") && !table.contains("centralized"), "{table}");
    // Without --markdown, the same figures for a terminal.
    let text = fd(&["table".as_ref(), root]);
    assert!(text.contains(&format!("{:.2} ± {:.2}", 100.0 * g.mean, 100.0 * g.std)), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_node_misses_its_round_and_comes_back() {
    let mut s = small("drop");
    s.rounds = 3;
    s.round.quorum = Some(3);
    // Long enough for the returning node to restart, rejoin and submit on a loaded machine.
    s.round.deadline_secs = 5.0;
    s.baselines = scenarios::spec::Baselines::NONE;
    s.faults = vec![Fault { node: 1, drop_at: Some(2), return_at: Some(3), ..Default::default() }];
    // No node starts with the reference set: each fetches it from the aggregator in chunks.
    s.nodes.copy_reference = false;
    let (r, tmp) = go(&s).await;
    let dir = tmp.path();
    let dir = RunDir::new(dir);
    let reference = std::fs::read(dir.reference()).unwrap();
    for i in 0..4 {
        let fetched = std::fs::read(dir.node(i).reference()).unwrap();
        assert_eq!(fetched, reference, "node {i} fetched the reference set");
    }
    let parts: Vec<&Vec<String>> = r.rounds.iter().map(|x| &x.participants).collect();
    assert!(parts[0].contains(&node_name(1)), "{parts:?}");
    assert!(!parts[1].contains(&node_name(1)), "{parts:?}");
    assert_eq!(parts[1].len(), 3);
    assert!(parts[2].contains(&node_name(1)), "back for round 3: {parts:?}");
}

/// Test accuracy and validation NLL of the global model after the last round of a run.
fn final_quality(r: &Results, dir: &std::path::Path) -> (f32, f32) {
    let metrics = std::fs::read_to_string(RunDir::new(dir).metrics()).unwrap();
    let last: aggregator::RoundMetrics = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    (r.global_accuracy, last.nll.expect("the scenario has a validation set"))
}

/// Two of five nodes attack. The control is the plain mean under the same seed and attack: it
/// is clearly hurt, so the median's holding up is the robust rule's doing, not a weak attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_minorities_are_outvoted_by_robust_consensus() {
    let base = |name: &str, rule: &Rule| {
        let mut s = small(&format!("{name}-{rule:?}"));
        s.split.nodes = 5;
        s.split.partition = learning::data::Partition::Iid;
        s.rounds = 3;
        s.consensus.rule = rule.clone();
        s.baselines = scenarios::spec::Baselines::NONE;
        s
    };
    let quality = |s: Scenario| async move {
        let (r, dir) = go(&s).await;
        final_quality(&r, dir.path())
    };
    let rules = [Rule::Median, Rule::Mean];
    let mut clean = Vec::new();
    for rule in &rules {
        clean.push(quality(base("clean", rule)).await);
    }
    for attack in [Attack::LabelFlip, Attack::Random] {
        // How much the attack costs each rule: (accuracy lost, NLL gained).
        let mut harm = Vec::new();
        for (rule, (clean_acc, clean_nll)) in rules.iter().zip(&clean) {
            let mut s = base(&format!("{attack:?}"), rule);
            s.faults = [0, 3].map(|node| Fault { node, attack, ..Default::default() }).to_vec();
            let (acc, nll) = quality(s).await;
            harm.push((clean_acc - acc, nll - clean_nll));
        }
        let [(median_acc, median_nll), (mean_acc, mean_nll)] = harm[..] else { unreachable!() };
        let figures = format!(
            "{attack:?}: accuracy lost median {median_acc:.3} mean {mean_acc:.3}; NLL gained median {median_nll:.3} mean {mean_nll:.3}"
        );
        // The robust rule is not hurt; the mean is, clearly (the NLL of its student rises by
        // a quarter of a nat or more here, and the median's by under half as much).
        assert!(median_acc <= 0.02, "the median is hurt: {figures}");
        assert!(mean_nll >= 0.15, "the control is not hurt, the attack proves nothing: {figures}");
        assert!(median_nll <= 0.5 * mean_nll, "the median is hurt about as much as the mean: {figures}");
        // Flipped labels also cost the mean's student accuracy; random vectors spread their
        // mass over the classes and leave the honest majority's argmax in place, so only the
        // NLL shows them.
        if attack == Attack::LabelFlip {
            assert!(mean_acc >= 0.03, "the control's accuracy is not hurt: {figures}");
        }
    }
}

/// DP-SGD end to end: a private node pays for every training in its ledger before it runs,
/// spends no more than its budget, and once the budget is spent refuses the next round (the
/// round goes on with the others, over quorum) and digests the last consensus on public rows
/// only. The seeded run repeats exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_spends_within_its_budget_then_refuses_rounds() {
    let mut s = small("private");
    s.rounds = 3;
    s.round.quorum = Some(3);
    // Rounds 1 and 2 close as soon as all four have answered; round 3, which node 0 refuses,
    // closes at the deadline with the other three. Long enough for node 0's DP training on a
    // busy machine.
    s.round.deadline_secs = 8.0;
    // Node 0 plans for one round (and the final training): it trains in rounds 1 and 2, then
    // its budget is spent.
    s.nodes.privacy = Some(scenarios::spec::NodesPrivacy {
        epsilon: 8.0,
        delta: 1e-5,
        clip_norm: 1.0,
        rounds: Some(1),
        nodes: Some(vec![0]),
    });
    let (r, tmp) = go(&s).await;
    let dir = tmp.path();
    let participants: Vec<usize> = r.rounds.iter().map(|x| x.participants.len()).collect();
    assert_eq!(participants, vec![4, 4, 3], "{:?}", r.rounds);
    assert!(!r.rounds[2].participants.contains(&node_name(0)));
    let p = r.privacy.as_ref().expect("privacy results");
    assert_eq!(p.trainings, vec![2, 0, 0, 0], "two trainings paid for, none for the refused round or the final digest");
    assert_eq!(p.budget, vec![Some(8.0), None, None, None]);
    assert!(p.spent[0] <= 8.0 && p.spent[0] > 7.0, "the plan spends the budget, no more: {}", p.spent[0]);
    assert_eq!(p.max_spent, p.spent[0]);
    // The node's own status says the same, from its config file.
    let cfg = node::NodeConfig::load(&RunDir::new(dir).node(0).config()).unwrap();
    let status = node::privacy_status(&cfg).unwrap();
    assert_eq!((status.trainings, status.trainings_left), (2, 0));
    assert!((status.spent - p.spent[0]).abs() < 1e-9);
    // Same seed, same DP noise, same numbers.
    let (again, _) = go_in(&s, "private-again").await;
    assert_eq!(again.privacy, r.privacy);
    assert_eq!(again.node_accuracy, r.node_accuracy);
    assert_eq!(again.global_accuracy, r.global_accuracy);
}

/// Secure aggregation composes with DP-SGD nodes (issue #22): every node trains privately and
/// answers masked; every round completes with all four, each node pays one training a round
/// and its final one, and the seeded run repeats exactly (the masks change, the sum does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_aggregation_composes_with_dp_sgd_nodes() {
    let mut s = small("secure-private");
    s.round.deadline_secs = 8.0;
    s.round.secure_aggregation = scenarios::presets::secure_quickstart().round.secure_aggregation;
    s.nodes.privacy =
        Some(scenarios::spec::NodesPrivacy { epsilon: 8.0, delta: 1e-5, clip_norm: 1.0, rounds: None, nodes: None });
    let (r, _tmp) = go(&s).await;
    let participants: Vec<usize> = r.rounds.iter().map(|x| x.participants.len()).collect();
    assert_eq!(participants, vec![4, 4], "{:?}", r.rounds);
    let p = r.privacy.as_ref().expect("privacy results");
    assert_eq!(p.trainings, vec![3; 4], "one training a round and the final one, each paid once");
    assert!(p.spent.iter().all(|&e| e > 0.0 && e <= 8.0), "{:?}", p.spent);
    let (again, _) = go_in(&s, "secure-private-again").await;
    assert_eq!(again.privacy, r.privacy);
    assert_eq!(again.global_accuracy, r.global_accuracy);
    assert_eq!(again.node_accuracy, r.node_accuracy);
}

/// One roster member tries to take the consensus over, twice, and each attack has a control
/// that shows it biting where it is not stopped.
/// - It flips its labels and claims 2^20 private rows under `weighted_by_samples` (counts
///   reported, not declared). Clipped to the median count, the claim buys nothing over the same
///   liar with an honest count; unclipped (the control), it owns the consensus.
/// - It sends one-hot rows on a wrong class. The median ignores it, and so does the confidence
///   rule with centered clipping; the confidence rule without its share cap (the control) lets
///   it own the consensus. (With the cap alone, and under the plain mean, such a liar still hurts
///   badly at soft temperatures: docs/security.md, "Attacks".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_cannot_take_the_consensus_over() {
    let base = |name: &str, rule: Rule, faults: Vec<Fault>| {
        let mut s = small(name);
        s.split.nodes = 6;
        s.split.partition = learning::data::Partition::Iid;
        s.rounds = 3;
        s.consensus.rule = rule;
        s.nodes.declare_samples = false;
        s.faults = faults;
        s.baselines = scenarios::spec::Baselines::NONE;
        s
    };
    let accuracy = |s: Scenario| async move { go(&s).await.0.global_accuracy };

    let liar = Fault { node: 0, attack: Attack::LabelFlip, ..Default::default() };
    let claims = Fault { claim_samples: Some(1 << 20), ..liar.clone() };
    let clean = accuracy(base("claims-clean", Rule::WeightedBySamples, vec![])).await;
    let equal = accuracy(base("claims-equal", Rule::WeightedBySamples, vec![liar])).await;
    let clipped = accuracy(base("claims-clipped", Rule::WeightedBySamples, vec![claims.clone()])).await;
    let mut control = base("claims-control", Rule::WeightedBySamples, vec![claims]);
    control.round.sample_count_clip = 1e9;
    let control = accuracy(control).await;
    let figures = format!(
        "claims: clean {clean:.3}, liar with its true count {equal:.3}, clipped claim {clipped:.3}, unclipped claim {control:.3}"
    );
    eprintln!("{figures}");
    assert!(clipped >= equal - 0.02, "the clipped claim buys the liar weight: {figures}");
    assert!(control <= clean - 0.3, "the control is not taken over, the attack proves nothing: {figures}");

    let one_hot = vec![Fault { node: 0, attack: Attack::OneHotFlip, ..Default::default() }];
    let clean = accuracy(base("one-hot-clean", Rule::Median, vec![])).await;
    let median = accuracy(base("one-hot-median", Rule::Median, one_hot.clone())).await;
    let clipped = |name: &str, faults: Vec<Fault>| {
        let mut s = base(name, Rule::CONFIDENCE, faults);
        s.consensus.center_clip = Some(2.0);
        s
    };
    let clipped_clean = accuracy(clipped("one-hot-clipped-clean", vec![])).await;
    let clipped = accuracy(clipped("one-hot-clipped", one_hot.clone())).await;
    let control = accuracy(base("one-hot-control", Rule::Confidence { power: 1.0, max_share: 6.0 }, one_hot)).await;
    let figures = format!(
        "one-hot: clean {clean:.3}, median {median:.3}, centered-clipped confidence {clipped:.3} (clean {clipped_clean:.3}), uncapped confidence {control:.3}"
    );
    eprintln!("{figures}");
    assert!(median >= clean - 0.02, "the median is hurt: {figures}");
    assert!(clipped >= clipped_clean - 0.02, "centered clipping lets the liar in: {figures}");
    assert!(control <= clean - 0.3, "the control is not taken over, the attack proves nothing: {figures}");
}

/// Abstention end to end: every node abstains where it is less sure than on the least familiar
/// fifth of its training rows. What the aggregator reports (abstentions, masked samples) is
/// exactly what the nodes' masks say, read from the submissions they recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abstentions_travel_as_masks_and_the_consensus_counts_them() {
    let mut s = small("abstain");
    s.split.partition = learning::data::Partition::Dirichlet { alpha: 0.1 };
    s.baselines = scenarios::spec::Baselines::NONE;
    s.nodes.abstain = Some(learning::abstain::Abstain { quantile: Some(0.2), ..Default::default() });
    let (r, tmp) = go(&s).await;
    let dir = RunDir::new(tmp.path());
    assert!(r.rounds.iter().all(|x| x.participants.len() == 4), "a node that abstains still answers");
    let metrics = std::fs::read_to_string(dir.metrics()).unwrap();
    let last: aggregator::RoundMetrics = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let samples = last.samples;
    let mut counts = vec![0u32; samples];
    let mut abstentions = 0;
    for i in 0..4 {
        let text = std::fs::read_to_string(dir.node(i).state().join("answers.json")).unwrap();
        let answers: node::policy::Answers = serde_json::from_str(&text).unwrap();
        let sub = answers.last.unwrap();
        assert_eq!(sub.round, 2);
        let mask = sub.abstained.expect("an abstaining node sends a mask").to_bools(samples).unwrap();
        abstentions += mask.iter().filter(|a| **a).count() as u64;
        for (c, a) in counts.iter_mut().zip(&mask) {
            *c += u32::from(!a);
        }
    }
    assert!(abstentions > 0, "under α = 0.1 the nodes do not know every sample");
    assert_eq!(last.abstentions, abstentions, "the consensus counts what the masks say");
    assert_eq!(
        last.masked,
        counts.iter().filter(|&&c| c < 3).count(),
        "samples known to fewer than min_count (by default 3) nodes are masked: {counts:?}"
    );
}
