//! A privacy–utility sweep: the same scenario at several per-node budgets ε (`--epsilons
//! 1,2,4,8,inf`), each over one or more seeds, with DP-FedAvg at the same ε in every run. The
//! summary gives, for each ε, the global student's, the node models' and DP-FedAvg's accuracy
//! (mean ± std over seeds) and the largest ε any node spent, as `results.json`, a Markdown
//! table in `report.md` and a plot in `privacy-utility.png`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::layout::{PRIVACY_PLOT, RunDir};
use crate::provenance::Provenance;
use crate::run::RunOptions;
use crate::seeds::{SeedSummary, Stat};
use crate::spec::{NodesPrivacy, Scenario};

/// A per-node budget of the sweep: a finite ε, or none (no differential privacy).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Budget {
    /// ε per node.
    Epsilon(f64),
    /// No DP (`inf` on the command line).
    None,
}

impl std::str::FromStr for Budget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "inf" {
            return Ok(Budget::None);
        }
        match s.parse::<f64>() {
            Ok(e) if e.is_finite() && e > 0.0 => Ok(Budget::Epsilon(e)),
            _ => Err(format!("`{s}`: an ε is a positive number, or `inf` for no differential privacy")),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Epsilon(e) => write!(f, "{e}"),
            Budget::None => f.write_str("inf"),
        }
    }
}

impl Budget {
    /// `scenario` at this budget: its `[nodes.privacy]` (δ, clipping norm, rounds) with this ε,
    /// δ = 10⁻⁵ and C = 1 if it has none; without privacy for `inf`.
    pub fn apply(self, scenario: &Scenario) -> Scenario {
        let mut s = scenario.clone();
        s.nodes.privacy = match self {
            Budget::None => None,
            Budget::Epsilon(epsilon) => {
                let base = scenario.nodes.privacy.clone().unwrap_or(NodesPrivacy {
                    epsilon,
                    delta: 1e-5,
                    clip_norm: 1.0,
                    rounds: None,
                    nodes: None,
                });
                Some(NodesPrivacy { epsilon, ..base })
            }
        };
        s
    }
}

/// One budget's figures over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The budget.
    pub budget: Budget,
    /// Every method's figures over the seeds.
    pub summary: SeedSummary,
    /// The largest ε any node spent, per seed (0 without DP).
    pub max_spent: Stat,
}

/// The sweep, as written to `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// Scenario name.
    pub scenario: String,
    /// δ of every finite budget.
    pub delta: f64,
    /// One point per budget, in the order asked.
    pub points: Vec<Point>,
    /// What made these figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Runs `s` at each budget, each over `seeds`, into `OUT/eps-E/seed-N/` (`OUT` being
/// `opts.out`), and writes the sweep's results, table and plot into `OUT`.
pub async fn run(s: &Scenario, budgets: &[Budget], seeds: &[u64], opts: &RunOptions) -> anyhow::Result<Sweep> {
    let out = RunDir::new(&opts.out);
    let mut points = Vec::new();
    for &budget in budgets {
        let at = budget.apply(s);
        let all = crate::seeds::run_each(
            &at,
            seeds,
            &RunOptions { out: out.budget(budget).root().to_owned(), ..opts.clone() },
        )
        .await?;
        let max_spent = Stat::of(all.iter().map(|r| r.privacy.as_ref().map_or(0.0, |p| p.max_spent)).collect());
        points.push(Point { budget, summary: crate::seeds::summarise(&all), max_spent });
    }
    let delta = Budget::Epsilon(1.0).apply(s).nodes.privacy.map_or(1e-5, |p| p.delta);
    let sweep = Sweep { scenario: s.name.clone(), delta, points, provenance: opts.provenance.clone() };
    write(&out, &sweep)?;
    Ok(sweep)
}

fn pct(s: &Stat) -> String {
    format!("{:.2} ± {:.2}", 100.0 * s.mean, 100.0 * s.std)
}

/// The sweep as a Markdown table.
pub fn markdown(s: &Sweep) -> String {
    let mut m = String::new();
    let seeds = s
        .points
        .first()
        .map(|p| p.summary.seeds.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let rounds = s.points.first().map_or(0, |p| p.summary.rounds);
    let _ = writeln!(m, "# `{}`: privacy against accuracy ({rounds} rounds, seeds {seeds})\n", s.scenario);
    let _ = writeln!(
        m,
        "Per-node record-level (ε, δ = {:e}) DP-SGD; test accuracy in %, mean ± std over seeds. DP-FedAvg trains with the same DP-SGD and ε per node.\n",
        s.delta
    );
    let _ = writeln!(
        m,
        "| ε per node | global student | node models (mean) | DP-FedAvg | teachers' ensemble | largest ε spent |\n|---|---|---|---|---|---|"
    );
    for p in &s.points {
        let fedavg = p.summary.fedavg_accuracy.as_ref().map(pct).unwrap_or_else(|| "–".into());
        let spent = match p.budget {
            Budget::None => "–".to_owned(),
            Budget::Epsilon(_) => format!("{:.3}", p.max_spent.values.iter().copied().fold(0.0, f64::max)),
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {fedavg} | {} | {spent} |",
            p.budget,
            pct(&p.summary.global_accuracy),
            pct(&p.summary.mean_node_accuracy),
            pct(&p.summary.ensemble_accuracy)
        );
    }
    m
}

/// Global, node and DP-FedAvg accuracy against ε (log scale; `inf` drawn at twice the largest ε).
pub fn plot(s: &Sweep, path: &Path) -> anyhow::Result<()> {
    let finite: Vec<f64> =
        s.points.iter().filter_map(|p| if let Budget::Epsilon(e) = p.budget { Some(e) } else { None }).collect();
    let (lo, hi) = (finite.iter().copied().fold(f64::INFINITY, f64::min), finite.iter().copied().fold(0.0, f64::max));
    let (lo, hi) = if finite.is_empty() { (1.0, 2.0) } else { (lo / 1.5, hi * 3.0) };
    let x = |b: Budget| match b {
        Budget::Epsilon(e) => e,
        Budget::None => hi / 1.5,
    };
    let root = BitMapBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: accuracy against ε per node (rightmost: no DP)", s.scenario), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0f64..1.0)?;
    chart.configure_mesh().x_desc("ε per node").y_desc("test accuracy").draw()?;
    // A line of the plot: its name, colour, and the statistic it draws.
    type Series = (&'static str, RGBColor, fn(&SeedSummary) -> Option<&Stat>);
    let series: [Series; 3] = [
        ("global student", BLUE, |s| Some(&s.global_accuracy)),
        ("node models (mean)", GREEN, |s| Some(&s.mean_node_accuracy)),
        ("DP-FedAvg", RED, |s| s.fedavg_accuracy.as_ref()),
    ];
    for (name, colour, get) in series {
        let pts: Vec<(f64, f64)> =
            s.points.iter().filter_map(|p| get(&p.summary).map(|st| (x(p.budget), st.mean))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 16, b)], colour.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `results.json`, `report.md` and `privacy-utility.png` of a sweep into `dir`.
pub fn write(dir: &RunDir, s: &Sweep) -> anyhow::Result<()> {
    learning::fs::atomic_write(&dir.results(), &serde_json::to_vec_pretty(s)?)?;
    learning::fs::atomic_write(&dir.report(), markdown(s).as_bytes())?;
    plot(s, &dir.plot(PRIVACY_PLOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_apply() {
        assert_eq!("4".parse::<Budget>(), Ok(Budget::Epsilon(4.0)));
        assert_eq!("inf".parse::<Budget>(), Ok(Budget::None));
        for bad in ["0", "-1", "NaN", "four", ""] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
        let base = crate::presets::quickstart();
        assert_eq!(Budget::None.apply(&base).nodes.privacy, None);
        let p = Budget::Epsilon(2.0).apply(&base).nodes.privacy.unwrap();
        assert_eq!((p.epsilon, p.delta, p.clip_norm), (2.0, 1e-5, 1.0));
    }
}
