//! What a finished run folder holds at its top, in its `results.json`: one run, a run over
//! several seeds, a privacy sweep or an ablation.

use anyhow::Context;

use crate::ablation::{self, Ablation};
use crate::layout::RunDir;
use crate::provenance::Provenance;
use crate::results::Results;
use crate::seeds::{self, SeedSummary};
use crate::sweep::{self, Sweep};

/// The results at the top of a run folder.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// One run.
    Single(Box<Results>),
    /// One scenario over several seeds.
    Seeds(Box<SeedSummary>),
    /// A privacy–utility sweep.
    Sweep(Sweep),
    /// An ablation.
    Ablation(Ablation),
}

impl Outcome {
    /// Reads the `results.json` of the run folder `dir`, whichever kind of run made it.
    pub fn read(dir: &RunDir) -> anyhow::Result<Self> {
        let path = dir.results();
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
        // Each kind has a key the others lack.
        let has = |key: &str| value.get(key).is_some();
        let outcome = if has("points") {
            serde_json::from_value(value).map(Outcome::Sweep)
        } else if has("rows") {
            serde_json::from_value(value).map(Outcome::Ablation)
        } else if has("seeds") {
            serde_json::from_value(value).map(|s| Outcome::Seeds(Box::new(s)))
        } else {
            serde_json::from_value(value).map(|r| Outcome::Single(Box::new(r)))
        };
        outcome.with_context(|| format!("{} holds no results of a run", path.display()))
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        match self {
            Outcome::Single(r) => &r.scenario,
            Outcome::Seeds(s) => &s.scenario,
            Outcome::Sweep(s) => &s.scenario,
            Outcome::Ablation(a) => &a.scenario,
        }
    }

    /// What made the figures, if the run recorded it.
    pub fn provenance(&self) -> Option<&Provenance> {
        match self {
            Outcome::Single(r) => r.provenance.as_ref(),
            Outcome::Seeds(s) => s.provenance.as_ref(),
            Outcome::Sweep(s) => s.provenance.as_ref(),
            Outcome::Ablation(a) => a.provenance.as_ref(),
        }
    }

    /// What `fd-scenarios run` prints once the job is done: the summary of one run, or the
    /// table of its `report.md`.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Single(r) => crate::report::summary(r),
            Outcome::Seeds(s) => seeds::markdown(s),
            Outcome::Sweep(s) => sweep::markdown(s),
            Outcome::Ablation(a) => ablation::markdown(a),
        }
    }
}
