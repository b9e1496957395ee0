//! A federated-distillation node: trains a local model on private data and, each round, sends
//! only soft labels on the announced public reference samples to the aggregator.
//!
//! [`run`] is the whole node: load the config's key, data and model (or its checkpoint) off the
//! runtime, hand the model to its [`trainer::Trainer`] thread, start the network ([`net`]), then
//! converse with the aggregator ([`session`]) until the federation is finished or `shutdown`
//! fires. A round's work is the plain function [`local::local_round`]. What the node agrees to
//! answer is its [`policy`], checked for every announcement; the answers it gave are recorded in
//! `state_dir/answers.json` before they leave, and every message sent is recorded in
//! `state_dir/egress.jsonl` before it leaves (with its bytes, in `state_dir/egress/`, if the
//! config's `[ledger] keep_bytes` says so). The state folder is private (0700, files 0600).
//!
//! Modules: [`config`] (`node.toml`), [`policy`] (the query policy and the record of answers),
//! [`local`] (per-round learning, no I/O), [`trainer`] (the model's owner thread), [`session`]
//! (join, answer, submit), [`reference`] (the pinned public set), [`faults`] (hooks for
//! simulations; the production binary is always honest), [`metrics`] (Prometheus series, served at
//! `http://ADDR/metrics` when the config names a `metrics` address), [`reachability`] (AutoNAT's
//! verdict on this node, in `state_dir/reachability.json` and a metric), [`init`] (`fd-node init`:
//! the data check and a new `node.toml`).
#![deny(missing_docs)]

pub mod budget;
pub mod config;
pub mod faults;
pub mod init;
pub mod local;
pub mod metrics;
pub mod policy;
pub mod reachability;
mod reference;
mod session;
mod submit;
pub mod trainer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use learning::Model;
use learning::data::Dataset;
use net::NetConfig;
use protocol::{MessageKind, ReferenceSet, RefusalReason};
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;
pub use faults::{Faults, Honest};

/// Errors that stop a node, or one of its steps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is wrong.
    #[error("config field `{field}`: {detail}")]
    Config {
        /// Field name (a dotted key of the config file).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Training, inference or a model file failed.
    #[error(transparent)]
    Learning(#[from] learning::Error),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// The aggregator refused a request of this node.
    #[error("{what} refused: {reason:?} {detail}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// Reason code.
        reason: RefusalReason,
        /// The aggregator's detail.
        detail: String,
    },
    /// The aggregator answered with the wrong kind of message.
    #[error("unexpected answer to {request}: {got:?}")]
    Unexpected {
        /// What was asked.
        request: &'static str,
        /// What came back.
        got: MessageKind,
    },
    /// The private data's rows do not have as many features as the public reference set's.
    #[error(
        "the private data has {data} features a row, the federation's reference set {reference}: give the data the same columns, in the same order, as the reference set (and the same label column), or check `data.label`"
    )]
    FeatureCount {
        /// Features a row of the private data.
        data: usize,
        /// Features a row of the reference set.
        reference: usize,
    },
    /// The reference set could not be obtained.
    #[error("reference set: {detail}")]
    Reference {
        /// What is wrong.
        detail: String,
    },
    /// The privacy budget cannot pay for another training.
    #[error(transparent)]
    BudgetSpent(budget::Exhausted),
    /// The privacy ledger is missing, corrupt or unusable.
    #[error("privacy ledger {path}: {detail}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The trainer thread has stopped.
    #[error(transparent)]
    Stopped(#[from] net::owner::Stopped),
    /// A blocking task failed.
    #[error("background task")]
    Task(#[from] tokio::task::JoinError),
}

/// What a node did before it stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSummary {
    /// Rounds whose submission the aggregator accepted.
    pub accepted_rounds: Vec<u64>,
    /// Rounds whose submission was refused, with the reason.
    pub refused_rounds: Vec<(u64, RefusalReason)>,
    /// Consensus messages received.
    pub consensus_received: usize,
    /// Times the node (re)joined.
    pub joins: usize,
    /// The round at which the node left on purpose (a simulated fault).
    pub left_at: Option<u64>,
    /// The aggregator declared the federation finished after this many rounds.
    pub finished_after: Option<u64>,
}

/// Validated, loaded inputs of a node.
struct Loaded {
    identity: protocol::Identity,
    data: Arc<Dataset>,
    model: Model,
    budget: Option<budget::Budget>,
    /// The local copy of the pinned reference set, if there is one.
    reference: Option<ReferenceSet>,
    answers: policy::Answers,
}

fn config_err(field: &'static str, detail: impl ToString) -> Error {
    Error::Config { field: field.to_owned(), detail: detail.to_string() }
}

/// Reads the key, the local copy of the pinned reference set, the record of answers, the private
/// data and the model (checkpoint or fresh). Blocking.
fn load(cfg: &NodeConfig) -> Result<Loaded, Error> {
    cfg.validate()?;
    let identity = net::keys::read(&cfg.key).map_err(|e| config_err("key", e))?;
    let reference = reference::read_pinned(&cfg.reference, cfg.policy.reference_sha256)?;
    let answers = policy::Answers::load(&cfg.state_dir.join(policy::ANSWERS_FILE))?;
    let data = load_data(&cfg.data)?;
    if let Some(rs) = &reference {
        reference::check_features(data.dim, rs)?;
    }
    learning::fs::create_private_dir(&cfg.state_dir)?;
    let resolved = toml::to_string_pretty(cfg).map_err(|e| config_err("(file)", e))?;
    learning::fs::atomic_write(&cfg.state_dir.join("node.resolved.toml"), resolved.as_bytes())?;
    let ckpt = cfg.state_dir.join("model");
    let model = if ckpt.with_extension("bpk").exists() {
        let m = Model::load(&ckpt, cfg.backend).map_err(|e| config_err("state_dir", format!("checkpoint: {e}")))?;
        if m.architecture != cfg.model || m.input_dim != data.dim || m.classes < data.classes {
            return Err(config_err("model", "the checkpoint in state_dir was made with another architecture or data"));
        }
        tracing::info!(path = %ckpt.display(), "resumed the model checkpoint");
        m
    } else {
        cfg.model.validate(data.dim, data.classes).map_err(|e| config_err("model", e))?;
        Model::new(
            &cfg.model,
            data.dim,
            data.classes,
            cfg.backend,
            protocol::seed::derive(cfg.seed, protocol::seed::Stream::Init, 0),
        )?
    };
    let budget = match &cfg.privacy {
        Some(p) => {
            let b = budget::Budget::open(
                p,
                &cfg.state_dir,
                data.len(),
                &cfg.train,
                cfg.planned_trainings(),
                ckpt.with_extension("bpk").exists(),
            )?;
            let s = b.status()?;
            tracing::info!(
                spent = s.spent,
                epsilon = s.epsilon,
                delta = s.delta,
                noise_multiplier = s.plan.noise_multiplier,
                sample_rate = s.plan.sample_rate,
                trainings_left = s.trainings_left,
                "privacy budget"
            );
            Some(b)
        }
        None => None,
    };
    Ok(Loaded { identity, data: Arc::new(data), model, budget, reference, answers })
}

/// The private data, or an error naming `data`; labels outside the declared classes keep their
/// own variant, [`learning::Error::Classes`].
pub(crate) fn load_data(spec: &learning::data::DataSpec) -> Result<Dataset, Error> {
    let data = spec.load().map_err(|e| match e {
        e @ learning::Error::Classes { .. } => Error::Learning(e),
        e => config_err("data", e),
    })?;
    if data.is_empty() {
        return Err(config_err("data", "no rows"));
    }
    Ok(data)
}

/// Runs an honest node until the aggregator declares the federation finished, or `shutdown`
/// is cancelled.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<NodeSummary, Error> {
    run_with(cfg, Arc::new(Honest), shutdown).await
}

/// Runs a node whose behaviour `faults` may change (simulations only).
pub async fn run_with(
    cfg: NodeConfig,
    faults: Arc<dyn Faults>,
    shutdown: CancellationToken,
) -> Result<NodeSummary, Error> {
    let aggregator = cfg.aggregator_id()?;
    let loaded = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || load(&cfg)).await??
    };
    let me = loaded.identity.id();
    tracing::info!(peer = %net::keys::peer_id_string(&me), rows = loaded.data.len(), answered = loaded.answers.count, "node starting");
    let settings = local::Settings {
        train: cfg.train.clone(),
        digest: cfg.digest.clone(),
        abstain: cfg.abstain.clone(),
        seed: cfg.seed,
    };
    let local_samples = loaded.data.len() as u64;
    let features = loaded.data.dim;
    let trainer =
        trainer::Trainer::start(loaded.model, loaded.data, settings, cfg.state_dir.join("model"), loaded.budget)?;
    let mut net_cfg = NetConfig::new(cfg.federation.clone(), vec![aggregator]);
    // Matrices the aggregator sends have this node's classes: caps the consensus at that width.
    net_cfg.limits.max_classes = trainer.classes() as u32;
    net_cfg.ledger = Some(cfg.state_dir.join("egress.jsonl"));
    net_cfg.through_relays(std::slice::from_ref(&cfg.aggregator));
    // Whether this node can be reached: asked of the aggregator, or of the relay this node
    // reaches it through (a peer answers only over a direct connection, where it sees whence
    // we came).
    let relays: Vec<_> =
        net::nat::relays(std::slice::from_ref(&cfg.aggregator)).iter().filter_map(net::participant).collect();
    net_cfg.autonat = Some(net::nat::AutoNat::new(if relays.is_empty() { vec![aggregator] } else { relays }));
    net_cfg.ledger_keeps_bytes = cfg.ledger.keep_bytes;
    let (telemetry, registry) = metrics::Metrics::new(aggregator);
    net_cfg.traffic = Some(telemetry.traffic.clone());
    let metrics_server = match cfg.metrics {
        Some(addr) => Some(
            net::metrics::http::serve(addr, Arc::new(registry), &shutdown)
                .await
                .map_err(|e| config_err("metrics", e))?,
        ),
        None => None,
    };
    let (client, events, network) = net::spawn(loaded.identity, net_cfg, &shutdown)?;
    reachability::follow(client.reachability(), telemetry.reachability.clone(), cfg.state_dir.join(reachability::FILE));
    for addr in &cfg.listen {
        let bound = client.listen(addr.clone()).await?;
        tracing::info!(%bound, "listening, for a direct connection upgrade");
    }
    let session = session::Session {
        federation: cfg.federation.clone(),
        aggregator,
        aggregator_addr: cfg.aggregator.clone(),
        client,
        events,
        trainer,
        faults,
        reference_path: cfg.reference.clone(),
        local_samples,
        features,
        sample_count_wanted: false,
        answers_path: cfg.state_dir.join(policy::ANSWERS_FILE),
        answers: loaded.answers,
        policy: cfg.policy.clone(),
        reference: loaded.reference.map(|rs| (cfg.policy.reference_sha256, Arc::new(rs))),
        teacher: None,
        pending: None,
        summary: NodeSummary::default(),
        telemetry,
    };
    let result = session.run(shutdown).await;
    network.shutdown().await;
    if let Some(server) = metrics_server {
        server.shutdown().await;
    }
    result
}

/// The node's privacy budget: spent and left (`fd-node privacy status`). Reads the private data
/// for its row count (the sampling rate depends on it) and the ledger; writes nothing. Blocking.
pub fn privacy_status(cfg: &NodeConfig) -> Result<budget::Status, Error> {
    let Some(p) = &cfg.privacy else {
        return Err(config_err(
            "privacy",
            "node.toml has no [privacy] section: this node trains without differential privacy",
        ));
    };
    let data = cfg.data.load().map_err(|e| config_err("data", e))?;
    budget::status(p, &cfg.state_dir, data.len(), &cfg.train, cfg.planned_trainings())
}

/// Exports the node's checkpointed model (`state_dir/model`) for use outside the federation:
/// `model.onnx` and `model.safetensors` (PyTorch layout) in `out`. The model stays on the
/// data holder's machine: this writes local files only. Returns the paths written.
pub fn export(cfg: &NodeConfig, out: &Path) -> Result<Vec<PathBuf>, Error> {
    let ckpt = cfg.state_dir.join("model");
    if !ckpt.with_extension("bpk").is_file() {
        return Err(config_err(
            "state_dir",
            format!("no model checkpoint at {}; run the node first", ckpt.with_extension("bpk").display()),
        ));
    }
    let model = Model::load(&ckpt, cfg.backend)?;
    let (onnx, safetensors) = (out.join("model.onnx"), out.join("model.safetensors"));
    model.export_onnx(&onnx)?;
    model.export_safetensors(&safetensors)?;
    Ok(vec![onnx, safetensors])
}
