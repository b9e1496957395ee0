//! A federation of 20 nodes as a Slurm job (issue #23): the aggregator a job step, the nodes a job
//! array, on a real Slurm cluster; its figures equal those of the same scenario run as processes
//! on this machine, both through `fd-scenarios run --transport slurm` (which submits the job and
//! waits for it) and through the steps docs/slurm.md gives for a real cluster
//! (`fd-scenarios export slurm`, `sbatch --wait`, `fd-scenarios collect`).
//!
//! Long tier (`--ignored`), as root: where no Slurm controller answers, the test starts a cluster
//! on this machine with `.ci/slurm-cluster` (munged, slurmctld, and two slurmd, each in a network
//! namespace of its own, so that the nodes on one dial the aggregator on the other), which fails,
//! and so does the test, where Slurm or munge is not installed (`.ci/run` installs Debian's
//! packages).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use scenarios::Scenario;
use scenarios::layout::RunDir;
use scenarios::run::{Results, RunOptions, run, sibling_binary};
use scenarios::spec::{Baselines, Transport};

/// Starts the cluster of `.ci/slurm-cluster` unless a controller answers already.
fn cluster() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/slurm-cluster");
    let out = std::process::Command::new(&script).output().unwrap();
    assert!(out.status.success(), "{} failed: {}", script.display(), text(&out));
}

fn text_of(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `cmd`, failing the test (with its output) unless it succeeds.
async fn ok(cmd: &mut tokio::process::Command) -> Output {
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, text(&out));
    out
}

/// Runs `s` over `transport` into `dir`.
async fn go(s: &Scenario, transport: Transport, dir: &Path) -> Results {
    let s = Scenario { transport, ..s.clone() };
    run(&s, &RunOptions { out: dir.to_owned(), ..RunOptions::default() })
        .await
        .unwrap_or_else(|e| panic!("{transport:?}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: a Slurm cluster (.ci/slurm-cluster starts one), 3 federations of 20 nodes"]
async fn twenty_nodes_as_a_slurm_job_give_the_figures_of_twenty_processes() {
    cluster();
    let s = Scenario { baselines: Baselines::NONE, ..common::scenario("slurm-20", 20, 4) };
    let processes = common::test_dir("slurm", "processes");
    let expected = go(&s, Transport::Processes, processes.path()).await;
    assert!(expected.rounds.iter().all(|r| r.participants.len() == 20), "{:?}", expected.rounds);

    // Submitted and waited for by the run itself.
    let job = common::test_dir("slurm", "job");
    let got = go(&s, Transport::Slurm, job.path()).await;
    let dir = RunDir::new(job.path());
    for f in [dir.slurm_federation(), dir.slurm_nodes(), dir.aggregator_log(), dir.node_log(0), dir.node_log(19)] {
        assert!(f.is_file(), "missing {}", f.display());
    }
    // The aggregator was a step of the federation's job, and the nodes its job array.
    let out = std::fs::read_to_string(dir.slurm_log()).unwrap();
    assert!(out.contains("the nodes dial /ip4/") && out.contains("the nodes: job array "), "{out}");
    // On a cluster of several hosts (.ci/slurm-cluster's two slurmd, each in a network namespace
    // of its own), the array's tasks ran on more than one: nodes dialled the aggregator across
    // hosts.
    let array = out.split("the nodes: job array ").nth(1).unwrap().split_whitespace().next().unwrap();
    let tasks = ok(tokio::process::Command::new("scontrol").args(["show", "job", "--oneliner", array])).await;
    let hosts: BTreeSet<&str> =
        text_of(&tasks.stdout).split_whitespace().filter_map(|f| f.strip_prefix("NodeList=")).collect();
    let cluster = ok(tokio::process::Command::new("sinfo").args(["-h", "-N", "-o", "%N"])).await;
    let cluster: BTreeSet<&str> = text_of(&cluster.stdout).split_whitespace().collect();
    eprintln!("the nodes ran on {hosts:?}, of the cluster's {cluster:?}");
    assert!(hosts.len() >= cluster.len().min(2), "the nodes ran on {hosts:?}, of {cluster:?}");
    assert_eq!(common::figures(&got), common::figures(&expected));

    // As docs/slurm.md runs it on a cluster: export, submit, collect.
    let exported = common::test_dir("slurm", "exported");
    let file = exported.path().join("scenario.toml");
    std::fs::write(&file, s.to_toml().unwrap()).unwrap();
    let out_dir = exported.path().join("run");
    let scenarios = sibling_binary("fd-scenarios").unwrap();
    let export =
        ok(tokio::process::Command::new(&scenarios).args(["export", "slurm"]).arg(&file).arg("--out").arg(&out_dir))
            .await;
    let script = RunDir::new(&out_dir).slurm_federation();
    assert!(String::from_utf8_lossy(&export.stdout).contains(&format!("sbatch {}", script.display())), "{export:?}");
    ok(tokio::process::Command::new("sbatch").arg("--wait").arg(&script)).await;
    ok(tokio::process::Command::new(&scenarios).arg("collect").arg(&out_dir)).await;
    let collected: Results = serde_json::from_slice(&std::fs::read(RunDir::new(&out_dir).results()).unwrap()).unwrap();
    assert_eq!(common::figures(&Results { provenance: None, ..collected }), common::figures(&expected));
}
