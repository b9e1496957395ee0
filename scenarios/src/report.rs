//! Writes `results.json`, `rounds.csv` and `report.md`, and the summary table printed at the end.

use std::fmt::Write as _;

use crate::results::Results;
use crate::setup::Prepared;

/// Writes the run's result files into its folder.
pub fn write(p: &Prepared, r: &Results) -> anyhow::Result<()> {
    let dir = &p.dir;
    learning::fs::atomic_write(&dir.results(), &serde_json::to_vec_pretty(r)?)?;
    // `cohort`: the nodes a round asked, separated by spaces (empty without `round.cohort`).
    let mut csv =
        String::from("round,global_accuracy,fedavg_accuracy,participants,bytes_up,bytes_down,seconds,cohort\n");
    for x in &r.rounds {
        let _ = writeln!(
            csv,
            "{},{:.6},{},{},{},{},{:.3},{}",
            x.round,
            x.global_accuracy,
            x.fedavg_accuracy.map(|a| format!("{a:.6}")).unwrap_or_default(),
            x.participants.len(),
            x.bytes_up,
            x.bytes_down,
            x.seconds,
            x.cohort.join(" ")
        );
    }
    learning::fs::atomic_write(&dir.rounds_csv(), csv.as_bytes())?;
    let counts = learning::data::label_counts(&p.parts, &p.dataset.labels, p.dataset.classes);
    let plots: [(&str, crate::plots::Res); 3] = [
        ("accuracy.png", crate::plots::accuracy_per_round(r, &dir.plot("accuracy.png"))),
        ("accuracy-bytes.png", crate::plots::accuracy_per_byte(r, &dir.plot("accuracy-bytes.png"))),
        ("labels.png", crate::plots::label_distribution(&counts, &dir.plot("labels.png"))),
    ];
    let compress_plot =
        if r.compress.is_empty() { Ok(()) } else { crate::plots::accuracy_per_size(r, &dir.plot("compress.png")) };
    for (name, res) in plots.into_iter().chain([("compress.png", compress_plot)]) {
        if let Err(e) = res {
            anyhow::bail!("cannot draw {name}: {e}");
        }
    }
    learning::fs::atomic_write(&dir.report(), markdown(p, r).as_bytes())?;
    Ok(())
}

fn pct(v: f32) -> String {
    format!("{:.2} %", 100.0 * v)
}

/// The summary table printed at the end of a run.
pub fn summary(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<44} {:>10} {:>14}", "model", "test acc", "bytes/round");
    let mut row = |name: &str, acc: f32, bytes: Option<f64>| {
        let b = bytes.map(|b| format!("{:.0}", b)).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{name:<44} {:>10} {b:>14}", pct(acc));
    };
    row("federated distillation: global student", r.global_accuracy, Some(r.bytes_per_round));
    row("teachers' ensemble (mean of node models)", r.ensemble_accuracy, None);
    row("node models after federation (mean)", r.mean_node_accuracy, None);
    if let Some(l) = &r.local_only {
        row("local-only (mean node)", l.mean, None);
        row("local-only (best node)", l.best, None);
    }
    if let Some(f) = &r.fedavg {
        row(
            "FedAvg (same nodes, rounds, epochs)",
            f.accuracy,
            Some(f.bytes_total as f64 / r.rounds.len().max(1) as f64),
        );
    }
    if let Some(c) = &r.centralized {
        row("centralized (all private data pooled)", c.accuracy, None);
    }
    if let Some(pl) = &r.public_labels {
        row("student on the public set's true labels", pl.accuracy, None);
    }
    let _ = writeln!(
        s,
        "global student: {} params, {} bytes, {:.1} µs/sample (batch 1), {:.2} µs/sample (batch 256); node model: {} params",
        r.global_model.parameters,
        r.global_model.bytes,
        r.global_model.latency_us_batch1,
        r.global_model.latency_us_batch256,
        r.node_model.parameters
    );
    let _ = writeln!(s, "federation: {} rounds in {:.1} s", r.rounds.len(), r.federation_seconds);
    if let Some(m) = &r.processes_memory {
        let _ = writeln!(
            s,
            "memory of the {} processes: peak {:.0} MiB RSS, {:.0} MiB PSS (shared pages counted once); a node at most {:.1} MiB RSS, {:.1} MiB PSS",
            m.processes, m.peak_rss_mib, m.peak_pss_mib, m.node_rss_mib, m.node_pss_mib
        );
    }
    if let Some(p) = &r.privacy {
        let budget = p.budget.iter().flatten().copied().fold(f64::NAN, f64::min);
        let _ = writeln!(
            s,
            "privacy: record-level DP-SGD, ε ≤ {:.3} spent per node (budget {budget}, δ = {:e})",
            p.max_spent, p.delta
        );
    }
    s
}

/// `report.md`: the setting, the summary, the distillation analysis, the rounds and the labels.
fn markdown(p: &Prepared, r: &Results) -> String {
    let s = &p.scenario;
    let mut m = String::new();
    let _ = writeln!(m, "# Scenario `{}` (seed {})\n", r.scenario, r.seed);
    let _ = writeln!(
        m,
        "{} nodes, partition `{:?}`, {} rounds, {} reference samples per round at T = {}, `{}` payloads, consensus `{:?}`.\n",
        s.split.nodes,
        s.split.partition,
        s.rounds,
        s.round.samples,
        s.round.temperature,
        s.round.encoding,
        s.consensus.rule
    );
    let _ = writeln!(m, "## Summary\n\n```text\n{}```\n", summary(r));
    let _ = writeln!(m, "![accuracy per round](accuracy.png)\n\n![accuracy against bytes](accuracy-bytes.png)\n");
    distillation(&mut m, p, r);
    if !r.compress.is_empty() {
        let meter = learning::compress::EnergyMeter::new(None);
        let _ = writeln!(
            m,
            "## Compression\n\nThe global student (teacher) and the students distilled from it after the \
             federation (`[[compress]]`), on the test rows.\n\n{}\n![accuracy against size](compress.png)\n",
            learning::compress::measure::markdown(&r.compress, &meter)
        );
    }
    rounds(&mut m, r);
    let counts = learning::data::label_counts(&p.parts, &p.dataset.labels, p.dataset.classes);
    let _ = writeln!(
        m,
        "\n## Labels per node\n\n![labels per node](labels.png)\n\n```text\n{}```",
        learning::data::label_table(&counts)
    );
    m
}

/// The distillation analysis: the global student against the ensemble it distils, in accuracy,
/// size and speed.
fn distillation(m: &mut String, p: &Prepared, r: &Results) {
    let s = &p.scenario;
    let _ = writeln!(m, "## Distillation analysis\n");
    let _ = writeln!(
        m,
        "| model | test accuracy | parameters | bytes | µs/sample (batch 1) | µs/sample (batch 256) |\n|---|---|---|---|---|---|"
    );
    let g = &r.global_model;
    let _ = writeln!(
        m,
        "| global student ({}) | {} | {} | {} | {:.1} | {:.2} |",
        g.architecture,
        pct(r.global_accuracy),
        g.parameters,
        g.bytes,
        g.latency_us_batch1,
        g.latency_us_batch256
    );
    let n = &r.node_model;
    let _ = writeln!(
        m,
        "| teachers' ensemble ({} × {}) | {} | {} | {} | {:.1} | {:.2} |",
        s.split.nodes,
        n.architecture,
        pct(r.ensemble_accuracy),
        n.parameters * s.split.nodes,
        n.bytes * s.split.nodes as u64,
        n.latency_us_batch1 * s.split.nodes as f64,
        n.latency_us_batch256 * s.split.nodes as f64
    );
    if let Some(l) = &r.local_only {
        let _ = writeln!(
            m,
            "| student-free: local-only node (mean / best) | {} / {} | {} | {} | | |",
            pct(l.mean),
            pct(l.best),
            n.parameters,
            n.bytes
        );
    }
    if let Some(pl) = &r.public_labels {
        let _ = writeln!(
            m,
            "| student architecture on the public set's true labels | {} | {} | {} | | |",
            pct(pl.accuracy),
            g.parameters,
            g.bytes
        );
    }
    let _ = writeln!(
        m,
        "\nThe global student keeps {:.1} % of the ensemble's accuracy with {:.1} % of its parameters.\n",
        100.0 * r.global_accuracy / r.ensemble_accuracy.max(1e-6),
        100.0 * g.parameters as f64 / (n.parameters * s.split.nodes).max(1) as f64
    );
}

/// The table of rounds, and the bytes per round against FedAvg's.
fn rounds(m: &mut String, r: &Results) {
    let _ = writeln!(
        m,
        "## Rounds\n\n| round | global acc | FedAvg acc | participants | bytes up | bytes down | seconds |\n|---|---|---|---|---|---|---|"
    );
    for x in &r.rounds {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {:.2} |",
            x.round,
            pct(x.global_accuracy),
            x.fedavg_accuracy.map(pct).unwrap_or_else(|| "-".into()),
            x.participants.len(),
            x.bytes_up,
            x.bytes_down,
            x.seconds
        );
    }
    if let Some(f) = &r.fedavg {
        let _ = writeln!(
            m,
            "\nBytes per round: federated distillation {:.0}, FedAvg {:.0} (ratio {:.3}).",
            r.bytes_per_round,
            f.bytes_total as f64 / r.rounds.len().max(1) as f64,
            r.bytes_per_round / (f.bytes_total as f64 / r.rounds.len().max(1) as f64)
        );
    }
}
