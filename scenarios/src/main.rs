//! `fd-scenarios`: run simulated federations and their baselines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scenarios::Scenario;
use scenarios::spec::{Transport, data_dir};

#[derive(Parser)]
#[command(name = "fd-scenarios", version, about = "Simulated federated-distillation runs with baselines and a report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: net::cli::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// List the built-in scenarios.
    List,
    /// Print a built-in scenario as TOML (to copy and edit).
    Show {
        /// Preset name.
        name: String,
    },
    /// Run a preset by name, or a scenario file.
    ///
    /// A scenario with `[[ablation]]` variants (the `ablation` preset) runs in full and then
    /// once per variant, each over `--seeds`, into `OUT/full/` and `OUT/VARIANT/`, and writes
    /// the ablation table to `OUT/report.md` and `OUT/results.json`.
    Run {
        /// Preset name or path to a TOML file.
        scenario: String,
        /// Output folder (default `runs/<scenario>-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the seed.
        #[arg(long, conflicts_with_all = ["seeds", "epsilons"])]
        seed: Option<u64>,
        /// Run once per seed (comma-separated, e.g. `0,1,2`) into `OUT/seed-N/`, and write the
        /// mean ± standard deviation of every method to `OUT/results.json` and `OUT/report.md`.
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<u64>,
        /// A privacy–utility sweep: run at each per-node ε (comma-separated; `inf` for no
        /// differential privacy), each over `--seeds` (default: the scenario's seed), into
        /// `OUT/eps-E/`, and write the table and plot to `OUT/report.md`,
        /// `OUT/results.json` and `OUT/privacy-utility.png`.
        #[arg(long, value_delimiter = ',')]
        epsilons: Vec<scenarios::sweep::Budget>,
        /// Override the number of rounds.
        #[arg(long)]
        rounds: Option<u64>,
        /// Every node abstains where its confidence is below this quantile of its scores on its
        /// own training rows (sets `[nodes.abstain] quantile`).
        #[arg(long)]
        abstain: Option<f32>,
        /// Override the transport (`in-process` or `processes`).
        #[arg(long, value_parser = parse_transport)]
        transport: Option<Transport>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    match s {
        "in-process" => Ok(Transport::InProcess),
        "processes" => Ok(Transport::Processes),
        _ => Err(format!("`{s}`: expected in-process or processes")),
    }
}

fn load(name: &str) -> anyhow::Result<Scenario> {
    if let Some(text) = scenarios::presets::preset(name, &data_dir()) {
        return Scenario::from_toml(&text).with_context(|| format!("preset {name}"));
    }
    let path = PathBuf::from(name);
    if path.exists() {
        return Scenario::load(&path);
    }
    let names: Vec<&str> = scenarios::presets::PRESETS.iter().map(|p| p.0).collect();
    anyhow::bail!("`{name}` is neither a preset ({}) nor a file", names.join(", "))
}

/// A note for the person at the terminal: a plain line on standard error, or, with
/// `--log-format json`, a log event (standard error stays one JSON object a line).
fn note(log: net::cli::LogArgs, text: String) {
    match log.log_format {
        net::cli::LogFormat::Text => eprintln!("{text}"),
        net::cli::LogFormat::Json => tracing::info!(note = %text, "scenario"),
    }
}

/// Runs `s` once per seed into `out/seed-N/`.
async fn run_seeds(
    s: &Scenario,
    seeds: &[u64],
    out: &std::path::Path,
    quiet: bool,
    log: net::cli::LogArgs,
) -> anyhow::Result<Vec<scenarios::run::Results>> {
    let mut all = Vec::new();
    for &seed in seeds {
        let s = Scenario { seed, ..s.clone() };
        let dir = out.join(format!("seed-{seed}"));
        note(
            log,
            format!(
                "running `{}` ({} nodes, {} rounds, seed {seed}) into {}",
                s.name,
                s.split.nodes,
                s.rounds,
                dir.display()
            ),
        );
        all.push(
            scenarios::run::run(
                &s,
                &scenarios::run::RunOptions {
                    out: dir,
                    progress: !quiet && log.log_format == net::cli::LogFormat::Text,
                },
            )
            .await?,
        );
    }
    Ok(all)
}

/// Writes to standard output. A reader that has gone (`fd-scenarios show NAME | head`) is not an
/// error: what it did not read was not wanted, and the run's outputs are on disk anyway.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("warn");
    cli.log.finish(run(cli.command, cli.log).await)
}

async fn run(command: Command, log: net::cli::LogArgs) -> anyhow::Result<()> {
    match command {
        Command::List => {
            let list: String =
                scenarios::presets::PRESETS.iter().map(|(name, about)| format!("{name:<18} {about}\n")).collect();
            emit(&list)?;
        }
        Command::Show { name } => {
            let text =
                scenarios::presets::preset(&name, &data_dir()).with_context(|| format!("no preset named `{name}`"))?;
            emit(&text)?;
        }
        Command::Run { scenario, out, seed, seeds, epsilons, rounds, abstain, transport, quiet } => {
            let mut s = load(&scenario)?;
            if let Some(v) = seed {
                s.seed = v;
            }
            if let Some(v) = rounds {
                s.rounds = v;
            }
            if let Some(v) = transport {
                s.transport = v;
            }
            if let Some(q) = abstain {
                s.nodes.abstain = Some(learning::abstain::Abstain { quantile: Some(q), ..Default::default() });
            }
            s.validate()?;
            let out = out.unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from("runs").join(format!("{}-{t}", s.name))
            });
            if !epsilons.is_empty() {
                let seeds = if seeds.is_empty() { vec![s.seed] } else { seeds };
                let mut points = Vec::new();
                for budget in epsilons {
                    let at = budget.apply(&s);
                    let all = run_seeds(&at, &seeds, &out.join(format!("eps-{budget}")), quiet, log).await?;
                    let max_spent = scenarios::seeds::Stat::of(
                        all.iter().map(|r| r.privacy.as_ref().map_or(0.0, |p| p.max_spent)).collect(),
                    );
                    points.push(scenarios::sweep::Point {
                        budget,
                        summary: scenarios::seeds::summarise(&all),
                        max_spent,
                    });
                }
                let delta = scenarios::sweep::Budget::Epsilon(1.0).apply(&s).nodes.privacy.map_or(1e-5, |p| p.delta);
                let sweep = scenarios::sweep::Sweep { scenario: s.name.clone(), delta, points };
                scenarios::sweep::write(&out, &sweep)?;
                emit(&scenarios::sweep::markdown(&sweep))?;
            } else if !s.ablation.is_empty() {
                let seeds = if seeds.is_empty() { vec![s.seed] } else { seeds };
                let mut full = s.clone();
                full.ablation.clear();
                let mut rows = vec![scenarios::ablation::Row {
                    name: "full".into(),
                    about: "every technique on".into(),
                    summary: scenarios::seeds::summarise(
                        &run_seeds(&full, &seeds, &out.join("full"), quiet, log).await?,
                    ),
                }];
                for v in &s.ablation {
                    let changed = v.apply(&s)?;
                    let all = run_seeds(&changed, &seeds, &out.join(&v.name), quiet, log).await?;
                    rows.push(scenarios::ablation::Row {
                        name: v.name.clone(),
                        about: v.about.clone(),
                        summary: scenarios::seeds::summarise(&all),
                    });
                }
                let ablation = scenarios::ablation::Ablation { scenario: s.name.clone(), rows };
                scenarios::ablation::write(&out, &ablation)?;
                emit(&scenarios::ablation::markdown(&ablation))?;
            } else if seeds.is_empty() {
                note(
                    log,
                    format!(
                        "running `{}` ({} nodes, {} rounds) into {}",
                        s.name,
                        s.split.nodes,
                        s.rounds,
                        out.display()
                    ),
                );
                let r = scenarios::run::run(
                    &s,
                    &scenarios::run::RunOptions {
                        out: out.clone(),
                        progress: !quiet && log.log_format == net::cli::LogFormat::Text,
                    },
                )
                .await?;
                emit(&scenarios::report::summary(&r))?;
            } else {
                let all = run_seeds(&s, &seeds, &out, quiet, log).await?;
                let summary = scenarios::seeds::summarise(&all);
                scenarios::seeds::write(&out, &summary)?;
                emit(&scenarios::seeds::markdown(&summary))?;
            }
            emit(&format!("outputs: {}\n", out.display()))?;
        }
    }
    Ok(())
}
