//! `fd-sim-node`: a node that misbehaves on purpose, for simulated federations run as real
//! processes (`--transport processes`). It runs the same node library as `fd-node`, with the
//! faults of a `simulation.toml` ([`scenarios::faults::Simulation`]); `fd-node` itself has no way
//! to misbehave.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use scenarios::faults::Simulation;

#[derive(Parser)]
#[command(
    name = "fd-sim-node",
    version,
    about = "A federated-distillation node with simulated faults (scenarios only)"
)]
struct Cli {
    /// The node's TOML config, as for `fd-node run`.
    #[arg(long)]
    config: PathBuf,
    /// The faults to simulate (TOML: delay_ms, attack, leave_at_round, seed).
    #[arg(long)]
    simulation: PathBuf,
    #[command(flatten)]
    log: net::cli::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,libp2p=warn");
    let cfg = node::NodeConfig::load(&cli.config)?;
    let text = std::fs::read_to_string(&cli.simulation)
        .with_context(|| format!("cannot read {}", cli.simulation.display()))?;
    let faults: Simulation =
        toml::from_str(&text).with_context(|| format!("invalid simulation {}", cli.simulation.display()))?;
    let summary = node::run_with(cfg, Arc::new(faults), net::cli::shutdown_signal()).await.context("node failed")?;
    tracing::info!(accepted = summary.accepted_rounds.len(), left_at = ?summary.left_at, finished_after = ?summary.finished_after, "node stopped");
    Ok(())
}
