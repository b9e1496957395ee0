//! Baselines on the same split: local-only, centralized, FedAvg, the teachers' ensemble, and a
//! student trained on the public set's true labels.

use learning::Model;
use learning::data::Dataset;
use learning::eval::{self, ModelFacts};
use learning::joint::fit_joint;
use learning::train::{self, TrainConfig};
use protocol::seed::{Stream, derive};

pub use crate::results::Baseline;
use crate::setup::Prepared;

fn accuracy(net: &Model, test: &Dataset) -> anyhow::Result<f32> {
    Ok(eval::evaluate(&net.soft_labels(&test.features, 1.0, 256)?, &test.labels, test.classes).accuracy)
}

/// The seed of a baseline, `which` being its index in [`Stream::Baseline`], under `base` (the
/// scenario's seed, or a node's for per-node baselines).
fn seed(base: u64, which: Which) -> u64 {
    derive(base, Stream::Baseline, which as u64)
}

/// The baselines that draw seeds.
#[derive(Clone, Copy)]
enum Which {
    LocalOnly = 0,
    Centralized = 1,
    FedAvg = 2,
    PublicLabels = 3,
}

fn epochs_total(p: &Prepared) -> usize {
    (p.scenario.rounds as usize * p.scenario.nodes.train.epochs).max(1)
}

/// Each node alone on its private data, for as many epochs as it trains in the federation.
pub fn local_only(p: &Prepared, test: &Dataset) -> anyhow::Result<Vec<f32>> {
    let mut out = Vec::new();
    for (i, part) in p.parts.iter().enumerate() {
        let cfg = &p.nodes[i];
        let seed = seed(cfg.seed, Which::LocalOnly);
        let mut net = Model::new(&cfg.model, p.dataset.dim, p.dataset.classes, cfg.backend, seed)?;
        let train_cfg = TrainConfig { epochs: epochs_total(p), ..cfg.train.clone() };
        train::fit(&mut net, &p.dataset.subset(part), &train_cfg, seed)?;
        out.push(accuracy(&net, test)?);
    }
    Ok(out)
}

/// Every node's private rows pooled, node 0's architecture (the upper bound).
pub fn centralized(p: &Prepared, test: &Dataset) -> anyhow::Result<Baseline> {
    let t = std::time::Instant::now();
    let all: Vec<usize> = p.parts.concat();
    let cfg = &p.nodes[0];
    let seed = seed(p.scenario.seed, Which::Centralized);
    let mut net = Model::new(&cfg.model, p.dataset.dim, p.dataset.classes, cfg.backend, seed)?;
    let train_cfg = TrainConfig { epochs: epochs_total(p).min(10), ..cfg.train.clone() };
    train::fit(&mut net, &p.dataset.subset(&all), &train_cfg, seed)?;
    Ok(Baseline {
        accuracy: accuracy(&net, test)?,
        per_round: Vec::new(),
        bytes_total: 0,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Federated averaging with the nodes' architecture and local epochs, weighted by local size.
/// With `round.cohort`, each round trains the same cohort as the federation's round
/// ([`aggregator::cohort`]). Bytes count the serialised weights, down to every node asked and
/// back up, each round.
pub fn fedavg(p: &Prepared, test: &Dataset) -> anyhow::Result<Baseline> {
    let t = std::time::Instant::now();
    let cfg0 = &p.nodes[0];
    let mut global =
        Model::new(&cfg0.model, p.dataset.dim, p.dataset.classes, cfg0.backend, seed(p.scenario.seed, Which::FedAvg))?;
    let model_bytes = global.to_bytes()?.len() as u64;
    let nodes = p.parts.len();
    let asked = p.scenario.round.asked(nodes);
    let mut per_round = Vec::new();
    let mut bytes_total = 0;
    for round in 1..=p.scenario.rounds {
        let cohort = aggregator::cohort::positions(nodes, asked, p.aggregator.seed, round);
        let mut locals = Vec::with_capacity(cohort.len());
        let mut weights = Vec::with_capacity(cohort.len());
        for &i in &cohort {
            // A node's rows are copied for its training only: a thousand nodes' copies at once
            // would hold the private rows twice.
            let d = p.dataset.subset(&p.parts[i]);
            let mut local = global.clone();
            // The seed a node trains with in this round of the federation; with `[nodes.privacy]`,
            // DP-SGD planned for the same ε over the same rounds (DP-FedAvg).
            let dp = match &p.nodes[i].privacy {
                Some(cfg) => {
                    Some(node::budget::plan(cfg, d.len(), &p.nodes[i].train, p.scenario.rounds, &Default::default())?.0)
                }
                None => None,
            };
            fit_joint(
                &mut local,
                &d,
                None,
                &p.nodes[i].train,
                dp.as_ref(),
                derive(p.nodes[i].seed, Stream::NodeTraining, round),
            )?;
            locals.push(local);
            weights.push(d.len() as f64);
        }
        let refs: Vec<&Model> = locals.iter().collect();
        global = crate::fedavg::average(&refs, &weights)?;
        per_round.push(accuracy(&global, test)?);
        bytes_total += 2 * model_bytes * cohort.len() as u64;
    }
    Ok(Baseline {
        accuracy: *per_round.last().unwrap_or(&0.0),
        per_round,
        bytes_total,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The student's architecture trained on the reference rows with their true labels: what the
/// global student could reach if the public set were labelled.
pub fn public_labels(p: &Prepared, test: &Dataset) -> anyhow::Result<(Baseline, ModelFacts)> {
    let t = std::time::Instant::now();
    let s = &p.scenario;
    let seed = seed(s.seed, Which::PublicLabels);
    let mut net = Model::new(&s.student.architecture, p.dataset.dim, p.dataset.classes, s.backend, seed)?;
    let epochs = (s.student.distill.train.epochs * s.rounds as usize).min(100);
    let train_cfg = TrainConfig { epochs, ..s.student.distill.train.clone() };
    train::fit(&mut net, &p.dataset.subset(&p.split.reference), &train_cfg, seed)?;
    let facts = ModelFacts::of(&net)?;
    Ok((
        Baseline {
            accuracy: accuracy(&net, test)?,
            per_round: Vec::new(),
            bytes_total: 0,
            seconds: t.elapsed().as_secs_f64(),
        },
        facts,
    ))
}

/// Accuracy of the mean of the nodes' final predictions on the test set (what the student distils).
pub fn ensemble(
    nodes: impl IntoIterator<Item = anyhow::Result<Model>>,
    test: &Dataset,
) -> anyhow::Result<(f32, Vec<f32>)> {
    let mut acc = learning::consensus::MeanAccumulator::new(test.len(), test.classes);
    let mut each = Vec::new();
    for n in nodes {
        let n = n?;
        let probs = n.soft_labels(&test.features, 1.0, 256)?;
        each.push(eval::evaluate(&probs, &test.labels, test.classes).accuracy);
        acc.add(&probs, 1.0)?;
    }
    Ok((eval::evaluate(&acc.finish(), &test.labels, test.classes).accuracy, each))
}
