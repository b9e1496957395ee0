//! The README's walk-through "From your own CSV to a federation", run with the real binaries in
//! the README's order: the operator builds the reference set from a public CSV and writes the
//! federation's folder, three data holders check their CSVs and write their folders, the
//! operator adds their PeerIds to the roster, then the aggregator and the three nodes run as
//! separate processes on 127.0.0.1 until the federation is finished.
//!
//! The data: the UCI digits shipped in `data/`, split by this test into a public CSV and three
//! private CSVs with a header line and a named label column, as a user's files would be.
//! Ports: the README's operator listens on a fixed port; here the aggregator is initialised
//! with `--listen /ip4/127.0.0.1/tcp/0`, reports the port it bound in `--addr-file`, and the
//! test writes that port into each `node.toml` (the one line that names the aggregator), so
//! that parallel test runs cannot collide on a port. Every wait is on a file or an exit
//! status, with a deadline.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use learning::data::{self, CsvOptions};
use scenarios::run::{read_addr_file, sibling_binary};
use scenarios::spec::data_dir;

mod common;
use common::{Procs, wait_until};

const HOLDERS: [&str; 3] = ["alice", "bob", "carol"];

/// Writes the digits as a CSV with a header and the label in a `digit` column: rows `i` with
/// `i % 4 == part` (part 0 the public file), at most `limit` of them.
fn write_csv(path: &Path, d: &data::Dataset, part: usize, limit: usize) {
    let mut text: String = (0..d.dim).map(|j| format!("p{j},")).collect::<String>() + "digit\n";
    for i in (part..d.len()).step_by(4).take(limit) {
        let row: Vec<String> = d.row(i).iter().map(|v| v.to_string()).collect();
        text += &format!("{},{}\n", row.join(","), d.labels[i]);
    }
    std::fs::write(path, text).unwrap();
}

/// Runs a binary to completion in `dir`, failing the test with its output if it fails.
fn run(dir: &Path, bin: &str, args: &[&str]) -> String {
    let out: Output = Command::new(sibling_binary(bin).unwrap()).args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the stdout line `key VALUE`.
fn field(stdout: &str, key: &str) -> String {
    let prefix = format!("{key} ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{stdout}"))
        .trim()
        .to_owned()
}

fn spawn(dir: &Path, bin: &str, args: &[&str], log: &str) -> Child {
    Command::new(sibling_binary(bin).unwrap())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info,libp2p=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap()
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn from_csv_files_to_a_finished_federation_with_the_readme_commands() {
    // Declared before the processes, so that it outlives them (they are killed when dropped).
    let tmp = common::test_dir("walkthrough", "csv");
    let dir = tmp.path();
    let digits = data::load_csv(&data_dir().join("digits/digits.csv.gz"), &CsvOptions::default()).unwrap();
    write_csv(&dir.join("public.csv"), &digits, 0, 300);
    for (k, name) in HOLDERS.iter().enumerate() {
        write_csv(&dir.join(format!("{name}.csv")), &digits, k + 1, 250);
    }

    // The operator.
    let built = run(
        dir,
        "fd-aggregator",
        &[
            "reference",
            "build",
            "--from",
            "public.csv",
            "--label",
            "digit",
            "--preprocess",
            "scale:0.0625",
            "--out",
            "reference.fdref",
        ],
    );
    let sha = field(&built, "sha256");
    assert_eq!(
        sha,
        protocol::ReferenceSetId::digest(&std::fs::read(dir.join("reference.fdref")).unwrap()).to_string(),
        "the printed hash is the file's"
    );
    assert_eq!(
        (field(&built, "rows"), field(&built, "features")),
        ("300".into(), "64".into()),
        "the label column is dropped"
    );
    let init = run(
        dir,
        "fd-aggregator",
        &[
            "init",
            "--dir",
            "operator",
            "--reference",
            "reference.fdref",
            "--federation",
            "walkthrough",
            "--classes",
            "10",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--rounds",
            "2",
            "--samples",
            "150",
        ],
    );
    let address = field(&init, "aggregator");
    assert_eq!(field(&init, "reference_sha256"), sha);

    // Each data holder, then the operator adds the PeerId it sent.
    for name in HOLDERS {
        let out = run(
            dir,
            "fd-node",
            &[
                "init",
                "--dir",
                name,
                "--data",
                &format!("{name}.csv"),
                "--label",
                "digit",
                "--preprocess",
                "scale:0.0625",
                "--federation",
                "walkthrough",
                "--classes",
                "10",
                "--aggregator",
                &address,
                "--reference-sha256",
                &sha,
            ],
        );
        let peer = field(&out, "peer_id");
        run(dir, "fd-aggregator", &["roster", "add", "--config", "operator/federation.toml", name, &peer]);
    }

    // The federation. The aggregator reports the port it bound; each node.toml gets it.
    let addr_file = dir.join("operator").join("addrs");
    let mut procs = Procs(vec![spawn(
        dir,
        "fd-aggregator",
        &["run", "--config", "operator/federation.toml", "--addr-file", addr_file.to_str().unwrap()],
        "aggregator.log",
    )]);
    let mut bound = None;
    wait_until("the aggregator's address", Duration::from_secs(60), || {
        if let Some(status) = procs.0[0].try_wait().unwrap() {
            panic!("the aggregator exited ({status}) before listening:\n{}", log(dir, "aggregator.log"));
        }
        bound = read_addr_file(&addr_file);
        bound.is_some()
    });
    let bound = bound.unwrap()[0].to_string();
    for name in HOLDERS {
        let config = dir.join(name).join("node.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(&address));
        std::fs::write(&config, text.replace(&address, &bound)).unwrap();
        procs.0.push(spawn(dir, "fd-node", &["run", "--config", &format!("{name}/node.toml")], &format!("{name}.log")));
    }
    let names = ["aggregator"].into_iter().chain(HOLDERS);
    let mut statuses = vec![None; 4];
    wait_until("the federation to finish", Duration::from_secs(120), || {
        for (i, c) in procs.0.iter_mut().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = c.try_wait().unwrap();
            }
        }
        // A process that failed ends the wait: its log is the report.
        statuses.iter().all(Option::is_some) || statuses.iter().flatten().any(|s| !s.success())
    });
    for (name, status) in names.zip(&statuses) {
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} ended with {status:?}:\n{}",
            log(dir, &format!("{name}.log"))
        );
    }
    assert!(dir.join("operator/output/global.onnx").is_file(), "no global model");
    let metrics = std::fs::read_to_string(dir.join("operator/output/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "two rounds");
}
