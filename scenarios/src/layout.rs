//! The run folder's layout: every path a run writes or reads, in one place.
//!
//! ```text
//! OUT/                          one run (RunDir)
//!   config.toml                 the resolved scenario
//!   federation.toml             the aggregator's config, as `fd-aggregator run` takes it
//!   reference.fdref             the public reference set
//!   test-rows.txt               the held-out test rows
//!   keys/aggregator.key, keys/node-XX.key
//!   nodes/node-XX/              one node (NodeDir): node.toml, simulation.toml (faults only),
//!                               rows.txt (its private rows), state/ (its own state folder)
//!   aggregator/                 the aggregator's output (global model, metrics.jsonl)
//!   logs/                       with `transport = "processes"` or `"slurm"`: each process's log
//!   slurm/                      with `transport = "slurm"` (or `fd-scenarios export slurm`): the
//!                               job scripts federation.sbatch and nodes.sbatch
//!   results.json, rounds.csv, report.md, accuracy.png, accuracy-bytes.png, labels.png
//! OUT/seed-N/                   over several seeds: one run per seed, and the summary in OUT/
//! OUT/eps-E/seed-N/             a privacy sweep: one multi-seed run per budget
//! OUT/full/seed-N/, OUT/VARIANT/seed-N/   an ablation: the full run and each variant
//! ```
//!
//! Node `i` is `node-XX` (two digits, from `node-00`) everywhere: its folder, its key, its log
//! and its roster name.

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// The name of node `i` (0-based): `node-00`, `node-01`, …; its folder, key, log and roster name.
pub fn node_name(i: usize) -> String {
    format!("node-{i:02}")
}

/// The machine-readable results of any run folder (one run, several seeds, a sweep, an ablation).
pub const RESULTS: &str = "results.json";
/// The report of any run folder.
pub const REPORT: &str = "report.md";
/// The privacy–utility plot of a sweep.
pub const PRIVACY_PLOT: &str = "privacy-utility.png";
/// Folder of an ablation's run with every technique on.
pub const FULL: &str = "full";

/// A run folder (see the module's layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// The run folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `config.toml`: the resolved scenario.
    pub fn config(&self) -> PathBuf {
        self.file("config.toml")
    }

    /// `federation.toml`: the aggregator's config.
    pub fn federation(&self) -> PathBuf {
        self.file("federation.toml")
    }

    /// `reference.fdref`: the public reference set.
    pub fn reference(&self) -> PathBuf {
        self.file("reference.fdref")
    }

    /// `test-rows.txt`: the held-out test rows (the aggregator's validation rows).
    pub fn test_rows(&self) -> PathBuf {
        self.file("test-rows.txt")
    }

    /// `keys/`.
    pub fn keys(&self) -> PathBuf {
        self.file("keys")
    }

    /// `keys/aggregator.key`.
    pub fn aggregator_key(&self) -> PathBuf {
        self.keys().join("aggregator.key")
    }

    /// `keys/node-XX.key`.
    pub fn node_key(&self, i: usize) -> PathBuf {
        self.keys().join(format!("{}.key", node_name(i)))
    }

    /// `aggregator/`: the aggregator's output folder.
    pub fn aggregator(&self) -> PathBuf {
        self.file("aggregator")
    }

    /// `aggregator/global`: the global model (the aggregator names it; `.bpk` and exports beside).
    pub fn global_model(&self) -> PathBuf {
        self.aggregator().join("global")
    }

    /// `aggregator/metrics.jsonl`: one line a round (the aggregator names it).
    pub fn metrics(&self) -> PathBuf {
        self.aggregator().join("metrics.jsonl")
    }

    /// `nodes/`.
    pub fn nodes(&self) -> PathBuf {
        self.file("nodes")
    }

    /// `nodes/node-XX/`: node `i`'s folder.
    pub fn node(&self, i: usize) -> NodeDir {
        NodeDir(self.nodes().join(node_name(i)))
    }

    /// `logs/`: each process's log, with `transport = "processes"` or `"slurm"`.
    pub fn logs(&self) -> PathBuf {
        self.file("logs")
    }

    /// `logs/aggregator.log`.
    pub fn aggregator_log(&self) -> PathBuf {
        self.logs().join("aggregator.log")
    }

    /// `logs/aggregator.addrs`: where the aggregator process reports the addresses it bound.
    pub fn aggregator_addrs(&self) -> PathBuf {
        self.logs().join("aggregator.addrs")
    }

    /// `logs/node-XX.log`.
    pub fn node_log(&self, i: usize) -> PathBuf {
        self.logs().join(format!("{}.log", node_name(i)))
    }

    /// `logs/slurm-federation.out`: the output of the Slurm job's batch script.
    pub fn slurm_log(&self) -> PathBuf {
        self.logs().join("slurm-federation.out")
    }

    /// `slurm/`: the Slurm job's scripts.
    pub fn slurm(&self) -> PathBuf {
        self.file("slurm")
    }

    /// `slurm/federation.sbatch`: the batch job of the aggregator, which submits the nodes' array.
    pub fn slurm_federation(&self) -> PathBuf {
        self.slurm().join("federation.sbatch")
    }

    /// `slurm/nodes.sbatch`: the nodes' job array, a task a node.
    pub fn slurm_nodes(&self) -> PathBuf {
        self.slurm().join("nodes.sbatch")
    }

    /// `results.json`.
    pub fn results(&self) -> PathBuf {
        self.file(RESULTS)
    }

    /// `report.md`.
    pub fn report(&self) -> PathBuf {
        self.file(REPORT)
    }

    /// `rounds.csv`: one line a round.
    pub fn rounds_csv(&self) -> PathBuf {
        self.file("rounds.csv")
    }

    /// A plot of the report (`accuracy.png`, …) or of a sweep ([`PRIVACY_PLOT`]).
    pub fn plot(&self, name: &str) -> PathBuf {
        self.file(name)
    }

    /// `seed-N/`: the run of one seed of a multi-seed run.
    pub fn seed(&self, seed: u64) -> RunDir {
        RunDir(self.0.join(format!("seed-{seed}")))
    }

    /// `eps-E/`: the runs at one budget of a privacy sweep (`eps-inf` without DP).
    pub fn budget(&self, budget: impl Display) -> RunDir {
        RunDir(self.0.join(format!("eps-{budget}")))
    }

    /// `full/` or `VARIANT/`: the runs of one row of an ablation.
    pub fn variant(&self, name: &str) -> RunDir {
        RunDir(self.0.join(name))
    }
}

impl AsRef<Path> for RunDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// A node's folder, `nodes/node-XX/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDir(PathBuf);

impl NodeDir {
    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `node.toml`: the node's config, as `fd-node run` takes it.
    pub fn config(&self) -> PathBuf {
        self.0.join("node.toml")
    }

    /// `simulation.toml`: the faults `fd-sim-node` simulates (only for a faulty node).
    pub fn simulation(&self) -> PathBuf {
        self.0.join("simulation.toml")
    }

    /// `rows.txt`: the node's private rows of the data set.
    pub fn rows(&self) -> PathBuf {
        self.0.join("rows.txt")
    }

    /// `state/`: the node's state folder.
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }

    /// `state/reference.fdref`: the node's copy of the reference set.
    pub fn reference(&self) -> PathBuf {
        self.state().join("reference.fdref")
    }

    /// `state/model`: the node's model after its last round (the node names it).
    pub fn model(&self) -> PathBuf {
        self.state().join("model")
    }
}

/// A fresh output folder for a scenario: `runs/NAME-SECONDS` under the working directory.
pub fn default_out(scenario: &str) -> PathBuf {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("{scenario}-{t}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_with_two_digits_everywhere() {
        let d = RunDir::new("/r");
        assert_eq!(node_name(3), "node-03");
        assert_eq!(d.node(3).config(), Path::new("/r/nodes/node-03/node.toml"));
        assert_eq!(d.node_key(12), Path::new("/r/keys/node-12.key"));
        assert_eq!(d.node_log(0), Path::new("/r/logs/node-00.log"));
        assert_eq!(d.seed(2).budget("inf").results(), Path::new("/r/seed-2/eps-inf/results.json"));
    }
}
