//! `fd-scenarios`: run simulated federations and their baselines.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scenarios::spec::{data_dir, Transport};
use scenarios::Scenario;

#[derive(Parser)]
#[command(name = "fd-scenarios", version, about = "Simulated federated-distillation runs with baselines and a report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    Run {
        /// Preset name or path to a TOML file.
        scenario: String,
        /// Output folder (default `runs/<scenario>-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Run once per seed (comma-separated, e.g. `0,1,2`) into `OUT/seed-N/`, and write the
        /// mean ± standard deviation of every method to `OUT/results.json` and `OUT/report.md`.
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Override the number of rounds.
        #[arg(long)]
        rounds: Option<u64>,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    net::cli::init_logging("warn", net::cli::LogFormat::Text);
    match Cli::parse().command {
        Command::List => {
            for (name, about) in scenarios::presets::PRESETS {
                println!("{name:<18} {about}");
            }
        }
        Command::Show { name } => {
            let text = scenarios::presets::preset(&name, &data_dir()).with_context(|| format!("no preset named `{name}`"))?;
            print!("{text}");
        }
        Command::Run { scenario, out, seed, seeds, rounds, transport, quiet } => {
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
            s.validate()?;
            let out = out.unwrap_or_else(|| {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                PathBuf::from("runs").join(format!("{}-{t}", s.name))
            });
            if seeds.is_empty() {
                eprintln!("running `{}` ({} nodes, {} rounds) into {}", s.name, s.split.nodes, s.rounds, out.display());
                let r = scenarios::run::run(&s, &scenarios::run::RunOptions { out: out.clone(), progress: !quiet }).await?;
                print!("{}", scenarios::report::summary(&r));
            } else {
                let mut all = Vec::new();
                for seed in &seeds {
                    s.seed = *seed;
                    let dir = out.join(format!("seed-{seed}"));
                    eprintln!("running `{}` ({} nodes, {} rounds, seed {seed}) into {}", s.name, s.split.nodes, s.rounds, dir.display());
                    all.push(scenarios::run::run(&s, &scenarios::run::RunOptions { out: dir, progress: !quiet }).await?);
                }
                let summary = scenarios::seeds::summarise(&all);
                scenarios::seeds::write(&out, &summary)?;
                print!("{}", scenarios::seeds::markdown(&summary));
            }
            println!("outputs: {}", out.display());
        }
    }
    Ok(())
}
