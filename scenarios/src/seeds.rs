//! Runs over several seeds: each seed draws its own split, partition, keys and initial weights;
//! the summary gives every method's mean ± standard deviation, so that accuracy claims rest on
//! more than one draw.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::layout::RunDir;
use crate::provenance::Provenance;
use crate::results::Results;
use crate::run::RunOptions;
use crate::spec::Scenario;

/// Mean and (sample) standard deviation of one figure over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    pub std: f64,
    /// The value of each seed, in seed order.
    pub values: Vec<f64>,
}

impl Stat {
    /// The statistics of `values`.
    pub fn of(values: Vec<f64>) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var =
            if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Self { mean, std: var.sqrt(), values }
    }
}

/// Every method's figures over the seeds (what `results.json` holds at the top of a
/// multi-seed run; each seed's own outputs are in `seed-N/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedSummary {
    /// Scenario name.
    pub scenario: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Rounds of each run.
    pub rounds: u64,
    /// Global student, test accuracy.
    pub global_accuracy: Stat,
    /// Teachers' ensemble.
    pub ensemble_accuracy: Stat,
    /// Node models after federation, mean over nodes.
    pub mean_node_accuracy: Stat,
    /// Local-only training, mean over nodes.
    pub local_only_mean: Option<Stat>,
    /// FedAvg with the same rounds.
    pub fedavg_accuracy: Option<Stat>,
    /// All private data pooled.
    pub centralized_accuracy: Option<Stat>,
    /// The student architecture on the public set's true labels (its ceiling).
    pub public_labels_accuracy: Option<Stat>,
    /// Federated distillation's bytes per round, both directions.
    pub bytes_per_round: Stat,
    /// FedAvg's bytes per round, both directions.
    pub fedavg_bytes_per_round: Option<Stat>,
    /// What made these figures (at the top of a multi-seed run's `results.json`; a sweep's or an
    /// ablation's summaries have theirs at their own top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

fn all<T>(results: &[Results], f: impl Fn(&Results) -> Option<T>) -> Option<Vec<T>> {
    results.iter().map(f).collect()
}

/// Summarises the runs of one scenario over seeds.
pub fn summarise(results: &[Results]) -> SeedSummary {
    let stat = |f: &dyn Fn(&Results) -> f64| Stat::of(results.iter().map(f).collect());
    let opt = |f: &dyn Fn(&Results) -> Option<f64>| all(results, f).map(Stat::of);
    SeedSummary {
        scenario: results.first().map(|r| r.scenario.clone()).unwrap_or_default(),
        seeds: results.iter().map(|r| r.seed).collect(),
        rounds: results.first().map_or(0, |r| r.rounds.len() as u64),
        global_accuracy: stat(&|r| r.global_accuracy as f64),
        ensemble_accuracy: stat(&|r| r.ensemble_accuracy as f64),
        mean_node_accuracy: stat(&|r| r.mean_node_accuracy as f64),
        local_only_mean: opt(&|r| r.local_only.as_ref().map(|l| l.mean as f64)),
        fedavg_accuracy: opt(&|r| r.fedavg.as_ref().map(|b| b.accuracy as f64)),
        centralized_accuracy: opt(&|r| r.centralized.as_ref().map(|b| b.accuracy as f64)),
        public_labels_accuracy: opt(&|r| r.public_labels.as_ref().map(|b| b.accuracy as f64)),
        bytes_per_round: stat(&|r| r.bytes_per_round),
        fedavg_bytes_per_round: opt(&|r| {
            r.fedavg.as_ref().map(|b| b.bytes_total as f64 / b.per_round.len().max(1) as f64)
        }),
        provenance: None,
    }
}

/// Runs `s` once per seed into `OUT/seed-N/` (`OUT` being `opts.out`), telling `opts.notify`
/// before each run.
pub async fn run_each(s: &Scenario, seeds: &[u64], opts: &RunOptions) -> anyhow::Result<Vec<Results>> {
    let out = RunDir::new(&opts.out);
    let mut all = Vec::new();
    for &seed in seeds {
        let s = Scenario { seed, ..s.clone() };
        let dir = out.seed(seed);
        (opts.notify)(&format!(
            "running `{}` ({} nodes, {} rounds, seed {seed}) into {}",
            s.name,
            s.split.nodes,
            s.rounds,
            dir.root().display()
        ));
        all.push(crate::run::run(&s, &RunOptions { out: dir.root().to_owned(), ..opts.clone() }).await?);
    }
    Ok(all)
}

/// Runs `s` once per seed into `OUT/seed-N/` and writes the summary into `OUT`.
pub async fn run(s: &Scenario, seeds: &[u64], opts: &RunOptions) -> anyhow::Result<SeedSummary> {
    let summary = SeedSummary { provenance: opts.provenance.clone(), ..summarise(&run_each(s, seeds, opts).await?) };
    write(&RunDir::new(&opts.out), &summary)?;
    Ok(summary)
}

fn pct(s: &Stat) -> String {
    format!("{:.2} ± {:.2} %", 100.0 * s.mean, 100.0 * s.std)
}

/// The summary as a Markdown table.
pub fn markdown(s: &SeedSummary) -> String {
    let mut m = String::new();
    let seeds: Vec<String> = s.seeds.iter().map(|v| v.to_string()).collect();
    let _ = writeln!(m, "# `{}` over seeds {} ({} rounds)\n", s.scenario, seeds.join(", "), s.rounds);
    let _ = writeln!(
        m,
        "Mean ± sample standard deviation over {} seeds; each seed's report is in `seed-N/`.\n",
        s.seeds.len()
    );
    let _ = writeln!(m, "| model | test accuracy | bytes per round |\n|---|---|---|");
    let mut row = |name: &str, st: Option<&Stat>, bytes: Option<&Stat>| {
        if let Some(st) = st {
            let b = bytes.map(|b| format!("{:.0}", b.mean)).unwrap_or_else(|| "–".into());
            let _ = writeln!(m, "| {name} | {} | {b} |", pct(st));
        }
    };
    row("federated distillation: global student", Some(&s.global_accuracy), Some(&s.bytes_per_round));
    row("teachers' ensemble", Some(&s.ensemble_accuracy), None);
    row("node models after federation (mean)", Some(&s.mean_node_accuracy), None);
    row("local-only (mean node)", s.local_only_mean.as_ref(), None);
    row("FedAvg, same rounds", s.fedavg_accuracy.as_ref(), s.fedavg_bytes_per_round.as_ref());
    row("centralized", s.centralized_accuracy.as_ref(), None);
    row("student on the public set's true labels (its ceiling)", s.public_labels_accuracy.as_ref(), None);
    m
}

/// Writes `results.json` and `report.md` of a multi-seed run into `dir`.
pub fn write(dir: &RunDir, s: &SeedSummary) -> anyhow::Result<()> {
    learning::fs::atomic_write(&dir.results(), &serde_json::to_vec_pretty(s)?)?;
    learning::fs::atomic_write(&dir.report(), markdown(s).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation() {
        let s = Stat::of(vec![0.9, 0.92, 0.94]);
        assert!((s.mean - 0.92).abs() < 1e-12);
        assert!((s.std - 0.02).abs() < 1e-12);
        assert_eq!(Stat::of(vec![0.5]).std, 0.0);
    }
}
