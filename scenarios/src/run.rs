//! Runs a prepared scenario: the federation (in-process, as processes or as a Slurm job), then
//! the baselines, then the outputs (`results.json`, `rounds.csv`, `report.md`, `config.toml`).
//! A scenario exported as a Slurm job ([`export_slurm`]) runs without us; [`collect`] then
//! writes its outputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aggregator::RoundMetrics;
use anyhow::Context;
use learning::Model;
use learning::eval::ModelFacts;

use crate::baselines;
pub use crate::federate::processes::{read_addr_file, sibling_binary};
use crate::provenance::Provenance;
pub use crate::results::{LocalOnly, PrivacyResult, Results, RoundResult};
use crate::setup::{self, Prepared};
use crate::spec::Scenario;

/// Options of a run, and of every run of a job over several seeds, budgets or variants.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Show a progress bar.
    pub progress: bool,
    /// Told, before each run of a job over several runs, which one starts and where.
    pub notify: fn(&str),
    /// Recorded into `results.json`: what made the figures.
    pub provenance: Option<Provenance>,
}

impl Default for RunOptions {
    /// Into the current folder, quiet, recording no provenance.
    fn default() -> Self {
        Self { out: PathBuf::new(), progress: false, notify: |_| {}, provenance: None }
    }
}

/// Writes a scenario's files into the run folder `out`: its data, keys and configs, and the
/// resolved scenario (`config.toml`).
async fn prepare(scenario: &Scenario, out: &Path) -> anyhow::Result<Prepared> {
    scenario.validate()?;
    // Absolute, so that the federation.toml and node.toml written inside hold from anywhere
    // (their relative paths are resolved against their own folder).
    let dir = std::path::absolute(out)?;
    let prepared = {
        let s = scenario.clone();
        tokio::task::spawn_blocking(move || setup::prepare(&s, &dir)).await??
    };
    setup::write_toml(&prepared.dir.config(), &prepared.scenario)?;
    Ok(prepared)
}

/// Writes a scenario into the run folder `out` as a Slurm job, without submitting it (see
/// [`crate::federate::slurm`]); returns the script to submit with `sbatch`.
pub async fn export_slurm(scenario: &Scenario, out: &Path) -> anyhow::Result<PathBuf> {
    crate::federate::slurm::write_job(&mut prepare(scenario, out).await?)
}

/// The outputs of a run whose federation ran elsewhere (a Slurm job written by
/// [`export_slurm`], once it has ended), from what it left in the run folder `dir`: the
/// baselines, `results.json`, `rounds.csv` and `report.md`, as [`run`] writes them. The
/// federation's time is the sum of its rounds' (the job's start-up left out).
pub async fn collect(dir: &Path, provenance: Option<Provenance>) -> anyhow::Result<Results> {
    let dir = std::path::absolute(dir)?;
    let prepared = tokio::task::spawn_blocking(move || setup::reopen(&dir)).await??;
    let metrics = crate::federate::read_metrics(&prepared.dir)?;
    let rounds = prepared.scenario.rounds;
    if metrics.len() as u64 != rounds {
        anyhow::bail!(
            "the federation in {} has completed {} of its {rounds} rounds: has its job ended? (see {})",
            prepared.dir.root().display(),
            metrics.len(),
            prepared.dir.slurm_log().display()
        );
    }
    let seconds = metrics.iter().map(|m| m.seconds).sum();
    finish(prepared, metrics, seconds, provenance).await
}

/// Runs a scenario end to end and writes its outputs.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<Results> {
    let mut prepared = prepare(scenario, &opts.out).await?;
    let started = Instant::now();
    let metrics = crate::federate::federate(&mut prepared, opts.progress).await?;
    finish(prepared, metrics, started.elapsed().as_secs_f64(), opts.provenance.clone()).await
}

/// Evaluates a finished federation, runs the baselines and writes the outputs.
async fn finish(
    prepared: Prepared,
    metrics: Vec<RoundMetrics>,
    federation_seconds: f64,
    provenance: Option<Provenance>,
) -> anyhow::Result<Results> {
    tokio::task::spawn_blocking(move || {
        let results = Results { provenance, ..evaluate(&prepared, &metrics, federation_seconds)? };
        crate::report::write(&prepared, &results)?;
        Ok(results)
    })
    .await?
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn privacy_result(p: &Prepared) -> anyhow::Result<Option<PrivacyResult>> {
    let Some(sp) = &p.scenario.nodes.privacy else { return Ok(None) };
    let (mut budget, mut spent, mut trainings) = (Vec::new(), Vec::new(), Vec::new());
    for n in &p.nodes {
        let entries = node::budget::read_entries(&n.state_dir)?;
        spent.push(node::budget::epsilon_of(&entries, sp.delta)?);
        trainings.push(entries.len());
        budget.push(n.privacy.as_ref().map(|c| c.epsilon));
    }
    let max_spent = spent.iter().copied().fold(0.0, f64::max);
    Ok(Some(PrivacyResult { budget, delta: sp.delta, spent, trainings, max_spent }))
}

/// The figures of a finished federation: its models on the test rows, then the baselines.
fn evaluate(p: &Prepared, metrics: &[RoundMetrics], federation_seconds: f64) -> anyhow::Result<Results> {
    let s = &p.scenario;
    let test = p.dataset.subset(&p.split.test);
    let global = Model::load(&p.dir.global_model(), s.backend).context("loading the global model")?;
    let global_accuracy =
        learning::eval::evaluate(&global.soft_labels(&test.features, 1.0, 256)?, &test.labels, test.classes).accuracy;
    // One node model at a time: a thousand of them need not be in memory at once.
    let nodes = (0..p.nodes.len()).map(|i| {
        let ndir = p.dir.node(i);
        Model::load(&ndir.model(), s.backend).with_context(|| format!("loading {}", ndir.state().display()))
    });
    let (ensemble_accuracy, node_accuracy) = baselines::ensemble(nodes, &test)?;
    let b = &s.baselines;
    let local_only = if b.local {
        let v = baselines::local_only(p, &test)?;
        Some(LocalOnly {
            mean: v.iter().sum::<f32>() / v.len() as f32,
            best: v.iter().copied().fold(0.0, f32::max),
            nodes: v,
        })
    } else {
        None
    };
    let centralized = if b.centralized { Some(baselines::centralized(p, &test)?) } else { None };
    let fedavg = if b.fedavg && s.homogeneous() { Some(baselines::fedavg(p, &test)?) } else { None };
    let public_labels = if b.public_labels { Some(baselines::public_labels(p, &test)?.0) } else { None };
    let rounds: Vec<RoundResult> = metrics
        .iter()
        .map(|m| RoundResult {
            round: m.round,
            global_accuracy: m.accuracy.unwrap_or(0.0),
            participants: m.participants.clone(),
            bytes_up: m.bytes_in,
            bytes_down: m.bytes_out,
            fedavg_accuracy: fedavg.as_ref().and_then(|f| f.per_round.get(m.round as usize - 1).copied()),
            seconds: m.seconds,
            cohort: m.cohort.clone(),
        })
        .collect();
    let bytes_total: u64 = rounds.iter().map(|r| r.bytes_up + r.bytes_down).sum();
    Ok(Results {
        scenario: s.name.clone(),
        seed: s.seed,
        bytes_per_round: bytes_total as f64 / rounds.len().max(1) as f64,
        bytes_total,
        rounds,
        global_accuracy,
        ensemble_accuracy,
        mean_node_accuracy: node_accuracy.iter().sum::<f32>() / node_accuracy.len().max(1) as f32,
        node_accuracy,
        local_only,
        centralized,
        fedavg,
        public_labels,
        global_model: ModelFacts::of(&global)?,
        node_model: ModelFacts::of(&Model::load(&p.dir.node(0).model(), s.backend)?)?,
        federation_seconds,
        peak_rss_mib: peak_rss_mib(),
        processes_memory: std::fs::read(p.dir.process_memory()).ok().and_then(|b| serde_json::from_slice(&b).ok()),
        privacy: privacy_result(p)?,
        provenance: None,
        compress: compress(p, &global, &test)?,
    })
}

/// The scenario's `[[compress]]` jobs from the global student, on the reference rows with their
/// labels and the aggregator's last consensus, scored on the test rows; each job's students
/// under `compress/<job>/`. The global student's row comes once, first.
fn compress(
    p: &Prepared,
    global: &Model,
    test: &learning::data::Dataset,
) -> anyhow::Result<Vec<learning::compress::Analysis>> {
    use learning::compress::{PublicSet, TestSet};
    use protocol::seed::{Stream, derive};
    let s = &p.scenario;
    if s.compress.is_empty() {
        return Ok(Vec::new());
    }
    let public = p.dataset.subset(&p.split.reference);
    let (_, id) = aggregator::reference::read(&p.dir.reference())?;
    let pool = aggregator::checkpoint::restore(&p.dir.aggregator(), &id, s.backend)?.pool;
    let set = PublicSet { inputs: &public.features, labels: Some(&public.labels), consensus: Some(&pool.rows) };
    let mut rows = Vec::new();
    for (j, job) in s.compress.iter().enumerate() {
        let out = p.dir.root().join("compress").join(j.to_string());
        let test = TestSet { inputs: &test.features, labels: &test.labels };
        let seed = derive(s.seed, Stream::Baseline, 100 + j as u64);
        let done = learning::compress::compress(global, job, &set, test, &out, seed)
            .with_context(|| format!("compress[{j}]"))?;
        rows.extend(done.rows.into_iter().skip(usize::from(j > 0)));
    }
    Ok(rows)
}
