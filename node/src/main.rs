//! `fd-node`: one per data holder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fd-node", version, about = "Federated-distillation node: trains on private data, shares soft labels only")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 key (mode 0600) and print its PeerId for the aggregator's roster.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the node.
    Run {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Export the node's checkpointed local model as ONNX and safetensors, for local use.
    Export {
        /// The node's TOML config (its state_dir holds the checkpoint).
        #[arg(long)]
        config: PathBuf,
        /// Folder to write model.onnx and model.safetensors into.
        #[arg(long)]
        out: PathBuf,
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
        Command::Export { config, out } => {
            let cfg = node::NodeConfig::load(&config)?;
            for path in node::export(&cfg, &out).context("export failed")? {
                println!("{}", path.display());
            }
        }
        Command::Run { config } => {
            let cfg = node::NodeConfig::load(&config)?;
            let shutdown = net::cli::shutdown_signal();
            let summary = node::run(cfg, shutdown).await.context("node failed")?;
            tracing::info!(
                accepted = summary.accepted_rounds.len(),
                refused = summary.refused_rounds.len(),
                finished_after = ?summary.finished_after,
                "node stopped"
            );
        }
    }
    Ok(())
}
