//! Building and running the [`Aggregator`]: [`Aggregator::start`] validates the config, reads
//! its inputs off the runtime, starts the student's thread and binds the network;
//! [`Aggregator::run`] runs the rounds ([`crate::rounds`]), writes the outputs and shuts down in
//! a fixed order.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use learning::data::Dataset;
use net::{NetConfig, RateLimit};
use protocol::{Finished, Identity, Limits, Message, MessageKind, ParticipantId, ReferenceSet, ReferenceSetId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, RoundMetrics};
use crate::config::AggregatorConfig;
use crate::error::Error;
use crate::state::Aggregator;
use crate::student::{Student, StudentSetup};
use crate::{faults, metrics, status};

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
    let identity = net::keys::read(&cfg.key).map_err(|e| Error::config("key", e))?;
    if let Some(e) = cfg.roster.iter().find(|e| e.peer_id == identity.id()) {
        return Err(Error::config("roster", format!("{} has the aggregator's own key", e.name)));
    }
    let path = &cfg.reference.path;
    let bytes = std::fs::read(path).map_err(|e| Error::config("reference.path", format!("{}: {e}", path.display())))?;
    let id = ReferenceSetId::digest(&bytes);
    if id != cfg.reference.sha256 {
        return Err(Error::config(
            "reference.sha256",
            format!("{} has SHA-256 {id}, the config expects {}", path.display(), cfg.reference.sha256),
        ));
    }
    let reference = ReferenceSet::from_bytes(&bytes, usize::MAX).map_err(|e| Error::config("reference.path", e))?;
    if cfg.round.samples as usize > reference.samples {
        return Err(Error::config(
            "round.samples",
            format!("{} samples from a reference set of {}", cfg.round.samples, reference.samples),
        ));
    }
    cfg.student
        .architecture
        .validate(reference.features, cfg.classes)
        .map_err(|e| Error::config("student.architecture", e))?;
    let validation = match &cfg.validation {
        Some(spec) => {
            let d = spec.load().map_err(|e| Error::config("validation", e))?;
            if d.dim != reference.features || d.classes > cfg.classes {
                return Err(Error::config(
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
    let resolved = toml::to_string_pretty(cfg).map_err(|e| Error::config("(file)", e))?;
    learning::fs::atomic_write(&cfg.output.join("federation.resolved.toml"), resolved.as_bytes())?;
    Ok(Loaded { identity, reference, reference_bytes: bytes, validation, restored })
}

impl Aggregator {
    /// Validates the config, loads inputs and the checkpoint, binds the listen addresses. The
    /// aggregator stops when `shutdown` is cancelled (its metrics endpoint with it; the network in its place in the shutdown order)
    /// or when [`Aggregator::run`] is done.
    pub async fn start(cfg: AggregatorConfig, shutdown: &CancellationToken) -> Result<Self, Error> {
        Self::start_with(cfg, Arc::new(faults::NoFaults), shutdown).await
    }

    /// [`Aggregator::start`] with simulated faults (the scenario runner's `fd-sim-aggregator`).
    pub async fn start_with(
        cfg: AggregatorConfig,
        faults: Arc<dyn faults::Faults>,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        cfg.validate()?;
        let mut loaded = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || load(&cfg)).await??
        };
        let consensus = loaded.restored.consensus.take().map(Arc::new);
        let roster: HashMap<ParticipantId, String> = cfg.roster.iter().map(|e| (e.peer_id, e.name.clone())).collect();
        let (telemetry, registry) = metrics::Metrics::new(&roster);
        let net_cfg = net_config(&cfg, &roster, loaded.reference_bytes.len(), telemetry.traffic.clone());
        let limits = net_cfg.limits;
        // The network is not a child of `shutdown`: `run` stops it itself, in its place in the
        // shutdown order (after the nodes are told the federation is finished and the sends in
        // flight are drained). As a child it stopped the moment the signal came, and the round
        // under way failed with "network event loop has stopped" (exit status 1 on SIGTERM).
        let (client, events, network) = net::spawn(loaded.identity, net_cfg, &CancellationToken::new())?;
        let mut listen_addrs = Vec::new();
        for addr in &cfg.listen {
            let bound =
                client.listen(addr.clone()).await.map_err(|e| Error::config("listen", net::error::Chain(&e)))?;
            // Bound to every interface (0.0.0.0, ::): each interface's address, for the log and
            // `--addr-file`, not only the first one the swarm reported.
            listen_addrs.extend(net::interfaces::expand(addr, &bound));
        }
        let board = status::Board::new(
            cfg.federation.as_str(),
            cfg.rounds,
            cfg.round.quorum(roster.len()),
            cfg.validation.is_some(),
            &roster,
            &loaded.restored.metrics,
        );
        let metrics_server = match cfg.metrics {
            Some(addr) => Some(
                net::http::Endpoint::new(addr, cfg.http.clone(), Arc::new(registry))
                    .with_view(|| board.view())
                    .serve(shutdown)
                    .await
                    .map_err(|e| Error::config("metrics", net::error::Chain(&e)))?,
            ),
            None => None,
        };
        let reference = Arc::new(loaded.reference);
        let reference_id = cfg.reference.sha256;
        let completed = loaded.restored.completed;
        let metrics = loaded.restored.metrics.clone();
        telemetry.round.set(completed as i64);
        let setup = student_setup(&cfg, faults);
        let (student, student_thread) =
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
            student_thread,
            metrics,
            completed,
            committed: completed,
            joined: HashSet::new(),
            withdrawn: HashMap::new(),
            consensus,
            taught: HashMap::new(),
            progress: None,
            limits,
            sends: tokio::task::JoinSet::new(),
            telemetry,
            metrics_server,
            board,
            shutdown: shutdown.clone(),
            cfg,
        })
    }

    /// Runs the remaining rounds, then writes the final outputs, until done or until the
    /// token given to [`Aggregator::start`] is cancelled. Shutdown, in order: stop announcing
    /// rounds → tell the nodes the federation is finished (if it is) → drain the sends in
    /// flight → stop the network → stop serving metrics → join the student's thread.
    pub async fn run(mut self) -> Result<RunSummary, Error> {
        let shutdown = self.shutdown.clone();
        let summary = match self.rounds(&shutdown).await {
            Ok(completed) => self.finish(completed, &shutdown).await,
            Err(e) => Err(e),
        };
        let done = matches!(summary, Ok(RunSummary { completed: true, .. }));
        self.board.phase(if done { status::Phase::Finished } else { status::Phase::Stopped });
        let drain = async { while self.sends.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        drop(self.events);
        self.network.shutdown().await;
        if let Some(server) = self.metrics_server {
            server.shutdown().await;
        }
        drop(self.student);
        let joined = self.student_thread.join().await;
        let summary = summary?;
        joined?;
        Ok(summary)
    }

    /// After the rounds: if they are all done, commits the last checkpoint, writes the global
    /// model and the report, and tells the nodes the federation is finished.
    async fn finish(&mut self, completed: bool, shutdown: &CancellationToken) -> Result<RunSummary, Error> {
        let mut written = Ok(());
        if completed {
            if self.committed < self.completed {
                self.checkpoint(self.completed, self.consensus.clone(), shutdown).await;
            }
            written = self.student.finish(self.metrics.clone()).await;
            // Tell the nodes, so that they checkpoint and stop instead of waiting for a round
            // that will not come; even if the outputs could not be written, every round's
            // consensus has been sent.
            let detail = match &written {
                Ok(()) => format!("{} rounds; global model written", self.completed),
                Err(_) => format!("{} rounds; the global model could not be written", self.completed),
            };
            let done =
                Message::Finished(Finished { federation: self.federation().clone(), rounds: self.completed, detail });
            self.deliver(self.joined.clone(), &done).await;
        }
        written.map(|()| RunSummary { rounds: self.metrics.clone(), model: self.cfg.output.join("global"), completed })
    }
}

/// The network's settings: only the roster (and the relays `listen` names) may connect.
fn net_config(
    cfg: &AggregatorConfig,
    roster: &HashMap<ParticipantId, String>,
    reference_bytes: usize,
    traffic: net::metrics::Traffic,
) -> NetConfig {
    let mut net_cfg = NetConfig::new(cfg.federation.clone(), roster.keys().copied().collect());
    net_cfg.request_timeout = Duration::from_secs(120);
    net_cfg.max_pending_incoming = cfg.connections.pending;
    net_cfg.max_pending_incoming_per_ip = cfg.connections.pending_per_ip;
    net_cfg.limits = inbound_limits(cfg);
    net_cfg.rate_limits = rate_limits(reference_bytes);
    // Room for one request of every roster member at once (everyone joins together at the
    // start, and a cohort's answers come together): beyond it a request is closed and sent
    // again, which at 300 nodes refused more than half of the first round's submissions. Each
    // request in flight is capped by `limits`, and a peer's requests by its rate limits.
    net_cfg.max_inbound = net_cfg.max_inbound.max(roster.len() + 16);
    net_cfg.through_relays(&cfg.listen);
    net_cfg.hole_punching = cfg.connections.hole_punching;
    // Answers the nodes' AutoNAT probes (dials them back); asks no one about itself.
    net_cfg.autonat = Some(net::nat::AutoNat::new(Vec::new()));
    net_cfg.traffic = Some(traffic);
    net_cfg
}

/// What the student's thread is fixed with for the run.
fn student_setup(cfg: &AggregatorConfig, faults: Arc<dyn faults::Faults>) -> StudentSetup {
    StudentSetup {
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
    }
}

/// What the aggregator accepts: every matrix it is sent has the round's shape and encoding, so
/// a submission of any other size is refused before its bytes are read.
fn inbound_limits(cfg: &AggregatorConfig) -> Limits {
    Limits {
        max_samples: cfg.round.samples,
        max_classes: cfg.classes as u32,
        encoding: Some(cfg.round.encoding),
        max_cohort: cfg.roster.len().max(protocol::secagg::MIN_COHORT) as u32,
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
    Aggregator::start(cfg, &shutdown).await?.run().await
}
