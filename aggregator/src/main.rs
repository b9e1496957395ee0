//! `fd-aggregator`: collects soft labels, builds the consensus, distils the global model.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fd-aggregator", version, about = "Federated-distillation aggregator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 key (mode 0600) and print its PeerId for the nodes' configs.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the federation.
    Run {
        /// The federation's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    net::cli::init_logging("info,libp2p=warn", net::cli::LogFormat::Text);
    match Cli::parse().command {
        Command::Keygen { out } => {
            let peer = net::keys::keygen(&out).with_context(|| format!("cannot write key {}", out.display()))?;
            println!("{peer}");
        }
        Command::Run { config } => {
            let cfg = aggregator::AggregatorConfig::load(&config)?;
            let shutdown = net::cli::shutdown_signal();
            let summary = aggregator::run(cfg, shutdown).await.context("aggregator failed")?;
            println!("{} rounds; global model at {}", summary.rounds.len(), summary.model.display());
        }
    }
    Ok(())
}
