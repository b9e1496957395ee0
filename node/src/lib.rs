//! A federated-distillation node: trains a local model on private data and, each round, sends
//! only soft labels on the announced public reference samples to the aggregator.
//!
//! [`run`] is the whole node: load the config's key, data and model (or its checkpoint), start
//! the network ([`net`]), connect to the aggregator with backoff, make sure the public reference
//! set is present and matches the announced hash (fetching it in chunks if not), then answer
//! rounds until `shutdown` fires. Training runs on a blocking thread, never on the runtime.
//! Every message sent is recorded in `state_dir/egress.jsonl` before it leaves.
#![deny(missing_docs)]

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use learning::data::Dataset;
use learning::network::atomic_write;
use learning::train::{self, DistillConfig, DistillSet, TrainConfig};
use learning::Network;
use net::multiaddr::{Multiaddr, Protocol};
use net::{Event, NetConfig, Responder};
use protocol::{
    Consensus, FederationId, Hello, Limits, Message, ParticipantId, Receipt, ReceiptStatus, RefSetChunk, RefSetRequest,
    ReferenceSet, ReferenceSetId, RefusalReason, RoundAnnouncement, SoftLabels, Submission,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{Attack, NodeConfig};

/// Errors that stop a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A configuration field is wrong.
    #[error("config field `{field}`: {detail}")]
    Config {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Training or inference failed.
    #[error(transparent)]
    Learning(#[from] learning::LearningError),
    /// Network setup failed.
    #[error(transparent)]
    Net(#[from] net::NetError),
}

fn config_err(field: &'static str, detail: impl ToString) -> NodeError {
    NodeError::Config { field, detail: detail.to_string() }
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
    /// The round at which the node left on purpose (`simulation.leave_at_round`).
    pub left_at: Option<u64>,
    /// The aggregator declared the federation finished after this many rounds.
    pub finished_after: Option<u64>,
}

/// Validated, loaded inputs of a node.
struct Loaded {
    federation: FederationId,
    aggregator: ParticipantId,
    aggregator_addr: Multiaddr,
    identity: protocol::Identity,
    data: Arc<Dataset>,
    net: Network,
}

fn load(cfg: &NodeConfig) -> Result<Loaded, NodeError> {
    let federation = FederationId::new(cfg.federation.clone()).map_err(|e| config_err("federation", e))?;
    let identity = net::keys::read(&cfg.key).map_err(|e| config_err("key", e))?;
    let aggregator_addr: Multiaddr = cfg.aggregator.parse().map_err(|e| config_err("aggregator", format!("`{}`: {e}", cfg.aggregator)))?;
    let aggregator = match aggregator_addr.iter().last() {
        Some(Protocol::P2p(pid)) => net::participant(&pid).ok_or_else(|| config_err("aggregator", "the /p2p/ id is not an Ed25519 key"))?,
        _ => return Err(config_err("aggregator", "the address must end with /p2p/<aggregator peer id>")),
    };
    cfg.train.validate().map_err(|e| config_err("train", e))?;
    let data = cfg.data.load().map_err(|e| config_err("data", e))?;
    if data.is_empty() {
        return Err(config_err("data", "no rows"));
    }
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| config_err("state_dir", format!("{}: {e}", cfg.state_dir.display())))?;
    let ckpt = cfg.state_dir.join("model");
    let net = if ckpt.with_extension("bpk").exists() {
        let n = Network::load(&ckpt, cfg.backend).map_err(|e| config_err("state_dir", format!("checkpoint: {e}")))?;
        if n.architecture != cfg.model || n.input_dim != data.dim {
            return Err(config_err("model", "the checkpoint in state_dir was made with another architecture or data"));
        }
        tracing::info!(path = %ckpt.display(), "resumed the model checkpoint");
        n
    } else {
        cfg.model.validate(data.dim, data.classes).map_err(|e| config_err("model", e))?;
        Network::new(&cfg.model, data.dim, data.classes, cfg.backend, cfg.seed)?
    };
    Ok(Loaded { federation, aggregator, aggregator_addr, identity, data: Arc::new(data), net })
}

/// Runs the node until the aggregator declares the federation finished, or `shutdown` is cancelled.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<NodeSummary, NodeError> {
    let loaded = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || load(&cfg))
            .await
            .map_err(|e| config_err("data", format!("loading task failed: {e}")))??
    };
    let me = loaded.identity.id();
    tracing::info!(peer = %net::keys::peer_id_string(&me), rows = loaded.data.len(), "node starting");
    let mut net_cfg = NetConfig::new(loaded.federation.clone(), vec![loaded.aggregator]);
    net_cfg.ledger = Some(cfg.state_dir.join("egress.jsonl"));
    let (client, events, event_loop) = net::spawn(loaded.identity, net_cfg)?;
    let loop_task = tokio::spawn(event_loop.run());
    let mut node = Node {
        cfg,
        federation: loaded.federation,
        aggregator: loaded.aggregator,
        aggregator_addr: loaded.aggregator_addr,
        client,
        events,
        data: loaded.data,
        net: Some(loaded.net),
        reference: None,
        consensus: None,
        pending: None,
        summary: NodeSummary::default(),
        last_round: 0,
    };
    let result = node.main(shutdown).await;
    drop(node);
    let _ = loop_task.await;
    result
}

struct Node {
    cfg: NodeConfig,
    federation: FederationId,
    aggregator: ParticipantId,
    aggregator_addr: Multiaddr,
    client: net::Client,
    events: mpsc::Receiver<Event>,
    data: Arc<Dataset>,
    /// `None` while a training job holds it.
    net: Option<Network>,
    reference: Option<(ReferenceSetId, Arc<ReferenceSet>)>,
    /// Last consensus: the reference rows and their soft labels.
    consensus: Option<(Vec<u32>, Vec<f32>, f32)>,
    /// The newest announcement not yet worked on.
    pending: Option<RoundAnnouncement>,
    summary: NodeSummary,
    last_round: u64,
}

type Work = tokio::task::JoinHandle<(Network, Result<(RoundAnnouncement, SoftLabels), learning::LearningError>)>;

impl Node {
    async fn main(&mut self, shutdown: CancellationToken) -> Result<NodeSummary, NodeError> {
        let mut backoff = Duration::from_millis(200);
        'connect: loop {
            // Connect and join, with exponential backoff.
            let joined = tokio::select! {
                _ = shutdown.cancelled() => break 'connect,
                r = self.join() => r,
            };
            match joined {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot join the aggregator");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'connect,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue 'connect;
                }
            }
            let mut work: Option<Work> = None;
            loop {
                if work.is_none() {
                    if let Some(ann) = self.pending.take() {
                        if self.cfg.simulation.leave_at_round.is_some_and(|r| ann.round >= r) {
                            tracing::info!(round = ann.round, "leaving the federation (simulation)");
                            self.summary.left_at = Some(ann.round);
                            break 'connect;
                        }
                        work = Some(self.start_work(ann));
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.reclaim(&mut work).await;
                        break 'connect;
                    }
                    done = async { work.as_mut().expect("guarded").await }, if work.is_some() => {
                        work = None;
                        match done {
                            Ok((n, res)) => {
                                self.net = Some(n);
                                self.finish_work(res).await;
                            }
                            Err(e) => tracing::error!(error = %e, "training task failed"),
                        }
                    }
                    ev = self.events.recv() => match ev {
                        None => break 'connect,
                        Some(Event::Disconnected(p)) if p == self.aggregator => {
                            tracing::warn!("aggregator connection lost; reconnecting");
                            self.reclaim(&mut work).await;
                            continue 'connect;
                        }
                        Some(Event::Request { peer, message, responder }) => {
                            self.on_request(peer, message, responder).await;
                            if self.summary.finished_after.is_some() {
                                self.reclaim(&mut work).await;
                                self.linger(&shutdown).await;
                                break 'connect;
                            }
                        }
                        Some(Event::Refused { peer, reason, detail }) => tracing::warn!(peer = %peer.short(), ?reason, %detail, "refused a message"),
                        Some(_) => {}
                    }
                }
            }
        }
        self.save_checkpoint();
        Ok(self.summary.clone())
    }

    /// Waits for a training job in flight (whose result is dropped) and takes its model back.
    async fn reclaim(&mut self, work: &mut Option<Work>) {
        if let Some(w) = work.take() {
            if let Ok((n, _)) = w.await {
                self.net = Some(n);
            }
        }
    }

    /// After the federation is finished: lets the aggregator close the connection (so that the
    /// receipt just sent is read before the connection goes), for at most a few seconds.
    async fn linger(&mut self, shutdown: &CancellationToken) {
        let aggregator = self.aggregator;
        let closed = async {
            loop {
                match self.events.recv().await {
                    None => break,
                    Some(Event::Disconnected(p)) if p == aggregator => break,
                    Some(_) => {}
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::timeout(Duration::from_secs(5), closed) => {}
        }
    }

    async fn join(&mut self) -> Result<(), String> {
        let connected = self.client.connected().await.map_err(|e| e.to_string())?;
        if !connected.contains(&self.aggregator) {
            self.client.dial(self.aggregator_addr.clone()).await.map_err(|e| e.to_string())?;
        }
        let hello = Message::Hello(Hello {
            federation: self.federation.clone(),
            participant: self.client.id(),
            protocol_version: protocol::PROTOCOL_VERSION,
            agent: format!("fd-node/{}", env!("CARGO_PKG_VERSION")),
        });
        let accepted = match self.client.request(&self.aggregator, &hello).await.map_err(|e| e.to_string())? {
            Message::JoinReply(r) => match r.outcome {
                Ok(a) => a,
                Err(reason) => return Err(format!("join refused: {reason:?} ({})", r.detail)),
            },
            Message::Receipt(r) => return Err(format!("join refused: {:?} ({})", r.status, r.detail)),
            other => return Err(format!("unexpected answer to hello: {:?}", other.kind())),
        };
        let classes = self.net.as_ref().map_or(0, |n| n.classes);
        if accepted.classes as usize != classes && classes != 0 {
            return Err(format!("the federation predicts {} classes, this node's model {classes}", accepted.classes));
        }
        self.ensure_reference(accepted.reference_set).await?;
        self.summary.joins += 1;
        tracing::info!(round = accepted.current_round, "joined the federation");
        Ok(())
    }

    /// Uses the local reference file if its hash matches, else fetches it in chunks.
    async fn ensure_reference(&mut self, id: ReferenceSetId) -> Result<(), String> {
        if self.reference.as_ref().is_some_and(|(have, _)| *have == id) {
            return Ok(());
        }
        let path = self.cfg.reference.clone();
        if let Ok(bytes) = std::fs::read(&path) {
            if ReferenceSetId::digest(&bytes) == id {
                let rs = ReferenceSet::from_bytes(&bytes, usize::MAX).map_err(|e| format!("{}: {e}", path.display()))?;
                self.set_reference(id, rs)?;
                return Ok(());
            }
            tracing::warn!(path = %path.display(), "local reference set does not match the announced hash; fetching it");
        }
        let mut buf: Vec<u8> = Vec::new();
        let chunk = 1u32 << 20;
        loop {
            let req = Message::RefSetRequest(RefSetRequest { federation: self.federation.clone(), reference_set: id, offset: buf.len() as u64, len: chunk });
            match self.client.request(&self.aggregator, &req).await.map_err(|e| e.to_string())? {
                Message::RefSetChunk(RefSetChunk { offset, total_len, data, reference_set, .. }) => {
                    if reference_set != id || offset != buf.len() as u64 || total_len > (4u64 << 30) || data.is_empty() && (buf.len() as u64) < total_len {
                        return Err("inconsistent reference-set chunk".into());
                    }
                    buf.extend_from_slice(&data);
                    if buf.len() as u64 >= total_len {
                        break;
                    }
                }
                other => return Err(format!("unexpected answer to a chunk request: {:?}", other.kind())),
            }
        }
        if ReferenceSetId::digest(&buf) != id {
            return Err("fetched reference set does not match its hash".into());
        }
        let rs = ReferenceSet::from_bytes(&buf, usize::MAX).map_err(|e| e.to_string())?;
        atomic_write(&path, &buf).map_err(|e| e.to_string())?;
        tracing::info!(bytes = buf.len(), path = %path.display(), "fetched the reference set");
        self.set_reference(id, rs)
    }

    fn set_reference(&mut self, id: ReferenceSetId, rs: ReferenceSet) -> Result<(), String> {
        if rs.features != self.data.dim {
            return Err(format!("reference inputs have {} features, private data {}", rs.features, self.data.dim));
        }
        self.reference = Some((id, Arc::new(rs)));
        Ok(())
    }

    async fn on_request(&mut self, peer: ParticipantId, message: Message, responder: Responder) {
        let (round, status, detail) = match message {
            _ if peer != self.aggregator => (0, ReceiptStatus::Refused(RefusalReason::NotOnRoster), "only the aggregator may send requests".to_string()),
            Message::RoundAnnouncement(ann) => {
                let round = ann.round;
                match self.check_announcement(&ann) {
                    Ok(()) => {
                        tracing::info!(round, samples = ann.selection.len(), "round announced");
                        if self.pending.as_ref().is_none_or(|p| p.round < ann.round) {
                            self.pending = Some(ann);
                        }
                        (round, ReceiptStatus::Accepted, String::new())
                    }
                    Err((reason, detail)) => (round, ReceiptStatus::Refused(reason), detail),
                }
            }
            Message::Consensus(c) => {
                let round = c.round;
                match self.take_consensus(c) {
                    Ok(()) => (round, ReceiptStatus::Accepted, String::new()),
                    Err((reason, detail)) => (round, ReceiptStatus::Refused(reason), detail),
                }
            }
            Message::Finished(f) if f.federation == self.federation => {
                tracing::info!(rounds = f.rounds, detail = %f.detail, "the aggregator finished the federation");
                self.summary.finished_after = Some(f.rounds);
                (f.rounds, ReceiptStatus::Accepted, String::new())
            }
            other => (other.round().unwrap_or(0), ReceiptStatus::Refused(RefusalReason::Unavailable), format!("a node does not serve {:?}", other.kind())),
        };
        if let ReceiptStatus::Refused(reason) = status {
            tracing::warn!(round, ?reason, %detail, "refusing a request");
        }
        let receipt = Message::Receipt(Receipt { federation: self.federation.clone(), round, status, detail });
        if let Err(e) = responder.respond(receipt).await {
            tracing::warn!(error = %e, "could not answer");
        }
    }

    fn check_announcement(&self, ann: &RoundAnnouncement) -> Result<(), (RefusalReason, String)> {
        let Some((id, rs)) = &self.reference else {
            return Err((RefusalReason::Unavailable, "no reference set yet".into()));
        };
        if ann.reference_set != *id {
            return Err((RefusalReason::WrongReferenceSet, format!("announced {} but this node holds {id}", ann.reference_set)));
        }
        if ann.reference_samples as usize != rs.samples {
            return Err((RefusalReason::WrongShape, "reference sample count differs".into()));
        }
        if ann.classes as usize != self.data.classes.max(self.net.as_ref().map_or(0, |n| n.classes)) {
            return Err((RefusalReason::WrongShape, format!("{} classes announced", ann.classes)));
        }
        ann.selection.resolve(ann.reference_samples).map_err(|e| (RefusalReason::WrongShape, e.to_string()))?;
        Ok(())
    }

    fn take_consensus(&mut self, c: Consensus) -> Result<(), (RefusalReason, String)> {
        let Some((id, rs)) = &self.reference else {
            return Err((RefusalReason::Unavailable, "no reference set yet".into()));
        };
        if c.reference_set != *id {
            return Err((RefusalReason::WrongReferenceSet, "consensus for another reference set".into()));
        }
        let rows = c.selection.resolve(rs.samples as u32).map_err(|e| (RefusalReason::WrongShape, e.to_string()))?;
        let probs = c.labels.decode(&Limits::default()).map_err(|e| (e.refusal_reason(), e.to_string()))?;
        if rows.len() != c.labels.samples as usize {
            return Err((RefusalReason::WrongShape, "selection and labels differ in length".into()));
        }
        // Masked samples (weight 0) are dropped from the digest.
        let keep: Vec<usize> = (0..rows.len()).filter(|&i| c.weights[i] > 0).collect();
        let classes = c.labels.classes as usize;
        let rows: Vec<u32> = keep.iter().map(|&i| rows[i]).collect();
        let probs: Vec<f32> = keep.iter().flat_map(|&i| probs[i * classes..(i + 1) * classes].iter().copied()).collect();
        tracing::info!(round = c.round, samples = rows.len(), participants = c.participants, "consensus received");
        self.consensus = Some((rows, probs, c.temperature));
        self.summary.consensus_received += 1;
        Ok(())
    }

    fn start_work(&mut self, ann: RoundAnnouncement) -> Work {
        let mut net = self.net.take().expect("the network is home when no work runs");
        let data = self.data.clone();
        let reference = self.reference.as_ref().expect("checked on announcement").1.clone();
        let consensus = self.consensus.clone();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let seed = cfg.seed ^ ann.round.wrapping_mul(0x9E37_79B9);
            let res = (|| {
                if cfg.digest.enabled {
                    if let Some((rows, probs, t)) = &consensus {
                        let inputs: Vec<f32> = rows.iter().flat_map(|&r| reference.row(r as usize).iter().copied()).collect();
                        let dcfg = DistillConfig {
                            temperature: *t,
                            train: TrainConfig {
                                epochs: cfg.digest.epochs,
                                learning_rate: cfg.digest.learning_rate,
                                batch_size: cfg.digest.batch_size,
                                ..cfg.train.clone()
                            },
                            ..Default::default()
                        };
                        if !rows.is_empty() {
                            train::distill(&mut net, DistillSet { inputs: &inputs, targets: probs, weights: None, labels: None }, &dcfg, seed)?;
                        }
                    }
                }
                train::fit(&mut net, &data, &cfg.train, seed)?;
                let rows = ann.selection.resolve(ann.reference_samples).map_err(|e| learning::LearningError::Shape(e.to_string()))?;
                let inputs: Vec<f32> = rows.iter().flat_map(|&r| reference.row(r as usize).iter().copied()).collect();
                let mut probs = match cfg.simulation.attack {
                    Attack::Scaled => {
                        let z = net.logits(&inputs, 256)?;
                        learning::network::softmax_rows(&z, net.classes, ann.temperature / 10.0)
                    }
                    _ => net.soft_labels(&inputs, ann.temperature, 256)?,
                };
                corrupt(&mut probs, net.classes, cfg.simulation.attack, seed);
                let labels = SoftLabels::encode(&probs, rows.len(), net.classes, ann.encoding)
                    .map_err(|e| learning::LearningError::Shape(e.to_string()))?;
                if cfg.simulation.delay_ms > 0 {
                    std::thread::sleep(Duration::from_millis(cfg.simulation.delay_ms));
                }
                Ok((ann, labels))
            })();
            (net, res)
        })
    }

    async fn finish_work(&mut self, res: Result<(RoundAnnouncement, SoftLabels), learning::LearningError>) {
        let (ann, labels) = match res {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "local round failed");
                return;
            }
        };
        self.save_checkpoint();
        let sub = Message::Submission(Submission {
            federation: self.federation.clone(),
            round: ann.round,
            reference_set: ann.reference_set,
            temperature: ann.temperature,
            local_samples: self.data.len() as u64,
            labels,
        });
        match self.client.request(&self.aggregator, &sub).await {
            Ok(Message::Receipt(r)) => match r.status {
                ReceiptStatus::Accepted => {
                    tracing::info!(round = ann.round, "submission accepted");
                    self.summary.accepted_rounds.push(ann.round);
                    self.last_round = ann.round;
                }
                ReceiptStatus::Refused(reason) => {
                    tracing::warn!(round = ann.round, ?reason, detail = %r.detail, "submission refused");
                    self.summary.refused_rounds.push((ann.round, reason));
                }
            },
            Ok(other) => tracing::warn!(kind = ?other.kind(), "unexpected answer to a submission"),
            Err(e) => tracing::warn!(round = ann.round, error = %e, "submission failed"),
        }
    }

    fn save_checkpoint(&self) {
        if let Some(net) = &self.net {
            if let Err(e) = net.save(&self.cfg.state_dir.join("model")) {
                tracing::error!(error = %e, "could not save the model checkpoint");
            }
        }
    }
}

/// Exports the node's checkpointed model (`state_dir/model`) for use outside the federation:
/// `model.onnx` and `model.safetensors` (PyTorch layout) in `out`. The model stays on the
/// data holder's machine: this writes local files only. Returns the paths written.
pub fn export(cfg: &NodeConfig, out: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let ckpt = cfg.state_dir.join("model");
    if !ckpt.with_extension("bpk").is_file() {
        return Err(config_err("state_dir", format!("no model checkpoint at {}; run the node first", ckpt.with_extension("bpk").display())));
    }
    let net = Network::load(&ckpt, cfg.backend)?;
    let (onnx, safetensors) = (out.join("model.onnx"), out.join("model.safetensors"));
    net.export_onnx(&onnx)?;
    net.export_safetensors(&safetensors)?;
    Ok(vec![onnx, safetensors])
}

/// Applies a simulated attack to honest probabilities.
fn corrupt(probs: &mut [f32], classes: usize, attack: Attack, seed: u64) {
    match attack {
        Attack::None | Attack::Scaled => {}
        Attack::Uniform => probs.iter_mut().for_each(|p| *p = 1.0 / classes as f32),
        Attack::LabelFlip => {
            for row in probs.chunks_exact_mut(classes) {
                row.reverse();
            }
        }
        Attack::Random => {
            let mut state = seed | 1;
            for row in probs.chunks_exact_mut(classes) {
                for p in row.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *p = (state % 10_000) as f32 + 1.0;
                }
                let s: f32 = row.iter().sum();
                row.iter_mut().for_each(|p| *p /= s);
            }
        }
    }
}

/// Writes a new key file and returns the PeerId to put in the aggregator's roster.
pub fn keygen(path: &Path) -> anyhow::Result<String> {
    let id = net::keys::generate(path)?;
    Ok(net::keys::peer_id_string(&id.id()))
}
