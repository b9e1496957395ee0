//! The node's configuration file (`node.toml`), deserialized straight into validated types.

use std::path::{Path, PathBuf};

use learning::data::{DataSpec, Dataset};
use learning::fs::resolve;
use learning::joint::Cover;
use learning::train::TrainConfig;
use learning::{Architecture, BackendKind};
use net::multiaddr::{Multiaddr, Protocol};
use protocol::{FederationId, ParticipantId};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::policy::QueryPolicy;

/// Everything a node needs; relative paths are resolved against the config file's folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Federation id; must match the aggregator's.
    pub federation: FederationId,
    /// Key file (see `fd-node keygen`).
    pub key: PathBuf,
    /// Aggregator address with its PeerId, e.g. `/ip4/127.0.0.1/tcp/4001/p2p/12D3…`, or through
    /// a relay, `/ip4/…/tcp/4002/p2p/<relay>/p2p-circuit/p2p/<aggregator>`.
    pub aggregator: Multiaddr,
    /// Addresses to listen on (default: none; a node only dials out). Only for an aggregator
    /// reached through a relay: a node that listens on a port it can be reached at lets DCUtR
    /// (`hole_punching`) replace the relayed connection with a direct one. Only the aggregator and the relay may
    /// connect. AutoNAT probes these ports (`state_dir/reachability.json` says whether the
    /// aggregator or the relay could reach one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<Multiaddr>,
    /// Let DCUtR try to replace the relayed connection to the aggregator with a direct one (the
    /// aggregator must turn it on too). Off by default; only global addresses are dialled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hole_punching: bool,
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
    /// Serve Prometheus metrics at `http://ADDR/metrics` (e.g. `"127.0.0.1:9464"`); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<std::net::SocketAddr>,
    /// How the endpoint at `metrics` is served (`[http]`): the live view, an address other than
    /// loopback, the host names it answers to.
    #[serde(default, skip_serializing_if = "net::http::HttpConfig::is_default")]
    pub http: net::http::HttpConfig,
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
    /// Abstain, per reference sample, where the model is out of its depth (Selective-FD); absent:
    /// the node labels every sample. `quantile` calibrates on private rows and is refused with
    /// `[privacy]`; a fixed `threshold` is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstain: Option<learning::abstain::Abstain>,
    /// Record-level differential privacy (DP-SGD with a budget the node enforces); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::budget::PrivacyConfig>,
    /// What the node agrees to answer: the pinned reference set and the limits of its queries.
    pub policy: QueryPolicy,
    /// The egress ledger (`state_dir/egress.jsonl`).
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Pad every local training to a fixed number of steps, so that its time does not tell the
    /// private row count; absent: no padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PaddingConfig>,
}

/// `[padding]`: every local training does the work of `steps` steps, whatever the number of
/// private rows (see [`learning::joint::fit_joint_padded`]). It costs the time of those steps in
/// every round: the node answers as late as the largest training it pads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaddingConfig {
    /// Steps of work of every local training; at least the steps of the node's own training.
    pub steps: u64,
}

/// What the egress ledger records besides one line per message sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Also keep the exact bytes of every message sent (in `state_dir/egress/`, one file per
    /// message named by its SHA-256), so that an auditor can decode and check them.
    pub keep_bytes: bool,
}

/// How a node learns from the last consensus (the federation's soft labels on public rows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Whether to learn from the consensus at all.
    pub enabled: bool,
    /// `joint`: each local epoch minimises cross-entropy on private batches plus `weight` ×
    /// distillation on public batches, in the same steps. `sequential` (FedMD): `epochs` of
    /// distillation on the public rows, then the local epochs on private rows alone.
    pub mode: DigestMode,
    /// λ, the weight of the distillation term in `joint` mode.
    pub weight: f32,
    /// What one local epoch covers in `joint` mode (see [`Cover`]; without `[privacy]`, whose steps the
    /// sampling rate fixes): `private`, one pass over the private rows; `both`, as many steps as
    /// the longer of one pass over the private rows and one over the consensus samples, the
    /// private batches cycling, so that a node with few private rows still learns every sample
    /// of the consensus each round.
    pub cover: Cover,
    /// Passes over the consensus samples (`sequential` mode).
    pub epochs: usize,
    /// Learning rate (`sequential` mode).
    pub learning_rate: f64,
    /// Batch size (`sequential` mode).
    pub batch_size: usize,
    /// What a top-k consensus (`top1`, `top2`, `top1q8`, `top2q8`) teaches on the classes it left
    /// out: `uniform`, the rest of the row spread evenly, as decoded; `own`, the rest shared in
    /// proportion to the node's own model's probabilities on those classes, so that the node
    /// learns the kept probabilities and keeps its own shape of the rest.
    pub rest: Rest,
}

/// See [`DigestConfig::rest`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rest {
    /// The classes left out share the row's rest evenly.
    #[default]
    Uniform,
    /// The classes left out share the row's rest as the node's own model predicts them.
    Own,
}

/// See [`DigestConfig::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestMode {
    /// Private cross-entropy and distillation in the same steps.
    #[default]
    Joint,
    /// Distillation first, then private training (FedMD).
    Sequential,
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: DigestMode::Joint,
            weight: 1.0,
            cover: Cover::Private,
            epochs: 2,
            learning_rate: 1e-3,
            batch_size: 64,
            rest: Rest::Uniform,
        }
    }
}

impl NodeConfig {
    /// Reads a config file, resolves relative paths against its folder and validates it. Reads
    /// nothing else: keys, data and the reference set are opened by [`crate::run`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let cfg: Self = net::cli::read_toml(path)?;
        let cfg = cfg.resolved(path.parent().unwrap_or(Path::new(".")));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolves relative paths against `base`.
    pub fn resolved(mut self, base: &Path) -> Self {
        self.key = resolve(base, &self.key);
        self.state_dir = resolve(base, &self.state_dir);
        self.reference = resolve(base, &self.reference);
        self.data = self.data.resolved(base);
        self
    }

    /// Private trainings the privacy budget plans for: `privacy.rounds`, and the final one at
    /// the end of the federation when the node learns the last consensus jointly.
    pub fn planned_trainings(&self) -> u64 {
        let rounds = self.privacy.as_ref().map_or(0, |p| p.rounds);
        rounds + u64::from(self.digest.enabled && self.digest.mode == DigestMode::Joint)
    }

    /// Checks every field that can be checked without I/O, naming the first one at fault.
    pub fn validate(&self) -> Result<(), Error> {
        self.aggregator_id()?;
        self.http.validate(self.metrics).map_err(|(key, why)| Error::config(key, why))?;
        if let Some(p) = &self.privacy {
            p.validate()?;
        }
        self.train.validate().map_err(|e| Error::config("train", e))?;
        if let Some(a) = &self.abstain {
            a.validate().map_err(|e| Error::config("abstain", e))?;
            if self.privacy.is_some() && a.reads_private_rows() {
                return Err(Error::config(
                    "abstain.quantile",
                    "calibrating the abstention threshold reads private rows outside DP-SGD's accounted steps: with [privacy], set a fixed abstain.threshold instead",
                ));
            }
        }
        if self.digest.enabled {
            let d = &self.digest;
            if d.epochs == 0 || d.batch_size == 0 || !(d.learning_rate.is_finite() && d.learning_rate > 0.0) {
                return Err(Error::config("digest", "epochs, batch_size and learning_rate must be positive"));
            }
            if !(d.weight.is_finite() && d.weight >= 0.0) {
                return Err(Error::config("digest.weight", "must be ≥ 0"));
            }
        }
        self.data.source().map_err(|e| Error::config("data", e))?;
        self.policy.validate()?;
        if self.padding.is_some_and(|p| p.steps == 0) {
            return Err(Error::config("padding.steps", "must be at least 1"));
        }
        Ok(())
    }

    /// Refuses padding that cannot hide this node's training time: fewer steps than a training
    /// on its `rows` private rows takes (under `[privacy]`, the steps `steps_per_training` of its
    /// plan). Without `[privacy]`, with `digest.cover = "both"`, a training may still take more
    /// (one pass over the consensus samples); the node then warns at that training.
    pub fn check_padding(&self, rows: usize, steps_per_training: Option<u64>) -> Result<(), Error> {
        let Some(p) = self.padding else { return Ok(()) };
        let own =
            steps_per_training.unwrap_or((rows.div_ceil(self.train.batch_size.max(1)) * self.train.epochs) as u64);
        if own > p.steps {
            return Err(Error::config(
                "padding.steps",
                format!(
                    "{} is fewer than the {own} steps a training on this node's data takes: padding to it would not hide the row count; raise it (to the steps of the largest training it should hide among) or lower train.epochs",
                    p.steps
                ),
            ));
        }
        Ok(())
    }

    /// The aggregator's identity, from the `/p2p/` suffix of its address.
    pub fn aggregator_id(&self) -> Result<ParticipantId, Error> {
        aggregator_id(&self.aggregator)
    }
}

/// The private data, or an error naming `data`; labels outside the declared classes keep their
/// own variant, [`learning::Error::Classes`].
pub(crate) fn load_data(spec: &DataSpec) -> Result<Dataset, Error> {
    let data = spec.load().map_err(|e| match e {
        e @ learning::Error::Classes { .. } => Error::Learning(e),
        e => Error::config("data", e),
    })?;
    if data.is_empty() {
        return Err(Error::config("data", "no rows"));
    }
    Ok(data)
}

/// The identity an aggregator address names in its `/p2p/` suffix.
pub fn aggregator_id(address: &Multiaddr) -> Result<ParticipantId, Error> {
    match address.iter().last() {
        Some(Protocol::P2p(pid)) => {
            net::participant(&pid).ok_or_else(|| Error::config("aggregator", "the /p2p/ id is not an Ed25519 key"))
        }
        _ => Err(Error::config(
            "aggregator",
            format!("`{address}` must end with /p2p/<the aggregator's PeerId>, as `fd-aggregator init` prints it"),
        )),
    }
}
