//! `fd-sim-aggregator`: an aggregator held mid-checkpoint on purpose, for fault soaks run as
//! real processes. It runs the same aggregator library as `fd-aggregator run`, with a
//! [`scenarios::faults::CheckpointPause`]; `fd-aggregator` itself has no way to pause.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use scenarios::faults::CheckpointPause;

#[derive(Parser)]
#[command(
    name = "fd-sim-aggregator",
    version,
    about = "A federated-distillation aggregator with simulated faults (scenarios only)"
)]
struct Cli {
    /// The federation's TOML config, as for `fd-aggregator run`.
    #[arg(long)]
    config: PathBuf,
    /// Write the bound addresses (with /p2p/<PeerId>) to this file once listening.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Rounds whose checkpoint is held half-written, once each (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pause_checkpoints: Vec<u64>,
    /// Folder of the markers of held checkpoints (`checkpoint-N`).
    #[arg(long)]
    markers: PathBuf,
    #[command(flatten)]
    log: net::cli::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,libp2p=warn");
    let cfg = aggregator::AggregatorConfig::load(&cli.config)?;
    let faults = CheckpointPause { rounds: cli.pause_checkpoints, markers: cli.markers };
    let shutdown = net::cli::shutdown_signal();
    let agg = aggregator::Aggregator::start_with(cfg, Arc::new(faults), &shutdown)
        .await
        .context("aggregator failed to start")?;
    if let Some(path) = &cli.addr_file {
        learning::fs::atomic_write(path, net::cli::addr_file_text(&agg.id(), agg.listen_addrs()).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let summary = agg.run().await.context("aggregator failed")?;
    tracing::info!(rounds = summary.rounds.len(), completed = summary.completed, "aggregator stopped");
    Ok(())
}
