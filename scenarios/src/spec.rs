//! Scenario files: what to simulate. Unknown keys and bad values are refused with the key named.
//!
//! An `[[ablation]]` [`Variant`] changes the scenario's own keys: `set` takes dotted keys
//! (`"nodes.digest.mode" = "sequential"`), `unset` removes optional ones (`["nodes.abstain"]`).
//! The changed scenario is parsed and validated like any scenario file, so a typo in a variant is
//! refused, with the variant and the key named, before anything runs.

use std::path::{Path, PathBuf};

use aggregator::config::{RoundConfig, StudentConfig};
use learning::consensus::ConsensusConfig;
use learning::data::{DataSpec, Partition};
use learning::train::TrainConfig;
use learning::{Architecture, BackendKind};
use node::config::DigestConfig;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::faults::Attack;

/// A simulated federation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (used in the default output folder).
    pub name: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// How nodes run.
    #[serde(default)]
    pub transport: Transport,
    /// CPU backend.
    #[serde(default)]
    pub backend: BackendKind,
    /// Federated rounds.
    pub rounds: u64,
    /// The data set and its preprocessing.
    pub data: DataSpec,
    /// Test / reference / private split and partition.
    pub split: SplitSpec,
    /// The nodes' models and training.
    pub nodes: NodesSpec,
    /// The global student.
    pub student: StudentConfig,
    /// Round settings, as the aggregator takes them (`quorum` defaults to every node).
    pub round: RoundConfig,
    /// How soft labels are combined.
    #[serde(default)]
    pub consensus: ConsensusConfig,
    /// Injected faults.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Baselines to run beside the federation.
    #[serde(default)]
    pub baselines: Baselines,
    /// Ablation variants (`[[ablation]]`): each reruns the scenario with one setting changed,
    /// over the same seeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ablation: Vec<Variant>,
    /// Compression jobs (`[[compress]]`), run after the federation: the global student
    /// distilled into smaller students on the public rows (with their labels), each scored on
    /// the test rows (see `learning::compress`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compress: Vec<learning::compress::Job>,
}

/// How nodes run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Every node a real libp2p peer on loopback inside this process.
    #[default]
    InProcess,
    /// Real `fd-node` and `fd-aggregator` processes.
    Processes,
    /// A Slurm batch job: `fd-aggregator` as a job step, the nodes as a job array, submitted
    /// with `sbatch` (the run folder on a filesystem every compute node shares).
    Slurm,
}

/// Split and partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Held-out test rows.
    pub test: usize,
    /// Public reference rows (labels dropped).
    pub reference: usize,
    /// Number of nodes.
    pub nodes: usize,
    /// How private rows are spread.
    pub partition: Partition,
    /// Minimum rows per node.
    #[serde(default = "one")]
    pub min_size: usize,
}

fn one() -> usize {
    1
}

/// Node models and training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesSpec {
    /// Architecture of every node…
    pub architecture: Architecture,
    /// …except these (heterogeneous federations).
    #[serde(default)]
    pub overrides: Vec<ArchitectureOverride>,
    /// Local training each round.
    pub train: TrainConfig,
    /// Digest of the consensus.
    #[serde(default)]
    pub digest: DigestConfig,
    /// Give every node its own copy of the (public) reference set; if false, nodes fetch it from
    /// the aggregator over the network in round 1.
    #[serde(default = "yes")]
    pub copy_reference: bool,
    /// The runner declares each node's row count in the roster, as an operator would. If false,
    /// `weighted_by_samples` weighs the counts nodes report (clipped by
    /// `round.sample_count_clip`), and every node's policy allows sending it.
    #[serde(default = "yes")]
    pub declare_samples: bool,
    /// Record-level differential privacy for every node (and the DP-FedAvg baseline): each
    /// node gets `[privacy]` with this budget, planned for the scenario's rounds.
    #[serde(default)]
    pub privacy: Option<NodesPrivacy>,
    /// Abstention for every node (`[nodes.abstain]`, written into each `node.toml` as
    /// `[abstain]`); absent: nodes label every sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstain: Option<learning::abstain::Abstain>,
}

/// `[nodes.privacy]` of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesPrivacy {
    /// ε of each node over the whole run.
    pub epsilon: f64,
    /// δ of each node.
    pub delta: f64,
    /// Clipping norm.
    #[serde(default = "unit")]
    pub clip_norm: f32,
    /// Rounds each node plans its budget for (default: the scenario's rounds). Fewer than the
    /// scenario's makes nodes spend their budget early and refuse the last rounds.
    #[serde(default)]
    pub rounds: Option<u64>,
    /// Only these nodes (default: every node).
    #[serde(default)]
    pub nodes: Option<Vec<usize>>,
}

fn unit() -> f32 {
    1.0
}

impl NodesPrivacy {
    /// The `[privacy]` of node `i` of a scenario of `rounds` rounds: the noise seeded from the
    /// scenario's seed, so that runs are reproducible (a simulation: the seed is not secret).
    /// `None` for a node it does not cover.
    pub fn node(&self, rounds: u64, seed: u64, i: usize) -> Option<node::budget::PrivacyConfig> {
        if self.nodes.as_ref().is_some_and(|n| !n.contains(&i)) {
            return None;
        }
        Some(node::budget::PrivacyConfig {
            epsilon: self.epsilon,
            delta: self.delta,
            clip_norm: self.clip_norm,
            rounds: self.rounds.unwrap_or(rounds),
            noise_multiplier: None,
            noise_seed: Some(protocol::seed::derive(seed, protocol::seed::Stream::Noise, i as u64)),
        })
    }
}

fn yes() -> bool {
    true
}

/// A node with its own architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureOverride {
    /// Node index (0-based).
    pub node: usize,
    /// Its architecture.
    pub architecture: Architecture,
}

/// A fault injected into one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Node index.
    pub node: usize,
    /// Leave on this round's announcement…
    #[serde(default)]
    pub drop_at: Option<u64>,
    /// …and come back for this round.
    #[serde(default)]
    pub return_at: Option<u64>,
    /// Straggler delay per submission, ms.
    #[serde(default)]
    pub delay_ms: u64,
    /// Corrupted soft labels.
    #[serde(default)]
    pub attack: Attack,
    /// A private row count to report instead of the true one (see `nodes.declare_samples`).
    #[serde(default)]
    pub claim_samples: Option<u64>,
}

/// Which baselines to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Baselines {
    /// Each node alone.
    pub local: bool,
    /// All private data pooled.
    pub centralized: bool,
    /// Federated averaging (when every node has the same architecture).
    pub fedavg: bool,
    /// The student architecture trained on the public set's true labels.
    pub public_labels: bool,
}

impl Baselines {
    /// No baseline: the federation alone.
    pub const NONE: Baselines = Baselines { local: false, centralized: false, fedavg: false, public_labels: false };
}

impl Default for Baselines {
    fn default() -> Self {
        Self { local: true, centralized: true, fedavg: true, public_labels: true }
    }
}

impl Scenario {
    /// Parses a scenario from TOML and validates it. A value that does not parse is named by
    /// its dotted key, as in the node's and the aggregator's configs.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let s: Scenario = net::cli::parse_toml(Path::new("(scenario)"), text)?;
        s.validate()?;
        Ok(s)
    }

    /// The scenario as a scenario file: what `fd-scenarios show` prints, and what a run writes
    /// to its `config.toml`. [`Scenario::from_toml`] reads it back to the same value.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("scenario as TOML")
    }

    /// Reads a scenario file; relative data paths are resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut s = Self::from_toml(&text).with_context(|| format!("invalid scenario {}", path.display()))?;
        s.data = s.data.resolved(path.parent().unwrap_or(Path::new(".")));
        Ok(s)
    }

    /// The round settings the aggregator is given: `round`, its quorum every node asked (the
    /// whole roster, or the cohort's size with `round.cohort`) unless the scenario sets one (a
    /// simulation waits for each node, as it always has; the aggregator's own default,
    /// [`aggregator::config::default_quorum`], spares one absent member).
    pub fn aggregator_round(&self) -> RoundConfig {
        let asked = self.round.asked(self.split.nodes);
        RoundConfig { quorum: Some(self.round.quorum.unwrap_or(asked)), ..self.round.clone() }
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (i, job) in self.compress.iter().enumerate() {
            job.validate().map_err(|e| anyhow::anyhow!("compress[{i}]: {e}"))?;
        }
        if self.rounds == 0 {
            bail!("`rounds` must be at least 1");
        }
        if self.split.nodes == 0 {
            bail!("`split.nodes` must be at least 1");
        }
        self.aggregator_round().validate(self.split.nodes)?;
        if self.round.samples as usize > self.split.reference {
            bail!("`round.samples` = {} exceeds `split.reference` = {}", self.round.samples, self.split.reference);
        }
        self.nodes.train.validate().map_err(|e| anyhow::anyhow!("`nodes.train`: {e}"))?;
        if let Some(a) = &self.nodes.abstain {
            a.validate().map_err(|e| anyhow::anyhow!("`nodes.abstain`: {e}"))?;
            if self.nodes.privacy.is_some() && a.reads_private_rows() {
                bail!(
                    "`nodes.abstain.quantile` calibrates on private rows outside DP-SGD: with `nodes.privacy`, set `nodes.abstain.threshold` instead"
                );
            }
        }
        self.student.distill.validate().map_err(|e| anyhow::anyhow!("`student.distill`: {e}"))?;
        self.consensus.validate().map_err(|e| anyhow::anyhow!("`consensus`: {e}"))?;
        self.aggregator_round().check_consensus(self.split.nodes, &self.consensus)?;
        for o in &self.nodes.overrides {
            if o.node >= self.split.nodes {
                bail!("`nodes.overrides`: node {} does not exist", o.node);
            }
        }
        for f in &self.faults {
            if f.node >= self.split.nodes {
                bail!("`faults`: node {} does not exist", f.node);
            }
            if let (Some(d), Some(r)) = (f.drop_at, f.return_at)
                && r <= d
            {
                bail!("`faults`: node {} returns at round {r}, not after it drops at {d}", f.node);
            }
        }
        self.validate_variants()
    }

    /// Checks the `[[ablation]]` variants: names usable as folders and distinct, and each
    /// variant a valid scenario.
    fn validate_variants(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.ablation {
            if v.name.is_empty()
                || !v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || v.name == crate::layout::FULL
            {
                bail!(
                    "ablation name `{}`: use letters, digits, `-` and `_` (and not `full`, the run with every technique on)",
                    v.name
                );
            }
            if !seen.insert(v.name.as_str()) {
                bail!("ablation name `{}` appears twice", v.name);
            }
            if v.set.is_empty() && v.unset.is_empty() {
                bail!("ablation `{}` changes nothing: give `set` or `unset`", v.name);
            }
            v.apply(self)?;
        }
        Ok(())
    }

    /// Architecture of node `i`.
    pub fn architecture(&self, i: usize) -> &Architecture {
        self.nodes.overrides.iter().find(|o| o.node == i).map_or(&self.nodes.architecture, |o| &o.architecture)
    }

    /// Whether every node shares one architecture (FedAvg is possible).
    pub fn homogeneous(&self) -> bool {
        (0..self.split.nodes).all(|i| self.architecture(i) == &self.nodes.architecture)
    }
}

/// One `[[ablation]]` variant: the scenario with a few keys set or removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name, also its output folder (letters, digits, `-` and `_`).
    pub name: String,
    /// What it changes, in words, for the report.
    pub about: String,
    /// Dotted keys of the scenario and their values in this variant.
    #[serde(default)]
    pub set: toml::Table,
    /// Dotted keys of optional settings this variant removes.
    #[serde(default)]
    pub unset: Vec<String>,
}

impl Variant {
    /// `base` with this variant's changes, without ablations and baselines (the full run has
    /// them), named `BASE-NAME`, validated.
    pub fn apply(&self, base: &Scenario) -> anyhow::Result<Scenario> {
        let mut b = base.clone();
        b.ablation.clear();
        b.name = format!("{}-{}", base.name, self.name);
        b.baselines = Baselines::NONE;
        let mut value = toml::Table::try_from(&b).context("scenario as TOML")?;
        for (key, v) in &self.set {
            let (table, last) =
                walk(&mut value, key, true).with_context(|| format!("ablation `{}`: `set` key `{key}`", self.name))?;
            table.insert(last.to_owned(), v.clone());
        }
        for key in &self.unset {
            let (table, last) = walk(&mut value, key, false)
                .with_context(|| format!("ablation `{}`: `unset` key `{key}`", self.name))?;
            if table.remove(last).is_none() {
                bail!("ablation `{}`: `unset` key `{key}` is not set in the scenario", self.name);
            }
        }
        // Read back as a scenario file is: every check a file gets, a variant gets.
        let text = toml::to_string(&value).context("scenario as TOML")?;
        Scenario::from_toml(&text).with_context(|| format!("ablation `{}`", self.name))
    }
}

/// The table holding dotted `key`'s last part, creating missing tables if `create`.
fn walk<'a, 'k>(
    root: &'a mut toml::Table,
    key: &'k str,
    create: bool,
) -> anyhow::Result<(&'a mut toml::Table, &'k str)> {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, path)) = parts.split_last() else { bail!("not a dotted key") };
    if parts.iter().any(|p| p.is_empty()) {
        bail!("not a dotted key");
    }
    let mut table = root;
    for part in path {
        if create && !table.contains_key(*part) {
            table.insert((*part).to_owned(), toml::Value::Table(toml::Table::new()));
        }
        table = match table.get_mut(*part) {
            Some(toml::Value::Table(t)) => t,
            Some(_) => bail!("`{part}` is not a table"),
            None => bail!("`{part}` is not set in the scenario"),
        };
    }
    Ok((table, last))
}

/// Folder holding the shipped data sets (the repository's `data/`), overridable with `FD_DATA_DIR`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("FD_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("data"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use node::config::DigestMode;

    fn preset(name: &str) -> Scenario {
        crate::presets::preset(name, &data_dir()).unwrap()
    }

    fn variant(name: &str, set: &str, unset: &[&str]) -> Variant {
        Variant {
            name: name.into(),
            about: String::new(),
            set: toml::from_str(set).unwrap(),
            unset: unset.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_variant_changes_only_its_keys() {
        let mut base = preset("quickstart");
        base.nodes.abstain = Some(learning::abstain::Abstain { quantile: Some(0.05), ..Default::default() });
        let v = variant("seq", "\"nodes.digest.mode\" = \"sequential\"\n\"round.samples\" = 100", &["nodes.abstain"]);
        let s = v.apply(&base).unwrap();
        assert_eq!(s.nodes.digest.mode, DigestMode::Sequential);
        assert_eq!(s.round.samples, 100);
        assert_eq!(s.nodes.abstain, None);
        assert_eq!(s.name, "quickstart-seq");
        assert!(!s.baselines.fedavg && !s.baselines.local);
        // Everything else is the base's.
        let mut back = s.clone();
        back.nodes.digest.mode = base.nodes.digest.mode;
        back.round.samples = base.round.samples;
        back.nodes.abstain = base.nodes.abstain.clone();
        back.name = base.name.clone();
        back.baselines = base.baselines.clone();
        assert_eq!(back, base);
    }

    #[test]
    fn bad_variants_are_refused_with_their_name() {
        let mut base = preset("quickstart");
        for (v, needle) in [
            (variant("typo", "\"nodes.digest.mood\" = \"sequential\"", &[]), "typo"),
            (variant("bad-value", "\"nodes.digest.mode\" = \"sideways\"", &[]), "bad-value"),
            (variant("gone", "", &["nodes.abstain"]), "gone"),
            (variant("through-a-value", "\"rounds.x\" = 1", &[]), "through-a-value"),
            (variant("full", "\"rounds\" = 2", &[]), "full"),
            (variant("nothing", "", &[]), "nothing"),
        ] {
            base.ablation = vec![v];
            let e = base.validate().unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{e:#}");
        }
        base.ablation = vec![variant("a", "rounds = 2", &[]), variant("a", "rounds = 3", &[])];
        assert!(base.validate().is_err());
    }

    #[test]
    fn the_ablation_preset_is_valid_and_every_variant_differs_from_the_full_run() {
        let s = preset("ablation");
        assert!(s.ablation.len() >= 5);
        for v in &s.ablation {
            let changed = v.apply(&s).unwrap();
            let mut full = s.clone();
            full.ablation.clear();
            full.name = changed.name.clone();
            full.baselines = changed.baselines.clone();
            assert_ne!(changed, full, "variant {} changes nothing", v.name);
        }
    }
}
