//! Ablations: a scenario with every technique on (the "full" run) and, for each `[[ablation]]`
//! variant ([`crate::spec::Variant`]), the same scenario with one setting changed, each over the
//! same seeds. The table in `report.md` gives every variant's accuracy and its difference from
//! the full run, so a reader sees what each piece buys.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::layout::{FULL, RunDir};
use crate::provenance::Provenance;
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
/// into `OUT`.
pub async fn run(s: &Scenario, seeds: &[u64], opts: &RunOptions) -> anyhow::Result<Ablation> {
    let out = RunDir::new(&opts.out);
    let into = |name: &str| RunOptions { out: out.variant(name).root().to_owned(), ..opts.clone() };
    let full = Scenario { ablation: Vec::new(), ..s.clone() };
    let mut rows = vec![Row {
        name: FULL.into(),
        about: "every technique on".into(),
        summary: summarise(&run_each(&full, seeds, &into(FULL)).await?),
    }];
    for v in &s.ablation {
        let changed = v.apply(s)?;
        let all = run_each(&changed, seeds, &into(&v.name)).await?;
        rows.push(Row { name: v.name.clone(), about: v.about.clone(), summary: summarise(&all) });
    }
    let ablation = Ablation { scenario: s.name.clone(), rows, provenance: opts.provenance.clone() };
    write(&out, &ablation)?;
    Ok(ablation)
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
