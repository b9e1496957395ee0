//! The federated-distillation aggregator.
//!
//! [`Aggregator::start`] validates the config (naming the field at fault), loads the reference
//! set and checks its hash, restores the last checkpoint and binds the network. [`Aggregator::run`]
//! then drives the rounds: announce → collect validated, signed submissions ([`round`]) →
//! consensus → distil the global student (on a blocking thread) → evaluate it → send the
//! consensus → checkpoint atomically → one log line. A restart with the same output folder
//! resumes after the last completed round.
//!
//! Output folder layout: `state.json` (the commit point: last completed round),
//! `checkpoints/round-N/` (global model and distillation pool of round N), `metrics.jsonl` and
//! `metrics.csv` (one row per round), and at the end `global.bpk`/`global.json`/
//! `global.safetensors`/`global.onnx` and `report.md`.
#![deny(missing_docs)]

pub mod config;
pub mod round;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use learning::data::Dataset;
use learning::eval;
use learning::network::atomic_write;
use learning::train::{self, DistillSet};
use learning::Network;
use net::multiaddr::Multiaddr;
use net::{Event, NetConfig, Responder};
use protocol::{
    Consensus, Encoding, FederationId, Finished, Identity, JoinAccepted, JoinReply, Limits, Message, ParticipantId, Receipt,
    ReceiptStatus, RefSetChunk, ReferenceSet, ReferenceSetId, RefusalReason, RoundAnnouncement, SampleSelection,
    SoftLabels,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::AggregatorConfig;
use round::RoundState;

/// Errors that stop the aggregator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AggError {
    /// A configuration field is wrong.
    #[error("config field `{field}`: {detail}")]
    Config {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The checkpoint in the output folder cannot be used.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Training or inference failed.
    #[error(transparent)]
    Learning(#[from] learning::LearningError),
    /// Network failure.
    #[error(transparent)]
    Net(#[from] net::NetError),
}

fn config_err(field: &'static str, detail: impl ToString) -> AggError {
    AggError::Config { field, detail: detail.to_string() }
}

/// Metrics of one completed round (a line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Round number.
    pub round: u64,
    /// Names of the nodes whose soft labels made the consensus.
    pub participants: Vec<String>,
    /// Bytes received during the round (encoded envelopes).
    pub bytes_in: u64,
    /// Bytes sent during the round.
    pub bytes_out: u64,
    /// Reference samples announced.
    pub samples: usize,
    /// Samples masked out of the consensus.
    pub masked: usize,
    /// Global model accuracy on the validation set, if any.
    pub accuracy: Option<f32>,
    /// Global model NLL on the validation set, if any.
    pub nll: Option<f32>,
    /// Agreement of the global model with the consensus on this round's samples.
    pub agreement: f32,
    /// Wall-clock seconds of the round, announcement to checkpoint.
    pub seconds: f64,
}

/// Crash-safe commit point of the output folder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    completed_round: u64,
    reference_set: String,
}

/// Latest consensus probabilities per reference row: what the global student distils from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Pool {
    rows: BTreeMap<u32, Vec<f32>>,
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Metrics of every completed round, resumed ones included.
    pub rounds: Vec<RoundMetrics>,
    /// Path of the global model (without extension).
    pub model: PathBuf,
    /// Whether the run completed all rounds (false if it was shut down early).
    pub completed: bool,
}

/// A bound, ready-to-run aggregator.
pub struct Aggregator {
    cfg: AggregatorConfig,
    federation: FederationId,
    roster: HashMap<ParticipantId, String>,
    reference: Arc<ReferenceSet>,
    reference_bytes: Arc<Vec<u8>>,
    reference_id: ReferenceSetId,
    encoding: Encoding,
    validation: Option<Arc<Dataset>>,
    client: net::Client,
    events: mpsc::Receiver<Event>,
    loop_task: tokio::task::JoinHandle<()>,
    listen_addrs: Vec<Multiaddr>,
    student: Option<Network>,
    pool: Pool,
    metrics: Vec<RoundMetrics>,
    completed: u64,
    joined: HashSet<ParticipantId>,
    progress: Option<mpsc::Sender<RoundMetrics>>,
    limits: Limits,
    /// Requests sent in the background (announcements, consensus), awaited before shutdown.
    sends: tokio::task::JoinSet<()>,
}

impl Aggregator {
    /// Validates the config, loads inputs and the checkpoint, binds the listen addresses.
    pub async fn start(cfg: AggregatorConfig) -> Result<Self, AggError> {
        let federation = FederationId::new(cfg.federation.clone()).map_err(|e| config_err("federation", e))?;
        let identity: Identity = net::keys::read(&cfg.key).map_err(|e| config_err("key", e))?;
        if cfg.roster.is_empty() {
            return Err(config_err("roster", "no nodes"));
        }
        let mut roster = HashMap::new();
        for entry in &cfg.roster {
            let id = net::keys::parse_peer_id(&entry.peer_id).map_err(|e| config_err("roster", format!("{}: {e}", entry.name)))?;
            if id == identity.id() {
                return Err(config_err("roster", format!("{} has the aggregator's own key", entry.name)));
            }
            roster.insert(id, entry.name.clone());
        }
        if cfg.round.quorum == 0 || cfg.round.quorum > roster.len() {
            return Err(config_err("round.quorum", format!("{} is not between 1 and the roster size {}", cfg.round.quorum, roster.len())));
        }
        if !(cfg.round.deadline_secs.is_finite() && cfg.round.deadline_secs > 0.0) {
            return Err(config_err("round.deadline_secs", "must be positive"));
        }
        if !(cfg.round.temperature.is_finite() && cfg.round.temperature > 0.0) {
            return Err(config_err("round.temperature", "must be positive"));
        }
        let encoding = Encoding::parse(&cfg.round.encoding).map_err(|e| config_err("round.encoding", e))?;
        cfg.consensus.validate().map_err(|e| config_err("consensus", e))?;
        cfg.student.distill.validate().map_err(|e| config_err("student.distill", e))?;
        let expected = ReferenceSetId::from_hex(&cfg.reference.sha256).map_err(|e| config_err("reference.sha256", e))?;
        let bytes = std::fs::read(&cfg.reference.path).map_err(|e| config_err("reference.path", format!("{}: {e}", cfg.reference.path.display())))?;
        let reference_id = ReferenceSetId::digest(&bytes);
        if reference_id != expected {
            return Err(config_err("reference.sha256", format!("{} has SHA-256 {reference_id}, the config expects {expected}", cfg.reference.path.display())));
        }
        let reference = ReferenceSet::from_bytes(&bytes, usize::MAX).map_err(|e| config_err("reference.path", e))?;
        if cfg.round.samples == 0 || cfg.round.samples as usize > reference.samples {
            return Err(config_err("round.samples", format!("{} samples from a reference set of {}", cfg.round.samples, reference.samples)));
        }
        cfg.student.architecture.validate(reference.features, cfg.classes).map_err(|e| config_err("student.architecture", e))?;
        let validation = match &cfg.validation {
            Some(spec) => {
                let d = spec.load().map_err(|e| config_err("validation", e))?;
                if d.dim != reference.features || d.classes > cfg.classes {
                    return Err(config_err("validation", "its features or classes do not match the reference set and `classes`"));
                }
                Some(Arc::new(d))
            }
            None => None,
        };
        std::fs::create_dir_all(&cfg.output).map_err(|e| config_err("output", format!("{}: {e}", cfg.output.display())))?;

        let mut agg_net = NetConfig::new(federation.clone(), roster.keys().copied().collect());
        agg_net.request_timeout = Duration::from_secs(120);
        let limits = agg_net.limits;
        let (client, events, event_loop) = net::spawn(identity, agg_net)?;
        let loop_task = tokio::spawn(event_loop.run());
        let mut listen_addrs = Vec::new();
        for a in &cfg.listen {
            let addr: Multiaddr = a.parse().map_err(|e| config_err("listen", format!("`{a}`: {e}")))?;
            listen_addrs.push(client.listen(addr).await.map_err(|e| config_err("listen", e))?);
        }
        let mut agg = Self {
            federation,
            roster,
            reference: Arc::new(reference),
            reference_bytes: Arc::new(bytes),
            reference_id,
            encoding,
            validation,
            client,
            events,
            loop_task,
            listen_addrs,
            student: None,
            pool: Pool::default(),
            metrics: Vec::new(),
            completed: 0,
            joined: HashSet::new(),
            progress: None,
            limits,
            sends: tokio::task::JoinSet::new(),
            cfg,
        };
        agg.restore()?;
        tracing::info!(
            peer = %net::keys::peer_id_string(&agg.client.id()),
            addrs = ?agg.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            resume_after = agg.completed,
            "aggregator listening"
        );
        Ok(agg)
    }

    /// The bound addresses (with real ports).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The aggregator's id.
    pub fn id(&self) -> ParticipantId {
        self.client.id()
    }

    /// Sends each round's metrics to `tx` as it completes (dropped if the receiver lags).
    pub fn set_progress(&mut self, tx: mpsc::Sender<RoundMetrics>) {
        self.progress = Some(tx);
    }

    fn restore(&mut self) -> Result<(), AggError> {
        let out = &self.cfg.output;
        let state_path = out.join("state.json");
        let Ok(text) = std::fs::read(&state_path) else { return Ok(()) };
        let state: State = serde_json::from_slice(&text).map_err(|e| AggError::Checkpoint(format!("{}: {e}", state_path.display())))?;
        if state.reference_set != self.reference_id.to_hex() {
            return Err(AggError::Checkpoint("the output folder belongs to a run with another reference set".into()));
        }
        let dir = round_dir(out, state.completed_round);
        let student = Network::load(&dir.join("global"), self.cfg.backend).map_err(|e| AggError::Checkpoint(e.to_string()))?;
        let pool_bytes = std::fs::read(dir.join("pool.bin")).map_err(|e| AggError::Checkpoint(format!("pool: {e}")))?;
        self.pool = protocol::codec::from_bytes(&pool_bytes, protocol::codec::MAX_MESSAGE_BYTES).map_err(|e| AggError::Checkpoint(format!("pool: {e}")))?;
        self.metrics = read_metrics(&out.join("metrics.jsonl"))?.into_iter().filter(|m| m.round <= state.completed_round).collect();
        self.student = Some(student);
        self.completed = state.completed_round;
        Ok(())
    }

    /// Runs the remaining rounds, then writes the final outputs.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, AggError> {
        let result = self.rounds(&shutdown).await;
        let summary = match result {
            Ok(completed) => {
                if completed {
                    self.finish()?;
                    // Tell the nodes, so that they checkpoint and stop instead of waiting for
                    // a round that will not come.
                    let done = Message::Finished(Finished {
                        federation: self.federation.clone(),
                        rounds: self.completed,
                        detail: format!("{} rounds; global model written", self.completed),
                    });
                    self.deliver(&done).await;
                }
                Ok(RunSummary { rounds: self.metrics.clone(), model: self.cfg.output.join("global"), completed })
            }
            Err(e) => Err(e),
        };
        // Let the last consensus reach the nodes before the network goes down.
        let drain = async { while self.sends.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        drop(self.client);
        drop(self.events);
        let _ = self.loop_task.await;
        summary
    }

    async fn rounds(&mut self, shutdown: &CancellationToken) -> Result<bool, AggError> {
        for round in self.completed + 1..=self.cfg.rounds {
            let started = std::time::Instant::now();
            let (sent0, recv0) = self.client.traffic();
            let ann = self.announcement(round);
            let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.round.deadline_secs);
            let mut state = RoundState::new(ann.clone(), self.roster.keys().copied().collect(), self.cfg.round.quorum, deadline, self.cfg.consensus.clone());
            for peer in self.joined.clone() {
                self.send(peer, Message::RoundAnnouncement(ann.clone()));
            }
            tracing::info!(round, joined = self.joined.len(), samples = ann.selection.len(), "round open");
            // Collect.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                if state.ready(Instant::now()) {
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    ev = self.events.recv() => match ev {
                        Some(ev) => self.on_event(ev, &mut state).await,
                        None => return Err(AggError::Net(net::NetError::Stopped)),
                    },
                    _ = tick.tick() => {}
                }
            }
            let combined = state.close().map_err(AggError::Checkpoint)?;
            let participants = state.participants();
            // Distil off the runtime; late submissions are answered meanwhile.
            let rows = ann.selection.resolve(ann.reference_samples).map_err(|e| AggError::Checkpoint(e.to_string()))?;
            for (i, &r) in rows.iter().enumerate() {
                if combined.weights[i] > 0.0 {
                    self.pool.rows.insert(r, combined.probs[i * self.cfg.classes..(i + 1) * self.cfg.classes].to_vec());
                }
            }
            let job = self.distil_job(round, &rows, &combined.probs);
            let mut job = std::pin::pin!(job);
            let (student, agreement, metrics) = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    res = &mut job => break res.map_err(|e| AggError::Checkpoint(e.to_string()))??,
                    ev = self.events.recv() => if let Some(ev) = ev { self.on_event(ev, &mut state).await },
                }
            };
            self.student = Some(student);
            // Send the consensus to every joined node.
            let labels = SoftLabels::encode(&combined.probs, rows.len(), self.cfg.classes, self.encoding).map_err(|e| AggError::Checkpoint(e.to_string()))?;
            let consensus = Message::Consensus(Consensus {
                federation: self.federation.clone(),
                round,
                reference_set: self.reference_id,
                selection: ann.selection.clone(),
                temperature: ann.temperature,
                labels,
                weights: Consensus::quantise_weights(&combined.weights),
                participants: participants.len() as u32,
            });
            // Wait for the nodes' receipts so that every node holds this consensus before the
            // next round is announced: its digest step is then the same whatever the timing.
            self.deliver(&consensus).await;
            let (sent1, recv1) = self.client.traffic();
            let m = RoundMetrics {
                round,
                participants: {
                    let mut names: Vec<String> = participants.iter().map(|p| self.name(p)).collect();
                    names.sort();
                    names
                },
                bytes_in: recv1 - recv0,
                bytes_out: sent1 - sent0,
                samples: rows.len(),
                masked: combined.weights.iter().filter(|w| **w == 0.0).count(),
                accuracy: metrics.as_ref().map(|m| m.accuracy),
                nll: metrics.as_ref().map(|m| m.nll),
                agreement,
                seconds: started.elapsed().as_secs_f64(),
            };
            self.checkpoint(&m)?;
            tracing::info!(
                round,
                participants = m.participants.len(),
                bytes_in = m.bytes_in,
                bytes_out = m.bytes_out,
                accuracy = m.accuracy.map(|a| format!("{:.4}", a)).unwrap_or_else(|| "-".into()),
                seconds = format!("{:.2}", m.seconds),
                "round complete"
            );
            if let Some(tx) = &self.progress {
                let _ = tx.try_send(m.clone());
            }
            self.metrics.push(m);
            self.completed = round;
        }
        Ok(true)
    }

    fn announcement(&self, round: u64) -> RoundAnnouncement {
        let deadline_ms = net::ledger::now_ms() + (self.cfg.round.deadline_secs * 1000.0) as u64;
        RoundAnnouncement {
            federation: self.federation.clone(),
            round,
            reference_set: self.reference_id,
            reference_samples: self.reference.samples as u32,
            selection: SampleSelection::Seeded { seed: self.cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round, count: self.cfg.round.samples },
            classes: self.cfg.classes as u32,
            temperature: self.cfg.round.temperature,
            deadline_unix_ms: deadline_ms,
            encoding: self.encoding,
        }
    }

    /// Distils the global student on the pool; returns it, its agreement with this round's
    /// consensus, and its validation metrics.
    fn distil_job(&mut self, round: u64, rows: &[u32], probs: &[f32]) -> tokio::task::JoinHandle<Result<(Network, f32, Option<eval::Metrics>), AggError>> {
        let cfg = self.cfg.clone();
        let reference = self.reference.clone();
        let validation = self.validation.clone();
        let prev = if cfg.student.warm_start { self.student.take() } else { None };
        let pool: Vec<(u32, Vec<f32>)> = self.pool.rows.iter().map(|(k, v)| (*k, v.clone())).collect();
        let rows = rows.to_vec();
        let probs = probs.to_vec();
        tokio::task::spawn_blocking(move || {
            let seed = cfg.seed ^ round.wrapping_mul(0x5851_F42D_4C95_7F2D);
            let mut student = match prev {
                Some(s) => s,
                None => Network::new(&cfg.student.architecture, reference.features, cfg.classes, cfg.backend, seed)?,
            };
            let inputs: Vec<f32> = pool.iter().flat_map(|(r, _)| reference.row(*r as usize).iter().copied()).collect();
            let targets: Vec<f32> = pool.iter().flat_map(|(_, p)| p.iter().copied()).collect();
            let mut dcfg = cfg.student.distill.clone();
            dcfg.temperature = cfg.round.temperature;
            if !pool.is_empty() {
                train::distill(&mut student, DistillSet { inputs: &inputs, targets: &targets, weights: None, labels: None }, &dcfg, seed)?;
            }
            let round_inputs: Vec<f32> = rows.iter().flat_map(|&r| reference.row(r as usize).iter().copied()).collect();
            let sp = student.soft_labels(&round_inputs, 1.0, 256)?;
            let agreement = eval::agreement(&sp, &probs, cfg.classes);
            let metrics = match &validation {
                Some(v) => Some(eval::evaluate(&student.soft_labels(&v.features, 1.0, 256)?, &v.labels, cfg.classes)),
                None => None,
            };
            Ok((student, agreement, metrics))
        })
    }

    /// Writes the round's checkpoint, then commits it by rewriting `state.json`.
    fn checkpoint(&self, m: &RoundMetrics) -> Result<(), AggError> {
        let out = &self.cfg.output;
        let dir = round_dir(out, m.round);
        let ck = |e: learning::LearningError| AggError::Checkpoint(e.to_string());
        self.student.as_ref().expect("distilled").save(&dir.join("global")).map_err(ck)?;
        let pool = protocol::codec::to_bytes(&self.pool).map_err(|e| AggError::Checkpoint(e.to_string()))?;
        atomic_write(&dir.join("pool.bin"), &pool).map_err(ck)?;
        let mut all = self.metrics.clone();
        all.push(m.clone());
        let mut jsonl = String::new();
        for r in &all {
            jsonl.push_str(&serde_json::to_string(r).map_err(|e| AggError::Checkpoint(e.to_string()))?);
            jsonl.push('\n');
        }
        atomic_write(&out.join("metrics.jsonl"), jsonl.as_bytes()).map_err(ck)?;
        atomic_write(&out.join("metrics.csv"), metrics_csv(&all).as_bytes()).map_err(ck)?;
        let state = State { completed_round: m.round, reference_set: self.reference_id.to_hex() };
        atomic_write(&out.join("state.json"), &serde_json::to_vec_pretty(&state).map_err(|e| AggError::Checkpoint(e.to_string()))?).map_err(ck)?;
        // Keep the committed round and the one before it.
        if m.round > 2 {
            let _ = std::fs::remove_dir_all(round_dir(out, m.round - 2));
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), AggError> {
        let out = &self.cfg.output;
        let Some(student) = &self.student else { return Ok(()) };
        let ck = |e: learning::LearningError| AggError::Checkpoint(e.to_string());
        student.save(&out.join("global")).map_err(ck)?;
        student.export_safetensors(&out.join("global.safetensors")).map_err(ck)?;
        student.export_onnx(&out.join("global.onnx")).map_err(ck)?;
        let facts = eval::ModelFacts::of(student).map_err(ck)?;
        let mut r = String::new();
        let _ = writeln!(r, "# Federation `{}`: {} rounds\n", self.federation, self.metrics.len());
        let _ = writeln!(r, "Global model: {} — {} parameters, {} bytes, {:.1} µs/sample at batch 1, {:.2} µs/sample at batch 256.\n", facts.architecture, facts.parameters, facts.bytes, facts.latency_us_batch1, facts.latency_us_batch256);
        let _ = writeln!(r, "| round | participants | bytes in | bytes out | accuracy | agreement | seconds |\n|---|---|---|---|---|---|---|");
        for m in &self.metrics {
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} | {:.3} | {:.2} |",
                m.round,
                m.participants.len(),
                m.bytes_in,
                m.bytes_out,
                m.accuracy.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into()),
                m.agreement,
                m.seconds
            );
        }
        atomic_write(&out.join("report.md"), r.as_bytes()).map_err(ck)?;
        Ok(())
    }

    /// Sends `message` to every joined node and waits for their receipts, at most one round
    /// deadline: a node that does not answer in time does not hold up the federation.
    async fn deliver(&self, message: &Message) {
        let mut deliveries = tokio::task::JoinSet::new();
        for peer in self.joined.iter().copied() {
            let client = self.client.clone();
            let msg = message.clone();
            deliveries.spawn(async move { (peer, client.request(&peer, &msg).await) });
        }
        let wait = Duration::from_secs_f64(self.cfg.round.deadline_secs);
        let collected = tokio::time::timeout(wait, async {
            let mut failed = Vec::new();
            while let Some(done) = deliveries.join_next().await {
                match done {
                    Ok((peer, Err(e))) => failed.push((peer, e.to_string())),
                    Ok((peer, Ok(Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, .. })))) => {
                        failed.push((peer, format!("refused: {reason:?} {detail}")))
                    }
                    _ => {}
                }
            }
            failed
        })
        .await;
        let kind = message.kind();
        match collected {
            Ok(failed) => {
                for (peer, e) in failed {
                    tracing::warn!(node = %self.name(&peer), ?kind, error = %e, "not delivered");
                }
            }
            Err(_) => tracing::warn!(?kind, pending = deliveries.len(), "delivery still pending at the deadline; continuing"),
        }
        deliveries.detach_all();
    }

    /// Sends a request in the background and logs a failure.
    fn send(&mut self, peer: ParticipantId, message: Message) {
        let client = self.client.clone();
        while self.sends.try_join_next().is_some() {}
        self.sends.spawn(async move {
            match client.request(&peer, &message).await {
                Ok(Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, .. })) => {
                    tracing::warn!(peer = %peer.short(), kind = ?message.kind(), ?reason, %detail, "node refused");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(peer = %peer.short(), kind = ?message.kind(), error = %e, "send failed"),
            }
        });
    }

    async fn on_event(&mut self, ev: Event, state: &mut RoundState) {
        match ev {
            Event::Request { peer, message, responder } => self.on_request(peer, message, responder, state).await,
            Event::Disconnected(p) => {
                if self.joined.remove(&p) {
                    tracing::info!(node = %self.name(&p), "node left");
                }
            }
            Event::Refused { peer, reason, detail } => tracing::warn!(node = %self.name(&peer), ?reason, %detail, "message refused"),
            Event::Denied { peer, detail } => tracing::warn!(peer = ?peer, %detail, "connection refused"),
            Event::Connected(_) => {}
        }
    }

    fn name(&self, p: &ParticipantId) -> String {
        self.roster.get(p).cloned().unwrap_or_else(|| p.short())
    }

    async fn on_request(&mut self, peer: ParticipantId, message: Message, responder: Responder, state: &mut RoundState) {
        let receipt = |round, status, detail: String| {
            Message::Receipt(Receipt { federation: self.federation.clone(), round, status, detail })
        };
        let reply = match message {
            Message::Hello(h) => {
                let outcome = if !self.roster.contains_key(&peer) {
                    Err(RefusalReason::NotOnRoster)
                } else if !h.claims(&peer) {
                    Err(RefusalReason::BadSignature)
                } else if h.protocol_version != protocol::PROTOCOL_VERSION {
                    Err(RefusalReason::WrongVersion)
                } else {
                    Ok(JoinAccepted {
                        current_round: state.round(),
                        reference_set: self.reference_id,
                        reference_samples: self.reference.samples as u32,
                        classes: self.cfg.classes as u32,
                    })
                };
                let accepted = outcome.is_ok();
                if accepted {
                    tracing::info!(node = %self.name(&peer), round = state.round(), "node joined");
                    self.joined.insert(peer);
                } else {
                    tracing::warn!(peer = %peer.short(), ?outcome, "join refused");
                }
                let r = responder.respond(Message::JoinReply(JoinReply { federation: self.federation.clone(), outcome, detail: String::new() })).await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not answer a hello");
                }
                // A node that joins while a round is open gets its announcement at once.
                if accepted && !state.is_closed() {
                    self.send(peer, Message::RoundAnnouncement(state.announcement.clone()));
                }
                return;
            }
            Message::Submission(sub) => {
                let round = sub.round;
                match state.submit(peer, &sub, &self.limits) {
                    Ok(()) => {
                        tracing::info!(node = %self.name(&peer), round, "submission accepted");
                        receipt(round, ReceiptStatus::Accepted, String::new())
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.name(&peer), round, reason = ?e.refusal_reason(), error = %e, "submission refused");
                        let mut d = e.to_string();
                        d.truncate(protocol::message::MAX_DETAIL_LEN);
                        receipt(round, ReceiptStatus::Refused(e.refusal_reason()), d)
                    }
                }
            }
            Message::RefSetRequest(req) => {
                if req.reference_set != self.reference_id {
                    receipt(0, ReceiptStatus::Refused(RefusalReason::WrongReferenceSet), "unknown reference set".into())
                } else {
                    let total = self.reference_bytes.len() as u64;
                    let start = req.offset.min(total) as usize;
                    let end = (start + req.len as usize).min(self.reference_bytes.len());
                    Message::RefSetChunk(RefSetChunk {
                        federation: self.federation.clone(),
                        reference_set: self.reference_id,
                        offset: start as u64,
                        total_len: total,
                        data: self.reference_bytes[start..end].to_vec(),
                    })
                }
            }
            other => receipt(other.round().unwrap_or(0), ReceiptStatus::Refused(RefusalReason::Unavailable), format!("the aggregator does not serve {:?}", other.kind())),
        };
        if let Err(e) = responder.respond(reply).await {
            tracing::warn!(error = %e, "could not answer");
        }
    }
}

fn round_dir(out: &Path, round: u64) -> PathBuf {
    out.join("checkpoints").join(format!("round-{round}"))
}

fn read_metrics(path: &Path) -> Result<Vec<RoundMetrics>, AggError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| AggError::Checkpoint(format!("{}: {e}", path.display()))))
        .collect()
}

fn metrics_csv(all: &[RoundMetrics]) -> String {
    let mut s = String::from("round,participants,bytes_in,bytes_out,samples,masked,accuracy,nll,agreement,seconds\n");
    for m in all {
        let opt = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{:.6},{:.3}",
            m.round,
            m.participants.len(),
            m.bytes_in,
            m.bytes_out,
            m.samples,
            m.masked,
            opt(m.accuracy),
            opt(m.nll),
            m.agreement,
            m.seconds
        );
    }
    s
}

/// Starts and runs an aggregator until its rounds are done or `shutdown` fires.
pub async fn run(cfg: AggregatorConfig, shutdown: CancellationToken) -> Result<RunSummary, AggError> {
    Aggregator::start(cfg).await?.run(shutdown).await
}

/// Writes a new key file and returns its PeerId.
pub fn keygen(path: &Path) -> anyhow::Result<String> {
    let id = net::keys::generate(path)?;
    Ok(net::keys::peer_id_string(&id.id()))
}
