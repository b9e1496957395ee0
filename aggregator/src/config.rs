//! The aggregator's configuration file (`federation.toml`).

use std::path::{Path, PathBuf};

use learning::consensus::ConsensusConfig;
use learning::data::DataSpec;
use learning::train::DistillConfig;
use learning::{Architecture, BackendKind};
use serde::{Deserialize, Serialize};

/// Everything the aggregator needs; relative paths are resolved against the config file's folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Federation id.
    pub federation: String,
    /// Key file (see `fd-aggregator keygen`).
    pub key: PathBuf,
    /// Listen addresses, e.g. `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<String>,
    /// Output folder: checkpoints, metrics, the global model, the report.
    pub output: PathBuf,
    /// Number of rounds.
    pub rounds: u64,
    /// Seed of every random choice (sample selection, student initialisation and training).
    #[serde(default)]
    pub seed: u64,
    /// CPU backend.
    #[serde(default)]
    pub backend: BackendKind,
    /// Number of classes every model predicts.
    pub classes: usize,
    /// Nodes allowed to join.
    pub roster: Vec<RosterEntry>,
    /// The public reference set.
    pub reference: ReferenceConfig,
    /// Round settings.
    pub round: RoundConfig,
    /// How soft labels are combined.
    #[serde(default)]
    pub consensus: ConsensusConfig,
    /// The global student.
    pub student: StudentConfig,
    /// Optional labelled data to evaluate the global model on.
    #[serde(default)]
    pub validation: Option<DataSpec>,
}

/// One allowed node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    /// Name for logs and reports.
    pub name: String,
    /// Its libp2p PeerId (printed by `fd-node keygen`).
    pub peer_id: String,
}

/// Where the reference set is and what its hash must be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// File of canonical reference-set bytes.
    pub path: PathBuf,
    /// Expected SHA-256 (hex) of the file.
    pub sha256: String,
}

/// Settings of each round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundConfig {
    /// Reference samples per round (a fresh seeded subset each round).
    pub samples: u32,
    /// Softmax temperature of the soft labels.
    pub temperature: f32,
    /// Payload encoding: `f32`, `f16` or `q8`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Submissions needed to close a round after its deadline.
    pub quorum: usize,
    /// Seconds from announcement to deadline.
    pub deadline_secs: f64,
}

fn default_encoding() -> String {
    "q8".into()
}

/// The global model and how it learns from the consensus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentConfig {
    /// Architecture (may differ from every node's).
    pub architecture: Architecture,
    /// Continue from the previous round's global model.
    #[serde(default = "yes")]
    pub warm_start: bool,
    /// Distillation settings; `temperature` is taken from the round.
    #[serde(default)]
    pub distill: DistillConfig,
}

fn yes() -> bool {
    true
}

impl AggregatorConfig {
    /// Reads a config file, resolving relative paths against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        Ok(cfg.resolved(path.parent().unwrap_or(Path::new("."))))
    }

    /// Resolves relative paths against `base`.
    pub fn resolved(mut self, base: &Path) -> Self {
        let r = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        self.key = r(&self.key);
        self.output = r(&self.output);
        self.reference.path = r(&self.reference.path);
        self.validation = self.validation.map(|v| v.resolved(base));
        self
    }
}
