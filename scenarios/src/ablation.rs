//! Ablations: a scenario with every technique on (the "full" run) and, for each `[[ablation]]`
//! variant, the same scenario with one setting changed, each over the same seeds. The table in
//! `report.md` gives every variant's accuracy and its difference from the full run, so a reader
//! sees what each piece buys.
//!
//! A variant changes the scenario's own keys: `set` takes dotted keys (`"nodes.digest.mode" =
//! "sequential"`), `unset` removes optional ones (`["nodes.abstain"]`). The changed scenario is
//! parsed and validated like any scenario file, so a typo in a variant is refused, with the
//! variant and the key named, before anything runs.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::Scenario;
use crate::seeds::{SeedSummary, Stat};

/// One `[[ablation]]` variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name, also its output folder (letters, digits, `-` and `_`).
    pub name: String,
    /// What it changes, in words, for the report.
    pub about: String,
    /// Dotted keys of the scenario and their values in this variant.
    #[serde(default)]
    pub set: toml::Table,
    /// Dotted keys of optional settings this variant removes.
    #[serde(default)]
    pub unset: Vec<String>,
}

impl Variant {
    /// `base` with this variant's changes, without ablations and baselines (the full run has
    /// them), named `BASE-NAME`, validated.
    pub fn apply(&self, base: &Scenario) -> anyhow::Result<Scenario> {
        let mut b = base.clone();
        b.ablation.clear();
        b.name = format!("{}-{}", base.name, self.name);
        b.baselines = crate::spec::Baselines::NONE;
        let mut value = toml::Table::try_from(&b).context("scenario as TOML")?;
        for (key, v) in &self.set {
            let (table, last) =
                walk(&mut value, key, true).with_context(|| format!("ablation `{}`: `set` key `{key}`", self.name))?;
            table.insert(last.to_owned(), v.clone());
        }
        for key in &self.unset {
            let (table, last) = walk(&mut value, key, false)
                .with_context(|| format!("ablation `{}`: `unset` key `{key}`", self.name))?;
            if table.remove(last).is_none() {
                bail!("ablation `{}`: `unset` key `{key}` is not set in the scenario", self.name);
            }
        }
        let text = toml::to_string(&value).context("scenario as TOML")?;
        Scenario::from_toml(&text).with_context(|| format!("ablation `{}`", self.name))
    }
}

/// The table holding dotted `key`'s last part, creating missing tables if `create`.
fn walk<'a, 'k>(
    root: &'a mut toml::Table,
    key: &'k str,
    create: bool,
) -> anyhow::Result<(&'a mut toml::Table, &'k str)> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("not a dotted key");
    }
    let (last, path) = parts.split_last().expect("split yields at least one part");
    let mut table = root;
    for part in path {
        if create && !table.contains_key(*part) {
            table.insert((*part).to_owned(), toml::Value::Table(toml::Table::new()));
        }
        table = match table.get_mut(*part) {
            Some(toml::Value::Table(t)) => t,
            Some(_) => bail!("`{part}` is not a table"),
            None => bail!("`{part}` is not set in the scenario"),
        };
    }
    Ok((table, last))
}

/// Checks the variants of `s`: names usable as folders and distinct, and each variant a valid
/// scenario.
pub fn validate(s: &Scenario) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for v in &s.ablation {
        if v.name.is_empty()
            || !v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || v.name == "full"
        {
            bail!(
                "ablation name `{}`: use letters, digits, `-` and `_` (and not `full`, the run with every technique on)",
                v.name
            );
        }
        if !seen.insert(v.name.as_str()) {
            bail!("ablation name `{}` appears twice", v.name);
        }
        if v.set.is_empty() && v.unset.is_empty() {
            bail!("ablation `{}` changes nothing: give `set` or `unset`", v.name);
        }
        v.apply(s)?;
    }
    Ok(())
}

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
pub fn write(dir: &Path, a: &Ablation) -> anyhow::Result<()> {
    learning::fs::atomic_write(&dir.join("results.json"), &serde_json::to_vec_pretty(a)?)?;
    learning::fs::atomic_write(&dir.join("report.md"), markdown(a).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use node::config::DigestMode;

    fn preset(name: &str) -> Scenario {
        Scenario::from_toml(&crate::presets::preset(name, &crate::spec::data_dir()).unwrap()).unwrap()
    }

    fn variant(name: &str, set: &str, unset: &[&str]) -> Variant {
        Variant {
            name: name.into(),
            about: String::new(),
            set: toml::from_str(set).unwrap(),
            unset: unset.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_variant_changes_only_its_keys() {
        let mut base = preset("quickstart");
        base.nodes.abstain = Some(learning::abstain::Abstain { quantile: Some(0.05), ..Default::default() });
        let v = variant("seq", "\"nodes.digest.mode\" = \"sequential\"\n\"round.samples\" = 100", &["nodes.abstain"]);
        let s = v.apply(&base).unwrap();
        assert_eq!(s.nodes.digest.mode, DigestMode::Sequential);
        assert_eq!(s.round.samples, 100);
        assert_eq!(s.nodes.abstain, None);
        assert_eq!(s.name, "quickstart-seq");
        assert!(!s.baselines.fedavg && !s.baselines.local);
        // Everything else is the base's.
        let mut back = s.clone();
        back.nodes.digest.mode = base.nodes.digest.mode;
        back.round.samples = base.round.samples;
        back.nodes.abstain = base.nodes.abstain.clone();
        back.name = base.name.clone();
        back.baselines = base.baselines.clone();
        assert_eq!(back, base);
    }

    #[test]
    fn bad_variants_are_refused_with_their_name() {
        let mut base = preset("quickstart");
        for (v, needle) in [
            (variant("typo", "\"nodes.digest.mood\" = \"sequential\"", &[]), "typo"),
            (variant("bad-value", "\"nodes.digest.mode\" = \"sideways\"", &[]), "bad-value"),
            (variant("gone", "", &["nodes.abstain"]), "gone"),
            (variant("through-a-value", "\"rounds.x\" = 1", &[]), "through-a-value"),
            (variant("full", "\"rounds\" = 2", &[]), "full"),
            (variant("nothing", "", &[]), "nothing"),
        ] {
            base.ablation = vec![v];
            let e = validate(&base).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{e:#}");
        }
        base.ablation = vec![variant("a", "rounds = 2", &[]), variant("a", "rounds = 3", &[])];
        assert!(validate(&base).is_err());
    }

    #[test]
    fn the_ablation_preset_is_valid_and_every_variant_differs_from_the_full_run() {
        let s = preset("ablation");
        assert!(s.ablation.len() >= 5);
        for v in &s.ablation {
            let changed = v.apply(&s).unwrap();
            let mut full = s.clone();
            full.ablation.clear();
            full.name = changed.name.clone();
            full.baselines = changed.baselines.clone();
            assert_ne!(changed, full, "variant {} changes nothing", v.name);
        }
    }
}
