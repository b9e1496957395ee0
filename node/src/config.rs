//! The node's configuration file (`node.toml`).

use std::path::{Path, PathBuf};

use learning::data::DataSpec;
use learning::train::TrainConfig;
use learning::{Architecture, BackendKind};
use serde::{Deserialize, Serialize};

/// Everything a node needs; relative paths are resolved against the config file's folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Federation id; must match the aggregator's.
    pub federation: String,
    /// Key file (see `fd-node keygen`).
    pub key: PathBuf,
    /// Aggregator address with its PeerId, e.g. `/ip4/127.0.0.1/tcp/4001/p2p/12D3…`.
    pub aggregator: String,
    /// Folder for the model checkpoint, the egress ledger and the state file.
    pub state_dir: PathBuf,
    /// The node's copy of the public reference set; fetched from the aggregator if missing.
    pub reference: PathBuf,
    /// Seed of every random choice (initial weights, batches).
    #[serde(default)]
    pub seed: u64,
    /// CPU backend.
    #[serde(default)]
    pub backend: BackendKind,
    /// Private data.
    pub data: DataSpec,
    /// Local model.
    pub model: Architecture,
    /// Local training each round.
    #[serde(default)]
    pub train: TrainConfig,
    /// Digest of the previous round's consensus (FedMD).
    #[serde(default)]
    pub digest: DigestConfig,
    /// Fault injection, for simulations only.
    #[serde(default)]
    pub simulation: Simulation,
}

/// Fine-tuning on the public reference samples towards the last consensus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Whether to digest.
    pub enabled: bool,
    /// Passes over the consensus samples.
    pub epochs: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// Batch size.
    pub batch_size: usize,
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self { enabled: true, epochs: 2, learning_rate: 1e-3, batch_size: 64 }
    }
}

/// Misbehaviour to simulate (scenarios use it to test robustness). Never set on a real node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Simulation {
    /// Extra delay before each submission, in milliseconds (a straggler).
    pub delay_ms: u64,
    /// Replace honest soft labels with corrupted ones.
    pub attack: Attack,
    /// Leave the federation (stop) on receiving this round's announcement, without submitting.
    pub leave_at_round: Option<u64>,
}

/// Corrupted soft labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// Honest.
    #[default]
    None,
    /// Random probability vectors.
    Random,
    /// Uniform 1/C everywhere.
    Uniform,
    /// The probability mass moved to another class (c → C−1−c).
    LabelFlip,
    /// Logits multiplied by 10 before the softmax (over-confident).
    Scaled,
}

impl NodeConfig {
    /// Reads and validates a config file, resolving relative paths against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(cfg.resolved(base))
    }

    /// Resolves relative paths against `base`.
    pub fn resolved(mut self, base: &Path) -> Self {
        let r = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        self.key = r(&self.key);
        self.state_dir = r(&self.state_dir);
        self.reference = r(&self.reference);
        self.data = self.data.resolved(base);
        self
    }
}
