//! What a run reports: `results.json`'s shape, round by round and per baseline.

use learning::eval::ModelFacts;
use serde::{Deserialize, Serialize};

use crate::provenance::Provenance;

/// Accuracy and cost of one baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Final test accuracy.
    pub accuracy: f32,
    /// Test accuracy after each round, where the baseline has rounds.
    pub per_round: Vec<f32>,
    /// Bytes that crossed the network in total (0 for non-federated baselines).
    pub bytes_total: u64,
    /// Seconds of computation.
    pub seconds: f64,
}

/// One round of the federated run, as written to `results.json` and `rounds.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundResult {
    /// Round.
    pub round: u64,
    /// Global model test accuracy.
    pub global_accuracy: f32,
    /// Nodes whose soft labels made the consensus.
    pub participants: Vec<String>,
    /// Bytes from nodes to the aggregator.
    pub bytes_up: u64,
    /// Bytes from the aggregator to nodes.
    pub bytes_down: u64,
    /// FedAvg's test accuracy after the same round, if run.
    pub fedavg_accuracy: Option<f32>,
    /// Seconds.
    pub seconds: f64,
    /// With `round.cohort`: the nodes drawn for the round (empty: every node was asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohort: Vec<String>,
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Per round.
    pub rounds: Vec<RoundResult>,
    /// Final global model test accuracy.
    pub global_accuracy: f32,
    /// The teachers' ensemble (mean of the nodes' final predictions) on the test set.
    pub ensemble_accuracy: f32,
    /// Each node's final model on the test set (after federation).
    pub node_accuracy: Vec<f32>,
    /// Mean of `node_accuracy`.
    pub mean_node_accuracy: f32,
    /// Local-only baseline: each node alone.
    pub local_only: Option<LocalOnly>,
    /// Centralized baseline.
    pub centralized: Option<Baseline>,
    /// FedAvg baseline.
    pub fedavg: Option<Baseline>,
    /// Student architecture on the public set's true labels.
    pub public_labels: Option<Baseline>,
    /// Total bytes of federated distillation, both directions.
    pub bytes_total: u64,
    /// Mean bytes per round, both directions.
    pub bytes_per_round: f64,
    /// The global model's size and speed.
    pub global_model: ModelFacts,
    /// A node model's size and speed (node 0), for comparison.
    pub node_model: ModelFacts,
    /// Wall-clock seconds of the federated part.
    pub federation_seconds: f64,
    /// Peak resident memory of this process, in MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// With `transport = "processes"`: the peak memory of the federation's processes, RSS and
    /// PSS summed over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes_memory: Option<crate::federate::memory::ProcessMemory>,
    /// With `[nodes.privacy]`: what each node's ledger says it spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyResult>,
    /// The command, day and commit that made these figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// With `[[compress]]`: the analysis of the global student (first row) and of every
    /// compressed student, job after job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compress: Vec<learning::compress::Analysis>,
}

/// Differential privacy of the nodes, read from their ledgers after the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyResult {
    /// Each node's budget ε (`None`: the node trains without DP).
    pub budget: Vec<Option<f64>>,
    /// δ.
    pub delta: f64,
    /// ε each node spent (0 without DP).
    pub spent: Vec<f64>,
    /// Private trainings each node recorded.
    pub trainings: Vec<usize>,
    /// Largest ε spent by any node: the federation's record-level guarantee per data holder.
    pub max_spent: f64,
}

/// Local-only accuracies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalOnly {
    /// Mean over nodes.
    pub mean: f32,
    /// Best node.
    pub best: f32,
    /// Each node.
    pub nodes: Vec<f32>,
}
