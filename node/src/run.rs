//! [`run()`]: the whole node, in order: load the key, data and model off the runtime, hand the
//! model to its [`Trainer`] thread, start the network, converse with the aggregator
//! ([`crate::session`]) until the federation is finished or `shutdown` fires, then stop the
//! network and join the trainer's thread. Also the offline commands, [`privacy_status`],
//! [`privacy_repin`] and [`export`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use learning::Model;
use learning::data::Dataset;
use net::NetConfig;
use net::metrics::Traffic;
use protocol::{ParticipantId, ReferenceSet};
use tokio_util::sync::CancellationToken;

use crate::config::{self, NodeConfig};
use crate::error::Error;
use crate::faults::{Faults, Honest};
use crate::session::{NodeSummary, Session};
use crate::trainer::Trainer;
use crate::{budget, local, metrics, policy, reachability, reference, status};

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

/// Reads the key, the local copy of the pinned reference set, the record of answers, the private
/// data and the model (checkpoint or fresh). Blocking.
fn load(cfg: &NodeConfig) -> Result<Loaded, Error> {
    cfg.validate()?;
    let identity = net::keys::read(&cfg.key).map_err(|e| Error::config("key", e))?;
    let reference = reference::read_pinned(&cfg.reference, cfg.policy.reference_sha256)?;
    let answers = policy::Answers::load(&cfg.state_dir.join(policy::ANSWERS_FILE))?;
    let data = config::load_data(&cfg.data)?;
    if let Some(rs) = &reference {
        reference::check_features(data.dim, rs)?;
    }
    learning::fs::create_private_dir(&cfg.state_dir)?;
    let resolved = toml::to_string_pretty(cfg).map_err(|e| Error::config("(file)", e))?;
    learning::fs::atomic_write(&cfg.state_dir.join("node.resolved.toml"), resolved.as_bytes())?;
    let ckpt = cfg.state_dir.join("model");
    let model = if ckpt.with_extension("bpk").exists() {
        let m = Model::load(&ckpt, cfg.backend).map_err(|e| Error::config("state_dir", format!("checkpoint: {e}")))?;
        if m.architecture != cfg.model || m.input_dim != data.dim || m.classes < data.classes {
            return Err(Error::config(
                "model",
                "the checkpoint in state_dir was made with another architecture or data",
            ));
        }
        tracing::info!(path = %ckpt.display(), "resumed the model checkpoint");
        m
    } else {
        cfg.model.validate(data.dim, data.classes).map_err(|e| Error::config("model", e))?;
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
                budget::has_trained(&cfg.state_dir)?,
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
    let planned = budget.as_ref().map(budget::Budget::status).transpose()?.map(|s| s.steps_per_training);
    cfg.check_padding(data.len(), planned)?;
    Ok(Loaded { identity, data: Arc::new(data), model, budget, reference, answers })
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
        pad_steps: cfg.padding.map_or(0, |p| p.steps),
    };
    let (local_samples, features) = (loaded.data.len() as u64, loaded.data.dim);
    let (trainer, trainer_thread) =
        Trainer::start(loaded.model, loaded.data, settings, cfg.state_dir.join("model"), loaded.budget)?;
    let (telemetry, registry) = metrics::Metrics::new(aggregator);
    let net_cfg = net_config(&cfg, aggregator, trainer.classes(), telemetry.traffic.clone());
    let identity =
        Arc::new(protocol::Identity::from_seed(*loaded.identity.seed()).map_err(|e| Error::config("key", e))?);
    let (client, events, network) = net::spawn(loaded.identity, net_cfg, &shutdown)?;
    let board = status::Board::new(cfg.federation.as_str(), &aggregator, trainer.privacy()).with_meter(client.meter());
    let metrics_server = match cfg.metrics {
        Some(addr) => Some(
            net::http::Endpoint::new(addr, cfg.http.clone(), Arc::new(registry))
                .with_view(|| board.view())
                .serve(&shutdown)
                .await
                .map_err(|e| Error::config("metrics", net::error::Chain(&e)))?,
        ),
        None => None,
    };
    reachability::follow(client.reachability(), telemetry.reachability.clone(), cfg.state_dir.join(reachability::FILE));
    for addr in &cfg.listen {
        let bound = client.listen(addr.clone()).await?;
        tracing::info!(%bound, "listening, for a direct connection upgrade");
    }
    let session = Session {
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
        learnt: None,
        pending: None,
        summary: NodeSummary::default(),
        telemetry,
        board,
        in_flight: Default::default(),
        identity,
        secure: None,
    };
    let result = session.run(&shutdown).await;
    // Shutdown, in order: the network (it drains what is in flight), the metrics endpoint, then
    // the trainer's thread, once the last handle is gone and its last job has run.
    network.shutdown().await;
    if let Some(server) = metrics_server {
        server.shutdown().await;
    }
    let joined = trainer_thread.join().await;
    let summary = result?;
    joined?;
    Ok(summary)
}

/// The network's settings: only the aggregator (and the relay it is reached through) may
/// connect; every message sent is recorded in `state_dir/egress.jsonl`.
fn net_config(cfg: &NodeConfig, aggregator: ParticipantId, classes: usize, traffic: Traffic) -> NetConfig {
    let mut net_cfg = NetConfig::new(cfg.federation.clone(), vec![aggregator]);
    // Matrices the aggregator sends have this node's classes: caps the consensus at that width.
    net_cfg.limits.max_classes = classes as u32;
    net_cfg.ledger = Some(cfg.state_dir.join("egress.jsonl"));
    net_cfg.ledger_keeps_bytes = cfg.ledger.keep_bytes;
    net_cfg.through_relays(std::slice::from_ref(&cfg.aggregator));
    // Whether this node can be reached: asked of the aggregator, or of the relay this node
    // reaches it through (a peer answers only over a direct connection, where it sees whence
    // we came).
    let relays: Vec<_> =
        net::nat::relays(std::slice::from_ref(&cfg.aggregator)).iter().filter_map(net::participant).collect();
    net_cfg.autonat = Some(net::nat::AutoNat::new(if relays.is_empty() { vec![aggregator] } else { relays }));
    net_cfg.traffic = Some(traffic);
    net_cfg
}

/// The node's privacy budget: spent and left (`fd-node privacy status`). Reads the private data
/// for its row count (the sampling rate depends on it) and the ledger; writes nothing. Blocking.
pub fn privacy_status(cfg: &NodeConfig) -> Result<budget::Status, Error> {
    let Some(p) = &cfg.privacy else {
        return Err(Error::config(
            "privacy",
            "node.toml has no [privacy] section: this node trains without differential privacy",
        ));
    };
    let data = cfg.data.load().map_err(|e| Error::config("data", e))?;
    budget::status(p, &cfg.state_dir, data.len(), &cfg.train, cfg.planned_trainings())
}

/// Pins node.toml's ε and δ in the node's privacy ledger on purpose (`fd-node privacy repin`):
/// what was spent stays recorded and counts against the new budget. Blocking.
pub fn privacy_repin(cfg: &NodeConfig) -> Result<budget::Repinned, Error> {
    let Some(p) = &cfg.privacy else {
        return Err(Error::config("privacy", "node.toml has no [privacy] section: there is no budget to pin"));
    };
    budget::repin(p, &cfg.state_dir)
}

/// Exports the node's checkpointed model (`state_dir/model`) for use outside the federation:
/// `model.onnx` and `model.safetensors` (PyTorch layout) in `out`. The model stays on the
/// data holder's machine: this writes local files only. Returns the paths written.
pub fn export(cfg: &NodeConfig, out: &Path) -> Result<Vec<PathBuf>, Error> {
    let ckpt = cfg.state_dir.join("model");
    if !ckpt.with_extension("bpk").is_file() {
        return Err(Error::config(
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
