//! Ablations: a scenario with every technique on (the "full" run) and, for each `[[ablation]]`
//! variant ([`crate::spec::Variant`]), the same scenario with one setting changed, each over the
//! same seeds. The table in `report.md` gives every variant's accuracy and its difference from
//! the full run, so a reader sees what each piece buys.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::layout::{FULL, RunDir};
use crate::plots::Curve;
use crate::provenance::Provenance;
use crate::results::Results;
use crate::run::RunOptions;
use crate::seeds::{SeedSummary, Stat, run_each, summarise};
use crate::spec::Scenario;

/// One row of the ablation table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Variant name (`full` for every technique on).
    pub name: String,
    /// What it changes.
    pub about: String,
    /// Its figures over the seeds.
    pub summary: SeedSummary,
}

/// An ablation, as written to `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ablation {
    /// Scenario name.
    pub scenario: String,
    /// The full run first, then each variant in the scenario's order.
    pub rows: Vec<Row>,
    /// What made these figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Runs `s` in full and then once per variant, each over `seeds`, into `OUT/full/seed-N/` and
/// `OUT/VARIANT/seed-N/` (`OUT` being `opts.out`), and writes the ablation's results and table
/// into `OUT`, and the global student's accuracy against cumulative bytes of every variant and
/// FedAvg into `OUT/accuracy-bytes.png`.
pub async fn run(s: &Scenario, seeds: &[u64], opts: &RunOptions) -> anyhow::Result<Ablation> {
    let out = RunDir::new(&opts.out);
    let into = |name: &str| RunOptions { out: out.variant(name).root().to_owned(), ..opts.clone() };
    let full = Scenario { ablation: Vec::new(), ..s.clone() };
    let first = run_each(&full, seeds, &into(FULL)).await?;
    let fedavg = fedavg_curve(&first);
    let mut curves = vec![(FULL.to_owned(), student_curve(&first))];
    let mut rows = vec![Row { name: FULL.into(), about: "every technique on".into(), summary: summarise(&first) }];
    for v in &s.ablation {
        let changed = v.apply(s)?;
        let all = run_each(&changed, seeds, &into(&v.name)).await?;
        curves.push((v.name.clone(), student_curve(&all)));
        rows.push(Row { name: v.name.clone(), about: v.about.clone(), summary: summarise(&all) });
    }
    let ablation = Ablation { scenario: s.name.clone(), rows, provenance: opts.provenance.clone() };
    write(&out, &ablation)?;
    if let Err(e) = crate::plots::accuracy_per_byte_curves(&s.name, &curves, &fedavg, &out.plot("accuracy-bytes.png")) {
        tracing::warn!(error = %e, "the ablation's accuracy-bytes plot was not drawn");
    }
    Ok(ablation)
}

/// The global student's accuracy after each round against the bytes sent until then, both the
/// mean over `runs` (rounds that not every run has are left out).
fn student_curve(runs: &[Results]) -> Curve {
    let rounds = runs.iter().map(|r| r.rounds.len()).min().unwrap_or(0);
    let n = runs.len().max(1) as f64;
    let mut bytes = vec![0f64; runs.len()];
    (0..rounds)
        .map(|i| {
            let mut acc = 0f64;
            for (b, r) in bytes.iter_mut().zip(runs) {
                *b += (r.rounds[i].bytes_up + r.rounds[i].bytes_down) as f64;
                acc += f64::from(r.rounds[i].global_accuracy);
            }
            (bytes.iter().sum::<f64>() / n, (acc / n) as f32)
        })
        .collect()
}

/// FedAvg's accuracy after each round against its bytes until then, the mean over `runs` that
/// ran it.
fn fedavg_curve(runs: &[Results]) -> Curve {
    let with: Vec<_> = runs.iter().filter_map(|r| r.fedavg.as_ref()).collect();
    let rounds = with.iter().map(|f| f.per_round.len()).min().unwrap_or(0);
    let n = with.len().max(1) as f64;
    (0..rounds)
        .map(|i| {
            let bytes: f64 =
                with.iter().map(|f| f.bytes_total as f64 * (i + 1) as f64 / f.per_round.len() as f64).sum();
            let acc: f64 = with.iter().map(|f| f64::from(f.per_round[i])).sum();
            (bytes / n, (acc / n) as f32)
        })
        .collect()
}

fn pct(s: &Stat) -> String {
    format!("{:.2} ± {:.2}", 100.0 * s.mean, 100.0 * s.std)
}

fn delta(s: &Stat, full: &Stat) -> String {
    format!("{:+.2}", 100.0 * (s.mean - full.mean))
}

/// The ablation as a Markdown table, with the full run's baselines below it.
pub fn markdown(a: &Ablation) -> String {
    let mut m = String::new();
    let Some(full) = a.rows.first() else { return m };
    let seeds: Vec<String> = full.summary.seeds.iter().map(|v| v.to_string()).collect();
    let _ = writeln!(m, "# `{}`: ablation ({} rounds, seeds {})\n", a.scenario, full.summary.rounds, seeds.join(", "));
    let _ = writeln!(
        m,
        "Test accuracy in %, mean ± std over seeds; Δ: difference of the means from the full run (every technique on).\n"
    );
    let _ = writeln!(
        m,
        "| variant | what changes | global student | Δ | node models (mean) | Δ | teachers' ensemble | bytes per round |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &a.rows {
        let s = &r.summary;
        let _ = writeln!(
            m,
            "| `{}` | {} | {} | {} | {} | {} | {} | {:.0} |",
            r.name,
            r.about,
            pct(&s.global_accuracy),
            delta(&s.global_accuracy, &full.summary.global_accuracy),
            pct(&s.mean_node_accuracy),
            delta(&s.mean_node_accuracy, &full.summary.mean_node_accuracy),
            pct(&s.ensemble_accuracy),
            s.bytes_per_round.mean
        );
    }
    let f = &full.summary;
    let mut baselines = Vec::new();
    for (name, st) in [
        ("FedAvg, same rounds", &f.fedavg_accuracy),
        ("local-only (mean node)", &f.local_only_mean),
        ("centralized", &f.centralized_accuracy),
        ("student on the public set's true labels", &f.public_labels_accuracy),
    ] {
        if let Some(st) = st {
            baselines.push(format!("{name} {}", pct(st)));
        }
    }
    if !baselines.is_empty() {
        let _ = writeln!(m, "\nBaselines of the full run: {}.", baselines.join("; "));
    }
    m
}

/// Writes `results.json` and `report.md` of an ablation into `dir`.
pub fn write(dir: &RunDir, a: &Ablation) -> anyhow::Result<()> {
    learning::fs::atomic_write(&dir.results(), &serde_json::to_vec_pretty(a)?)?;
    learning::fs::atomic_write(&dir.report(), markdown(a).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use learning::eval::ModelFacts;

    use super::*;
    use crate::results::{Baseline, RoundResult};

    fn run(bytes: &[u64], acc: &[f32], fedavg: Option<(u64, Vec<f32>)>) -> Results {
        let facts = ModelFacts {
            architecture: String::new(),
            parameters: 0,
            bytes: 0,
            latency_us_batch1: 0.0,
            latency_us_batch256: 0.0,
        };
        let round = |(i, (&b, &a)): (usize, (&u64, &f32))| RoundResult {
            round: i as u64 + 1,
            global_accuracy: a,
            participants: Vec::new(),
            bytes_up: b,
            bytes_down: 2 * b,
            fedavg_accuracy: None,
            seconds: 0.0,
            cohort: Vec::new(),
        };
        Results {
            scenario: "s".into(),
            seed: 0,
            rounds: bytes.iter().zip(acc).enumerate().map(round).collect(),
            global_accuracy: 0.0,
            ensemble_accuracy: 0.0,
            node_accuracy: Vec::new(),
            mean_node_accuracy: 0.0,
            local_only: None,
            centralized: None,
            fedavg: fedavg.map(|(bytes_total, per_round)| Baseline {
                accuracy: 0.0,
                per_round,
                bytes_total,
                seconds: 0.0,
            }),
            public_labels: None,
            bytes_total: 0,
            bytes_per_round: 0.0,
            global_model: facts.clone(),
            node_model: facts,
            federation_seconds: 0.0,
            peak_rss_mib: None,
            processes_memory: None,
            compress: Vec::new(),
            privacy: None,
            provenance: None,
        }
    }

    #[test]
    fn curves_are_the_means_over_seeds_of_cumulative_bytes_and_accuracy() {
        let runs = [
            run(&[10, 20, 30], &[0.5, 0.6, 0.7], Some((400, vec![0.4, 0.8]))),
            run(&[30, 40], &[0.7, 0.8], Some((800, vec![0.6, 1.0]))),
        ];
        // Both directions (up b, down 2b), summed round by round; the rounds both runs have.
        let close = |got: Curve, want: &[(f64, f32)]| {
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g.0 - w.0).abs() < 1e-9 && (g.1 - w.1).abs() < 1e-6, "{got:?} against {want:?}");
            }
        };
        close(student_curve(&runs), &[(60.0, 0.6), (150.0, 0.7)]);
        close(fedavg_curve(&runs), &[(300.0, 0.5), (600.0, 0.9)]);
        assert!(fedavg_curve(&[run(&[1], &[0.5], None)]).is_empty());
    }
}
