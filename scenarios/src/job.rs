//! A job of `fd-scenarios run`: the scenario (a preset or a file, with the command line's
//! overrides), then one run, a run over several seeds, a privacy sweep or an ablation, as the
//! scenario and the flags ask.

use std::path::Path;

use crate::outcome::Outcome;
use crate::presets::{PRESETS, preset};
use crate::run::RunOptions;
use crate::spec::{Scenario, Transport, data_dir};
use crate::sweep::Budget;

/// The preset `name`, or else the scenario file at `name`.
pub fn load(name: &str) -> anyhow::Result<Scenario> {
    if let Some(s) = preset(name, &data_dir()) {
        return Ok(s);
    }
    let path = Path::new(name);
    if path.exists() {
        return Scenario::load(path);
    }
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    anyhow::bail!("`{name}` is neither a preset ({}) nor a file", names.join(", "))
}

/// Settings the command line changes in a scenario.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The seed.
    pub seed: Option<u64>,
    /// The number of rounds.
    pub rounds: Option<u64>,
    /// How nodes run.
    pub transport: Option<Transport>,
    /// Every node abstains below this quantile of its scores on its own training rows.
    pub abstain: Option<f32>,
}

impl Overrides {
    /// `s` with these settings, validated.
    pub fn apply(&self, mut s: Scenario) -> anyhow::Result<Scenario> {
        if let Some(v) = self.seed {
            s.seed = v;
        }
        if let Some(v) = self.rounds {
            s.rounds = v;
        }
        if let Some(v) = self.transport {
            s.transport = v;
        }
        if let Some(q) = self.abstain {
            s.nodes.abstain = Some(learning::abstain::Abstain { quantile: Some(q), ..Default::default() });
        }
        s.validate()?;
        Ok(s)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Job {
    /// The scenario.
    pub scenario: Scenario,
    /// Run once per seed (empty: once, at the scenario's seed).
    pub seeds: Vec<u64>,
    /// A privacy sweep over these per-node budgets (empty: no sweep).
    pub budgets: Vec<Budget>,
}

/// Runs `job` into `opts.out`: a sweep if it has budgets, else an ablation if the scenario has
/// variants (both over the job's seeds, or the scenario's seed), else one run per seed, else one
/// run.
pub async fn run(job: &Job, opts: &RunOptions) -> anyhow::Result<Outcome> {
    let s = &job.scenario;
    let seeds = if job.seeds.is_empty() { vec![s.seed] } else { job.seeds.clone() };
    if !job.budgets.is_empty() {
        Ok(Outcome::Sweep(crate::sweep::run(s, &job.budgets, &seeds, opts).await?))
    } else if !s.ablation.is_empty() {
        Ok(Outcome::Ablation(crate::ablation::run(s, &seeds, opts).await?))
    } else if job.seeds.is_empty() {
        (opts.notify)(&format!(
            "running `{}` ({} nodes, {} rounds) into {}",
            s.name,
            s.split.nodes,
            s.rounds,
            opts.out.display()
        ));
        Ok(Outcome::Single(Box::new(crate::run::run(s, opts).await?)))
    } else {
        Ok(Outcome::Seeds(Box::new(crate::seeds::run(s, &job.seeds, opts).await?)))
    }
}
