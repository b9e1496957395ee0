//! The federated-distillation aggregator.
//!
//! [`Aggregator::start`] validates the whole config before any I/O ([`config`]), then, off the
//! runtime, reads the key, checks the reference set's hash, loads the validation data and
//! restores the last checkpoint ([`checkpoint`]); it hands the global model to its owner thread
//! ([`student`]) and binds the network. [`Aggregator::run`] drives the rounds ([`rounds`]):
//! announce → collect validated, signed submissions until everyone answered or declined, or the
//! deadline passed with a quorum ([`collect`], [`round`], answered by [`serve`]) →
//! consensus → distil the global student → send the consensus → checkpoint atomically → one log
//! line. After the last round it writes the global model and the report ([`report`]) and tells
//! every node that the federation is finished. A restart with the same output folder resumes
//! after the last completed round. Under `weighted_by_samples`, nodes weigh what the roster
//! declares or, failing that, what they report, clipped ([`weights`]). With a `metrics` address in
//! the config, [`metrics`] are served at `http://ADDR/metrics` until the run ends. An aggregator
//! with no open port listens through a circuit relay, which `fd-aggregator relay` runs ([`relay`]).
//!
//! Simulations can hold the aggregator at points where a test kills it ([`faults`]; the
//! production binary sets none).
//!
//! Setting a federation up: [`reference`] builds the public reference set's file from a user's
//! CSV or IDX file, [`init`] writes a new federation's folder, [`roster_edit`] adds and removes
//! roster entries in place.
//!
//! Output folder layout (a private folder: 0700, its files 0600): `state.json` (the commit
//! point: last completed round),
//! `checkpoints/round-N/` (global model and distillation pool of round N), `metrics.jsonl` and
//! `metrics.csv` (one row per round), `federation.resolved.toml` (the config as run), and at the
//! end `global.bpk`/`global.json`/`global.safetensors`/`global.onnx` and `report.md`.
#![deny(missing_docs)]

pub mod checkpoint;
mod collect;
pub mod config;
pub mod faults;
pub mod init;
pub mod metrics;
pub mod reference;
pub mod relay;
pub mod report;
pub mod roster_edit;
pub mod round;
mod rounds;
mod serve;
pub mod student;
pub mod weights;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use learning::data::Dataset;
use net::multiaddr::Multiaddr;
use net::{Event, NetConfig, RateLimit};
use protocol::{
    FederationId, Finished, Identity, Limits, Message, MessageKind, ParticipantId, ReferenceSet, ReferenceSetId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use checkpoint::RoundMetrics;
pub use config::AggregatorConfig;
use student::{Student, StudentSetup};

/// Errors that stop the aggregator.
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
    /// A checkpoint in the output folder cannot be used.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A round closed with nothing to combine.
    #[error("round {round}: {detail}")]
    Round {
        /// Round.
        round: u64,
        /// What is wrong.
        detail: String,
    },
    /// A roster edit was refused.
    #[error(transparent)]
    Roster(#[from] roster_edit::RosterError),
    /// Training, inference, consensus or a model file failed.
    #[error(transparent)]
    Learning(#[from] learning::Error),
    /// A message could not be built.
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    /// Network failure.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// The student's thread has stopped.
    #[error(transparent)]
    Stopped(#[from] net::owner::Stopped),
    /// A blocking task failed.
    #[error("background task")]
    Task(#[from] tokio::task::JoinError),
}

fn config_err(field: &'static str, detail: impl ToString) -> Error {
    Error::Config { field: field.to_owned(), detail: detail.to_string() }
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
    roster: HashMap<ParticipantId, String>,
    reference: Arc<ReferenceSet>,
    reference_bytes: Arc<Vec<u8>>,
    reference_id: ReferenceSetId,
    client: net::Client,
    events: mpsc::Receiver<Event>,
    /// Refusals of announcements, from the tasks that sent them, for the round being collected.
    declines: mpsc::Receiver<collect::Declined>,
    declines_tx: mpsc::Sender<collect::Declined>,
    network: net::Handle,
    listen_addrs: Vec<Multiaddr>,
    student: Student,
    metrics: Vec<RoundMetrics>,
    completed: u64,
    /// Last round whose checkpoint is committed (may lag `completed` after a failed checkpoint).
    committed: u64,
    joined: HashSet<ParticipantId>,
    progress: Option<mpsc::Sender<RoundMetrics>>,
    limits: Limits,
    /// Requests sent in the background (announcements), awaited before shutdown.
    sends: tokio::task::JoinSet<()>,
    /// Prometheus series (served if `metrics_server` is there).
    telemetry: metrics::Metrics,
    /// The `GET /metrics` endpoint, if the config asks for one.
    metrics_server: Option<net::metrics::http::Server>,
}

/// What start-up reads from disk.
struct Loaded {
    identity: Identity,
    reference: ReferenceSet,
    reference_bytes: Vec<u8>,
    validation: Option<Dataset>,
    restored: checkpoint::Restored,
}

/// Reads the key, the reference set (checking its hash), the validation data and the last
/// checkpoint, and writes the resolved config beside the outputs. Blocking.
fn load(cfg: &AggregatorConfig) -> Result<Loaded, Error> {
    let identity = net::keys::read(&cfg.key).map_err(|e| config_err("key", e))?;
    if let Some(e) = cfg.roster.iter().find(|e| e.peer_id == identity.id()) {
        return Err(config_err("roster", format!("{} has the aggregator's own key", e.name)));
    }
    let path = &cfg.reference.path;
    let bytes = std::fs::read(path).map_err(|e| config_err("reference.path", format!("{}: {e}", path.display())))?;
    let id = ReferenceSetId::digest(&bytes);
    if id != cfg.reference.sha256 {
        return Err(config_err(
            "reference.sha256",
            format!("{} has SHA-256 {id}, the config expects {}", path.display(), cfg.reference.sha256),
        ));
    }
    let reference = ReferenceSet::from_bytes(&bytes, usize::MAX).map_err(|e| config_err("reference.path", e))?;
    if cfg.round.samples as usize > reference.samples {
        return Err(config_err(
            "round.samples",
            format!("{} samples from a reference set of {}", cfg.round.samples, reference.samples),
        ));
    }
    cfg.student
        .architecture
        .validate(reference.features, cfg.classes)
        .map_err(|e| config_err("student.architecture", e))?;
    let validation = match &cfg.validation {
        Some(spec) => {
            let d = spec.load().map_err(|e| config_err("validation", e))?;
            if d.dim != reference.features || d.classes > cfg.classes {
                return Err(config_err(
                    "validation",
                    "its features or classes do not match the reference set and `classes`",
                ));
            }
            Some(d)
        }
        None => None,
    };
    learning::fs::create_private_dir(&cfg.output)?;
    let restored = checkpoint::restore(&cfg.output, &id, cfg.backend)?;
    let resolved = toml::to_string_pretty(cfg).map_err(|e| config_err("(file)", e))?;
    learning::fs::atomic_write(&cfg.output.join("federation.resolved.toml"), resolved.as_bytes())?;
    Ok(Loaded { identity, reference, reference_bytes: bytes, validation, restored })
}

impl Aggregator {
    /// Validates the config, loads inputs and the checkpoint, binds the listen addresses.
    pub async fn start(cfg: AggregatorConfig) -> Result<Self, Error> {
        Self::start_with(cfg, Arc::new(faults::NoFaults)).await
    }

    /// [`Aggregator::start`] with simulated faults (the scenario runner's `fd-sim-aggregator`).
    pub async fn start_with(cfg: AggregatorConfig, faults: Arc<dyn faults::Faults>) -> Result<Self, Error> {
        cfg.validate()?;
        let loaded = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || load(&cfg)).await??
        };
        let roster: HashMap<ParticipantId, String> = cfg.roster.iter().map(|e| (e.peer_id, e.name.clone())).collect();
        let mut net_cfg = NetConfig::new(cfg.federation.clone(), roster.keys().copied().collect());
        net_cfg.request_timeout = Duration::from_secs(120);
        net_cfg.max_pending_incoming = cfg.connections.pending;
        net_cfg.max_pending_incoming_per_ip = cfg.connections.pending_per_ip;
        net_cfg.limits = inbound_limits(&cfg);
        net_cfg.rate_limits = rate_limits(loaded.reference_bytes.len());
        net_cfg.through_relays(&cfg.listen);
        // Answers the nodes' AutoNAT probes (dials them back); asks no one about itself.
        net_cfg.autonat = Some(net::nat::AutoNat::new(Vec::new()));
        let limits = net_cfg.limits;
        let (telemetry, registry) = metrics::Metrics::new(&roster);
        net_cfg.traffic = Some(telemetry.traffic.clone());
        let (client, events, network) = net::spawn(loaded.identity, net_cfg, &CancellationToken::new())?;
        let mut listen_addrs = Vec::new();
        for addr in &cfg.listen {
            listen_addrs.push(client.listen(addr.clone()).await.map_err(|e| config_err("listen", e))?);
        }
        let metrics_server = match cfg.metrics {
            Some(addr) => Some(
                net::metrics::http::serve(addr, Arc::new(registry), &CancellationToken::new())
                    .await
                    .map_err(|e| config_err("metrics", e))?,
            ),
            None => None,
        };
        let reference = Arc::new(loaded.reference);
        let reference_id = cfg.reference.sha256;
        let setup = StudentSetup {
            architecture: cfg.student.architecture.clone(),
            warm_start: cfg.student.warm_start,
            distill: cfg.student.distill.clone(),
            temperature: cfg.round.temperature,
            classes: cfg.classes,
            backend: cfg.backend,
            seed: cfg.seed,
            output: cfg.output.clone(),
            federation: cfg.federation.clone(),
            faults,
        };
        let completed = loaded.restored.completed;
        let metrics = loaded.restored.metrics.clone();
        telemetry.round.set(completed as i64);
        let student =
            Student::start(setup, loaded.restored, reference.clone(), reference_id, loaded.validation.map(Arc::new))?;
        tracing::info!(
            peer = %net::keys::peer_id_string(&client.id()),
            addrs = ?listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            resume_after = completed,
            "aggregator listening"
        );
        let (declines_tx, declines) = mpsc::channel(2 * roster.len() + 8);
        Ok(Self {
            roster,
            reference,
            reference_bytes: Arc::new(loaded.reference_bytes),
            reference_id,
            client,
            events,
            declines,
            declines_tx,
            network,
            listen_addrs,
            student,
            metrics,
            completed,
            committed: completed,
            joined: HashSet::new(),
            progress: None,
            limits,
            sends: tokio::task::JoinSet::new(),
            telemetry,
            metrics_server,
            cfg,
        })
    }

    /// The bound addresses (with real ports).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Where the metrics are served (with the real port), if the config asks for them.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(|s| s.local_addr())
    }

    /// The aggregator's id.
    pub fn id(&self) -> ParticipantId {
        self.client.id()
    }

    /// Sends each round's metrics to `tx` as it completes (dropped if the receiver lags).
    pub fn set_progress(&mut self, tx: mpsc::Sender<RoundMetrics>) {
        self.progress = Some(tx);
    }

    fn federation(&self) -> &FederationId {
        &self.cfg.federation
    }

    fn name(&self, p: &ParticipantId) -> String {
        self.roster.get(p).cloned().unwrap_or_else(|| p.short())
    }

    /// Runs the remaining rounds, then writes the final outputs. Shutdown, in order: stop
    /// announcing rounds → tell the nodes the federation is finished (if it is) → drain the
    /// sends in flight → stop the network → stop serving metrics.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, Error> {
        let result = self.rounds(&shutdown).await;
        let summary = match result {
            Ok(completed) => {
                let mut written = Ok(());
                if completed {
                    if self.committed < self.completed {
                        self.checkpoint(self.completed, &shutdown).await;
                    }
                    written = self.student.finish(self.metrics.clone()).await;
                    // Tell the nodes, so that they checkpoint and stop instead of waiting for
                    // a round that will not come; even if the outputs could not be written,
                    // every round's consensus has been sent.
                    let detail = match &written {
                        Ok(()) => format!("{} rounds; global model written", self.completed),
                        Err(_) => format!("{} rounds; the global model could not be written", self.completed),
                    };
                    let done = Message::Finished(Finished {
                        federation: self.federation().clone(),
                        rounds: self.completed,
                        detail,
                    });
                    self.deliver(&done).await;
                }
                written.map(|()| RunSummary {
                    rounds: self.metrics.clone(),
                    model: self.cfg.output.join("global"),
                    completed,
                })
            }
            Err(e) => Err(e),
        };
        let drain = async { while self.sends.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        drop(self.events);
        self.network.shutdown().await;
        if let Some(server) = self.metrics_server {
            server.shutdown().await;
        }
        summary
    }
}

/// What the aggregator accepts: every matrix it is sent has the round's shape and encoding, so
/// a submission of any other size is refused before its bytes are read.
fn inbound_limits(cfg: &AggregatorConfig) -> Limits {
    Limits {
        max_samples: cfg.round.samples,
        max_classes: cfg.classes as u32,
        encoding: Some(cfg.round.encoding),
        ..Limits::default()
    }
}

/// Chunk size `fd-node` asks for when it fetches the reference set.
const EXPECTED_CHUNK: usize = 1 << 20;

/// Per-peer budgets of the requests that cost the aggregator most to answer: a `Hello` (each
/// accepted one is answered with the open round's announcement) and reference-set chunks
/// (enough to fetch the whole set twice at once, then once a minute).
fn rate_limits(reference_bytes: usize) -> Vec<(MessageKind, RateLimit)> {
    let chunks = reference_bytes.div_ceil(EXPECTED_CHUNK) as u32;
    let burst = 2 * chunks + 8;
    vec![
        (MessageKind::Hello, RateLimit { burst: 4, per_second: 0.1 }),
        (MessageKind::RefSetRequest, RateLimit { burst, per_second: f64::from(burst) / 60.0 }),
    ]
}

/// Starts and runs an aggregator until its rounds are done or `shutdown` fires.
pub async fn run(cfg: AggregatorConfig, shutdown: CancellationToken) -> Result<RunSummary, Error> {
    Aggregator::start(cfg).await?.run(shutdown).await
}
