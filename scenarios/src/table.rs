//! Results tables that regenerate themselves: `fd-scenarios table RUN_DIR` makes the table of a
//! finished run from its `results.json` alone (one run, several seeds, a sweep or an ablation):
//! the setting, the figures as mean ± std over the seeds, and the command, day and commit that
//! measured them. Re-measuring a table of the documentation is running its command again and
//! this one after it.

use std::fmt::Write as _;

use crate::ablation::Ablation;
use crate::outcome::Outcome;
use crate::provenance::{Provenance, UNKNOWN};
use crate::seeds::{SeedSummary, Stat, summarise};
use crate::sweep::{Budget, Sweep};

/// A table of a run: a caption, a header, rows, notes and what made the figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The setting, in a sentence.
    pub caption: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells, row by row, as many as the header has.
    pub rows: Vec<Vec<String>>,
    /// Sentences under the table.
    pub notes: Vec<String>,
    /// What made the figures (`None`: a run that did not record it).
    pub provenance: Option<Provenance>,
}

impl Table {
    /// The table of a run folder's results.
    pub fn of(outcome: &Outcome) -> Self {
        let mut t = match outcome {
            Outcome::Single(r) => seeds(&summarise(std::slice::from_ref(r.as_ref()))),
            Outcome::Seeds(s) => seeds(s),
            Outcome::Sweep(s) => sweep(s),
            Outcome::Ablation(a) => ablation(a),
        };
        t.provenance = outcome.provenance().cloned();
        t
    }

    /// The line that says what made the figures.
    fn made_by(&self) -> String {
        match &self.provenance {
            Some(p) => format!("Measured by `{}` on {}, commit `{}`.", p.command, p.date, p.commit),
            None => format!("Measured by an unrecorded command on an unknown day, commit `{UNKNOWN}`."),
        }
    }

    /// As Markdown, for the documentation.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "{}\n", self.caption);
        let _ = writeln!(m, "| {} |", self.header.join(" | "));
        let _ = writeln!(m, "|{}", "---|".repeat(self.header.len()));
        for row in &self.rows {
            let _ = writeln!(m, "| {} |", row.join(" | "));
        }
        let _ = writeln!(m);
        for note in &self.notes {
            let _ = writeln!(m, "{note}\n");
        }
        let _ = writeln!(m, "{}", self.made_by());
        m
    }

    /// As aligned plain text, for a terminal.
    pub fn text(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - width(c)))).collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut t = format!("{}\n\n", self.caption);
        t += &line(&self.header);
        t += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
        for row in &self.rows {
            t += &line(row);
        }
        for note in &self.notes {
            let _ = write!(t, "\n{note}\n");
        }
        let _ = write!(t, "\n{}\n", self.made_by());
        t
    }
}

/// An accuracy in %, with its standard deviation over the seeds if there are several.
fn pct(s: &Stat) -> String {
    if s.values.len() > 1 {
        format!("{:.2} ± {:.2}", 100.0 * s.mean, 100.0 * s.std)
    } else {
        format!("{:.2}", 100.0 * s.mean)
    }
}

/// The seeds, comma-separated.
fn list(seeds: &[u64]) -> String {
    seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// "1 round, seed 3" or "10 rounds, seeds 0, 1, 2".
fn setting(rounds: u64, seeds: &[u64]) -> String {
    let rounds = if rounds == 1 { "1 round".to_owned() } else { format!("{rounds} rounds") };
    let seeds = if seeds.len() == 1 { format!("seed {}", list(seeds)) } else { format!("seeds {}", list(seeds)) };
    format!("{rounds}, {seeds}")
}

/// How the figures are summarised over `seeds`: nothing to say for one.
fn over(seeds: &[u64]) -> &'static str {
    if seeds.len() > 1 { ", mean ± sample standard deviation over the seeds" } else { "" }
}

/// One scenario (one seed or several): a row a model, a column a seed, then the mean ± std.
fn seeds(s: &SeedSummary) -> Table {
    let several = s.seeds.len() > 1;
    let mut header = vec!["model".to_owned()];
    header.extend(s.seeds.iter().map(|seed| format!("seed {seed}")));
    if several {
        header.push("mean ± std".into());
    }
    header.push("bytes per round".into());
    let mut rows = Vec::new();
    let mut row = |name: &str, st: Option<&Stat>, bytes: Option<&Stat>| {
        let Some(st) = st else { return };
        let mut cells = vec![name.to_owned()];
        cells.extend(st.values.iter().map(|v| format!("{:.2}", 100.0 * v)));
        if several {
            cells.push(pct(st));
        }
        cells.push(bytes.map_or_else(|| "–".to_owned(), |b| format!("{:.0}", b.mean)));
        rows.push(cells);
    };
    row("federated distillation: global student", Some(&s.global_accuracy), Some(&s.bytes_per_round));
    row("teachers' ensemble", Some(&s.ensemble_accuracy), None);
    row("node models after federation (mean)", Some(&s.mean_node_accuracy), None);
    row("local-only (mean node)", s.local_only_mean.as_ref(), None);
    row("FedAvg, same rounds", s.fedavg_accuracy.as_ref(), s.fedavg_bytes_per_round.as_ref());
    row("centralized", s.centralized_accuracy.as_ref(), None);
    row("student on the public set's true labels", s.public_labels_accuracy.as_ref(), None);
    Table {
        caption: format!("`{}`, {}: test accuracy in %{}.", s.scenario, setting(s.rounds, &s.seeds), over(&s.seeds)),
        header,
        rows,
        notes: Vec::new(),
        provenance: None,
    }
}

/// A privacy sweep: a row a budget.
fn sweep(s: &Sweep) -> Table {
    let first = s.points.first().map(|p| &p.summary);
    let seeds = first.map_or(&[][..], |f| &f.seeds);
    let header = ["ε per node", "global student", "node models (mean)", "DP-FedAvg, same ε", "teachers' ensemble"];
    let mut header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    header.push("largest ε spent".into());
    let rows = s
        .points
        .iter()
        .map(|p| {
            let spent = match p.budget {
                Budget::None => "–".to_owned(),
                Budget::Epsilon(_) => format!("{:.3}", p.max_spent.values.iter().copied().fold(0.0, f64::max)),
            };
            let budget = match p.budget {
                Budget::None => "no DP".to_owned(),
                Budget::Epsilon(e) => e.to_string(),
            };
            vec![
                budget,
                pct(&p.summary.global_accuracy),
                pct(&p.summary.mean_node_accuracy),
                p.summary.fedavg_accuracy.as_ref().map_or_else(|| "–".to_owned(), pct),
                pct(&p.summary.ensemble_accuracy),
                spent,
            ]
        })
        .collect();
    Table {
        caption: format!(
            "`{}`, {}: test accuracy in %{} against each node's record-level (ε, δ = {:e}) DP-SGD budget.",
            s.scenario,
            setting(first.map_or(0, |f| f.rounds), seeds),
            over(seeds),
            s.delta
        ),
        header,
        rows,
        notes: Vec::new(),
        provenance: None,
    }
}

/// An ablation: a row a variant, with its difference from the full run.
fn ablation(a: &Ablation) -> Table {
    let header = ["variant", "what changes", "global student", "Δ", "node models (mean)", "Δ", "teachers' ensemble"];
    let mut header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    header.push("bytes per round".into());
    let Some(full) = a.rows.first().map(|r| &r.summary) else {
        return Table {
            caption: format!("`{}`: an ablation with no runs.", a.scenario),
            header,
            rows: Vec::new(),
            notes: Vec::new(),
            provenance: None,
        };
    };
    let delta = |s: &Stat, f: &Stat| format!("{:+.2}", 100.0 * (s.mean - f.mean));
    let rows = a
        .rows
        .iter()
        .map(|r| {
            let s = &r.summary;
            vec![
                format!("`{}`", r.name),
                r.about.clone(),
                pct(&s.global_accuracy),
                delta(&s.global_accuracy, &full.global_accuracy),
                pct(&s.mean_node_accuracy),
                delta(&s.mean_node_accuracy, &full.mean_node_accuracy),
                pct(&s.ensemble_accuracy),
                format!("{:.0}", s.bytes_per_round.mean),
            ]
        })
        .collect();
    let baselines: Vec<String> = [
        ("FedAvg, same rounds", &full.fedavg_accuracy),
        ("local-only (mean node)", &full.local_only_mean),
        ("centralized", &full.centralized_accuracy),
        ("student on the public set's true labels", &full.public_labels_accuracy),
    ]
    .into_iter()
    .filter_map(|(name, st)| st.as_ref().map(|st| format!("{name} {}", pct(st))))
    .collect();
    let notes = if baselines.is_empty() {
        Vec::new()
    } else {
        vec![format!("Baselines of the full run: {}.", baselines.join("; "))]
    };
    Table {
        caption: format!(
            "`{}`, {}: test accuracy in %{}; Δ: difference from the full run (every technique on).",
            a.scenario,
            setting(full.rounds, &full.seeds),
            over(&full.seeds)
        ),
        header,
        rows,
        notes,
        provenance: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ablation::Row;
    use crate::sweep::Point;

    fn stat(values: &[f64]) -> Stat {
        Stat::of(values.to_vec())
    }

    fn summary(scenario: &str, seeds: &[u64], global: &[f64]) -> SeedSummary {
        SeedSummary {
            scenario: scenario.into(),
            seeds: seeds.to_vec(),
            rounds: 10,
            global_accuracy: stat(global),
            ensemble_accuracy: stat(global),
            mean_node_accuracy: stat(global),
            local_only_mean: None,
            fedavg_accuracy: Some(stat(global)),
            centralized_accuracy: None,
            public_labels_accuracy: None,
            bytes_per_round: stat(&vec![1000.0; seeds.len()]),
            fedavg_bytes_per_round: Some(stat(&vec![9000.0; seeds.len()])),
            provenance: None,
        }
    }

    fn made() -> Provenance {
        Provenance {
            command: "fd-scenarios run quickstart --seeds 0,1".into(),
            date: "2026-01-02".into(),
            commit: "abc1234".into(),
        }
    }

    #[test]
    fn several_seeds_give_a_column_each_and_their_mean_and_deviation() {
        let s = SeedSummary { provenance: Some(made()), ..summary("quickstart", &[0, 1], &[0.9, 0.92]) };
        let m = Table::of(&Outcome::Seeds(Box::new(s))).markdown();
        assert!(
            m.starts_with("`quickstart`, 10 rounds, seeds 0, 1: test accuracy in %, mean ± sample standard deviation over the seeds.\n"),
            "{m}"
        );
        assert!(
            m.contains("| model | seed 0 | seed 1 | mean ± std | bytes per round |\n|---|---|---|---|---|\n"),
            "{m}"
        );
        assert!(m.contains("| federated distillation: global student | 90.00 | 92.00 | 91.00 ± 1.41 | 1000 |"), "{m}");
        assert!(m.contains("| FedAvg, same rounds | 90.00 | 92.00 | 91.00 ± 1.41 | 9000 |"), "{m}");
        assert!(!m.contains("centralized"), "{m}");
        assert!(
            m.ends_with("Measured by `fd-scenarios run quickstart --seeds 0,1` on 2026-01-02, commit `abc1234`.\n")
        );
    }

    #[test]
    fn one_seed_has_no_deviation_and_no_record_says_unknown() {
        let m = Table::of(&Outcome::Seeds(Box::new(summary("q", &[42], &[0.95])))).markdown();
        assert!(m.starts_with("`q`, 10 rounds, seed 42: test accuracy in %.\n"), "{m}");
        assert!(m.contains("| model | seed 42 | bytes per round |"), "{m}");
        assert!(m.contains("| federated distillation: global student | 95.00 | 1000 |"), "{m}");
        assert!(m.contains("commit `unknown`"), "{m}");
    }

    #[test]
    fn a_sweep_has_a_row_a_budget_and_an_ablation_a_row_a_variant() {
        let point =
            |budget, g: &[f64]| Point { budget, summary: summary("p", &[0, 1], g), max_spent: stat(&[3.9, 3.95]) };
        let s = Sweep {
            scenario: "p".into(),
            delta: 1e-5,
            points: vec![point(Budget::Epsilon(4.0), &[0.8, 0.82]), point(Budget::None, &[0.9, 0.9])],
            provenance: Some(made()),
        };
        let m = Table::of(&Outcome::Sweep(s)).markdown();
        assert!(m.contains("| 4 | 81.00 ± 1.41 | 81.00 ± 1.41 | 81.00 ± 1.41 | 81.00 ± 1.41 | 3.950 |"), "{m}");
        assert!(m.contains("| no DP | 90.00 ± 0.00 | 90.00 ± 0.00 | 90.00 ± 0.00 | 90.00 ± 0.00 | – |"), "{m}");
        let row = |name: &str, g: &[f64]| Row {
            name: name.into(),
            about: format!("{name} on"),
            summary: summary("a", &[0, 1], g),
        };
        let a = Ablation {
            scenario: "a".into(),
            rows: vec![row("full", &[0.9, 0.92]), row("off", &[0.8, 0.82])],
            provenance: None,
        };
        let t = Table::of(&Outcome::Ablation(a));
        assert_eq!(t.rows[1][..4], ["`off`", "off on", "81.00 ± 1.41", "-10.00"]);
        assert_eq!(t.notes, ["Baselines of the full run: FedAvg, same rounds 91.00 ± 1.41."]);
        // The text form aligns the same cells.
        let text = t.text();
        assert!(text.lines().any(|l| l.starts_with("`off`   ") && l.contains("-10.00")), "{text}");
    }
}
