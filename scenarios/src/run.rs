//! Runs a prepared scenario: the federation (in-process or as processes), then the baselines,
//! then the outputs (`results.json`, `rounds.csv`, `report.md`, `config.toml`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aggregator::{Aggregator, RoundMetrics};
use anyhow::Context;
use learning::Model;
use learning::eval::ModelFacts;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use net::multiaddr::{Multiaddr, Protocol};

use crate::baselines;
use crate::processes::federate_processes;
pub use crate::processes::{read_addr_file, sibling_binary};
pub use crate::results::{LocalOnly, PrivacyResult, Results, RoundResult};
use crate::setup::{self, Prepared};
use crate::spec::{Scenario, Transport};

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Show a progress bar.
    pub progress: bool,
}

/// Runs a scenario end to end and writes its outputs.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<Results> {
    scenario.validate()?;
    // Absolute, so that the federation.toml and node.toml written inside hold from anywhere
    // (their relative paths are resolved against their own folder).
    let dir = &std::path::absolute(&opts.out)?;
    let mut prepared = {
        let (s, d) = (scenario.clone(), dir.clone());
        tokio::task::spawn_blocking(move || setup::prepare(&s, &d)).await??
    };
    setup::write_toml(&dir.join("config.toml"), &prepared.scenario)?;
    let started = Instant::now();
    let metrics = match scenario.transport {
        Transport::InProcess => federate_in_process(&mut prepared, opts.progress).await?,
        Transport::Processes => federate_processes(&mut prepared, opts.progress).await?,
    };
    let federation_seconds = started.elapsed().as_secs_f64();
    tokio::task::spawn_blocking(move || {
        let results = evaluate(&prepared, &metrics, federation_seconds)?;
        crate::report::write(&prepared, &results)?;
        Ok(results)
    })
    .await?
}

pub(crate) fn node_dir(p: &Prepared, i: usize) -> PathBuf {
    p.dir.join("nodes").join(format!("node-{i:02}"))
}

/// Writes `federation.toml`, each node's `node.toml` and, for a node with simulated faults, its
/// `simulation.toml` (read by `fd-sim-node`, never by `fd-node`).
pub(crate) fn write_configs(p: &mut Prepared, agg_addr: &Multiaddr) -> anyhow::Result<()> {
    setup::write_toml(&p.dir.join("federation.toml"), &p.aggregator)?;
    for i in 0..p.nodes.len() {
        p.nodes[i].aggregator = agg_addr.clone();
        let dir = node_dir(p, i);
        setup::write_toml(&dir.join("node.toml"), &p.nodes[i])?;
        if !p.faults[i].is_honest() {
            setup::write_toml(&dir.join("simulation.toml"), &p.faults[i])?;
        }
    }
    Ok(())
}

pub(crate) fn bar(total: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

async fn federate_in_process(p: &mut Prepared, progress: bool) -> anyhow::Result<Vec<RoundMetrics>> {
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    let shutdown = CancellationToken::new();
    let mut agg =
        Aggregator::start(p.aggregator.clone(), &shutdown.child_token()).await.context("starting the aggregator")?;
    // The run folder's federation.toml names the port actually bound, as its node.toml files do.
    p.aggregator.listen = agg.listen_addrs().to_vec();
    let addr = agg.listen_addrs()[0].clone().with(Protocol::P2p(net::peer_id(&agg.id())));
    write_configs(p, &addr)?;
    let (tx, mut rx) = mpsc::channel(64);
    agg.set_progress(tx);
    let agg_task = tokio::spawn(agg.run());
    let (round_tx, round_rx) = watch::channel(0u64);
    let mut node_tasks = Vec::new();
    for (i, cfg) in p.nodes.iter().enumerate() {
        let cfg = cfg.clone();
        let mut faults = p.faults[i].clone();
        let token = shutdown.child_token();
        let mut round_rx = round_rx.clone();
        let return_at = p.scenario.faults.iter().find(|f| f.node == i).and_then(|f| f.return_at);
        node_tasks.push(tokio::spawn(async move {
            loop {
                let summary = node::run_with(cfg.clone(), Arc::new(faults.clone()), token.clone()).await?;
                match (summary.left_at, return_at) {
                    (Some(_), Some(back)) => {
                        // Come back once round `back − 1` is complete, in time for round `back`.
                        tokio::select! {
                            _ = token.cancelled() => return Ok::<_, node::Error>(()),
                            r = round_rx.wait_for(|r| *r + 1 >= back) => if r.is_err() { return Ok(()) },
                        }
                        faults.leave_at_round = None;
                    }
                    _ => return Ok(()),
                }
            }
        }));
    }
    let pb = bar(p.scenario.rounds, progress);
    let mut metrics = Vec::new();
    let mut agg_task = agg_task;
    let summary = loop {
        tokio::select! {
            m = rx.recv() => if let Some(m) = m {
                pb.set_position(m.round);
                pb.set_message(format!("{} nodes, accuracy {:.3}", m.participants.len(), m.accuracy.unwrap_or(0.0)));
                let _ = round_tx.send(m.round);
                metrics.push(m);
            },
            r = &mut agg_task => break r.context("aggregator task")?.context("aggregator")?,
        }
    };
    while let Ok(m) = rx.try_recv() {
        metrics.push(m);
    }
    pb.finish_and_clear();
    shutdown.cancel();
    for t in node_tasks {
        t.await.context("node task")?.context("node")?;
    }
    Ok(summary.rounds)
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

fn evaluate(p: &Prepared, metrics: &[RoundMetrics], federation_seconds: f64) -> anyhow::Result<Results> {
    let s = &p.scenario;
    let test = p.dataset.subset(&p.split.test);
    let global = Model::load(&p.aggregator.output.join("global"), s.backend).context("loading the global model")?;
    let global_accuracy =
        learning::eval::evaluate(&global.soft_labels(&test.features, 1.0, 256)?, &test.labels, test.classes).accuracy;
    let nodes: Vec<Model> = p
        .nodes
        .iter()
        .map(|n| {
            Model::load(&n.state_dir.join("model"), s.backend)
                .with_context(|| format!("loading {}", n.state_dir.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let (ensemble_accuracy, node_accuracy) = baselines::ensemble(&nodes, &test)?;
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
        node_model: ModelFacts::of(&nodes[0])?,
        federation_seconds,
        peak_rss_mib: peak_rss_mib(),
        privacy: privacy_result(p)?,
    })
}
