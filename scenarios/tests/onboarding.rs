//! The operator's and the data holders' first commands, run as the real binaries print and take
//! them: a reference set of mixed feature scales is standardised by `fd-aggregator reference
//! build`, `fd-aggregator init` prints the `fd-node init` line with the same statistics, and the
//! node's config holds exactly them. No federation runs here.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Output;

use common::{command, test_dir};
use learning::data::Preprocess;

fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    let out = command(bin, None).args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Rows of three features of scales 1, 1000 and 0.001 and a label.
fn mixed_scales(rows: usize, offset: usize) -> String {
    let mut csv = String::from("a,b,c,y\n");
    for i in offset..offset + rows {
        let x = (i % 7) as f32;
        csv.push_str(&format!("{},{},{},{}\n", x, 1000.0 * ((i * 3) % 5) as f32, 0.001 * x * x, i % 3));
    }
    csv
}

#[test]
fn standardisation_built_on_the_reference_set_reaches_the_node_config_through_the_printed_commands() {
    let tmp = test_dir("onboarding", "standardise");
    let d = tmp.path();
    std::fs::write(d.join("public.csv"), mixed_scales(40, 0)).unwrap();
    std::fs::write(d.join("alice.csv"), mixed_scales(30, 100)).unwrap();

    let raw =
        run("fd-aggregator", &["reference", "build", "--from", "public.csv", "--label", "y", "--out", "raw.fdref"], d);
    let warning = String::from_utf8_lossy(&raw.stderr);
    assert!(
        warning.contains("feature scales differ widely") && warning.contains("--preprocess standardise"),
        "{warning}"
    );

    let built = run(
        "fd-aggregator",
        &[
            "reference",
            "build",
            "--from",
            "public.csv",
            "--label",
            "y",
            "--preprocess",
            "standardise",
            "--out",
            "reference.fdref",
        ],
        d,
    );
    assert!(!String::from_utf8_lossy(&built.stderr).contains("warning"), "standardised: no warning");
    assert!(d.join("reference.preprocess.toml").exists());

    let init = run(
        "fd-aggregator",
        &["init", "--dir", "operator", "--reference", "reference.fdref", "--federation", "f", "--classes", "3"],
        d,
    );
    let stdout = String::from_utf8(init.stdout).unwrap();
    let line = stdout.lines().find(|l| l.trim_start().starts_with("fd-node init")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let flag = |name: &str| words[words.iter().position(|w| *w == name).unwrap() + 1];
    let preprocess = flag("--preprocess");
    assert!(preprocess.starts_with("standardise:"), "{line}");

    let (aggregator, sha, size) = (flag("--aggregator"), flag("--reference-sha256"), flag("--reference-bytes"));
    let node = run(
        "fd-node",
        &[
            "init",
            "--dir",
            "alice",
            "--data",
            "alice.csv",
            "--label",
            "y",
            "--preprocess",
            preprocess,
            "--federation",
            "f",
            "--classes",
            "3",
            "--aggregator",
            aggregator,
            "--reference-sha256",
            sha,
            "--reference-bytes",
            size,
        ],
        d,
    );
    let printed = String::from_utf8(node.stdout).unwrap();
    assert!(printed.contains("fd-aggregator roster add --config federation.toml NAME 12D3KooW"), "{printed}");
    let cfg = node::NodeConfig::load(&d.join("alice/node.toml")).unwrap();
    let reference_bytes = std::fs::metadata(d.join("operator/reference.fdref")).unwrap().len();
    assert_eq!(cfg.policy.reference_bytes, Some(reference_bytes), "the size printed is the set's");
    let pinned = std::fs::read_to_string(d.join("operator/reference.preprocess.toml")).unwrap();
    let Preprocess::Standardise { mean, std } = &cfg.data.preprocess else { panic!("{:?}", cfg.data.preprocess) };
    assert_eq!(mean.len(), 3);
    assert!(std[1] > 100.0 * std[0] && std[0] > 100.0 * std[2], "the reference set's own scales: {std:?}");
    let table: toml::Value = toml::from_str(&pinned).unwrap();
    let from_file: Preprocess = table["preprocess"].clone().try_into().unwrap();
    assert_eq!(cfg.data.preprocess, from_file, "the node applies bit for bit what is pinned beside the set");
}
