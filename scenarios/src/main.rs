//! `fd-scenarios`: run simulated federations and their baselines. Parses the command line, calls
//! the library ([`scenarios::job`], [`scenarios::table`]) and prints what it returns.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scenarios::job::{Job, Overrides};
use scenarios::layout::RunDir;
use scenarios::outcome::Outcome;
use scenarios::presets::{PRESETS, preset};
use scenarios::provenance::Provenance;
use scenarios::run::RunOptions;
use scenarios::spec::{Transport, data_dir};
use scenarios::table::Table;

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
        /// Override the transport (`in-process`, `processes` or `slurm`: submitted with `sbatch`,
        /// the output folder on a filesystem that the cluster's nodes share).
        #[arg(long, value_parser = parse_transport)]
        transport: Option<Transport>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Write a scenario as a cluster engine's job, without submitting it.
    Export {
        #[command(subcommand)]
        engine: Engine,
    },
    /// Inside a Slurm job written by `export slurm` or `run --transport slurm`, once the
    /// aggregator has reported its addresses: name the first one in every node's node.toml.
    #[command(hide = true)]
    Connect {
        /// The run folder.
        dir: PathBuf,
    },
    /// The outputs of a run exported as a cluster's job (`export slurm`), once the job has
    /// ended: the baselines, results.json, rounds.csv and report.md, as `run` writes them.
    Collect {
        /// The run folder.
        dir: PathBuf,
    },
    /// Print the results table of a finished run (one run, several seeds, a sweep or an
    /// ablation), made from its `results.json`: the setting, the figures as mean ± std over the
    /// seeds, and the command, day and commit that measured them.
    Table {
        /// The run's output folder.
        dir: PathBuf,
        /// As Markdown (for the documentation) rather than aligned text.
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Subcommand)]
enum Engine {
    /// A Slurm batch job: the run folder with its data, keys and configs, and
    /// `slurm/federation.sbatch` (the aggregator, which submits the nodes' job array,
    /// `slurm/nodes.sbatch`). Submit it with `sbatch OUT/slurm/federation.sbatch`.
    Slurm {
        /// Preset name or path to a TOML file.
        scenario: String,
        /// Output folder, on a filesystem that the cluster's nodes share (default
        /// `runs/<scenario>-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override the number of rounds.
        #[arg(long)]
        rounds: Option<u64>,
    },
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    match s {
        "in-process" => Ok(Transport::InProcess),
        "processes" => Ok(Transport::Processes),
        "slurm" => Ok(Transport::Slurm),
        _ => Err(format!("`{s}`: expected in-process, processes or slurm")),
    }
}

/// A note for the person at the terminal: a plain line on standard error…
fn note_text(text: &str) {
    eprintln!("{text}");
}

/// …or, with `--log-format json`, a log event (standard error stays one JSON object a line).
fn note_json(text: &str) {
    tracing::info!(note = %text, "scenario");
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

/// This command, the day and the commit, for `results.json`.
fn provenance() -> Provenance {
    Provenance::now(&std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("warn");
    cli.log.finish(run(cli.command, cli.log).await)
}

async fn run(command: Command, log: net::cli::LogArgs) -> anyhow::Result<()> {
    match command {
        Command::List => emit(&PRESETS.iter().map(|p| format!("{:<18} {}\n", p.name, p.about)).collect::<String>()),
        Command::Show { name } => {
            let s = preset(&name, &data_dir()).with_context(|| format!("no preset named `{name}`"))?;
            emit(&s.to_toml()?)
        }
        Command::Run { scenario, out, seed, seeds, epsilons, rounds, abstain, transport, quiet } => {
            let scenario = Overrides { seed, rounds, transport, abstain }.apply(scenarios::job::load(&scenario)?)?;
            let text = log.log_format == net::cli::LogFormat::Text;
            let opts = RunOptions {
                out: out.unwrap_or_else(|| scenarios::layout::default_out(&scenario.name)),
                progress: !quiet && text,
                notify: if text { note_text } else { note_json },
                provenance: Some(provenance()),
            };
            let outcome = scenarios::job::run(&Job { scenario, seeds, budgets: epsilons }, &opts).await?;
            emit(&outcome.summary())?;
            emit(&format!("outputs: {}\n", opts.out.display()))
        }
        Command::Export { engine: Engine::Slurm { scenario, out, seed, rounds } } => {
            let overrides = Overrides { seed, rounds, transport: Some(Transport::Slurm), ..Overrides::default() };
            let scenario = overrides.apply(scenarios::job::load(&scenario)?)?;
            let out = out.unwrap_or_else(|| scenarios::layout::default_out(&scenario.name));
            let script = scenarios::run::export_slurm(&scenario, &out).await?;
            emit(&format!(
                "submit: sbatch {}\nonce it has ended: fd-scenarios collect {}\n",
                script.display(),
                out.display()
            ))
        }
        Command::Connect { dir } => {
            let addr = scenarios::federate::slurm::connect(&RunDir::new(dir))?;
            emit(&format!("the nodes dial {addr}\n"))
        }
        Command::Collect { dir } => {
            let results = scenarios::run::collect(&dir, Some(provenance())).await?;
            emit(&Outcome::Single(Box::new(results)).summary())?;
            emit(&format!("outputs: {}\n", dir.display()))
        }
        Command::Table { dir, markdown } => {
            let table = Table::of(&Outcome::read(&RunDir::new(dir))?);
            emit(&if markdown { table.markdown() } else { table.text() })
        }
    }
}
