//! `fd-aggregator`: collects soft labels, builds the consensus, distils the global model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fd-aggregator", version, about = "Federated-distillation aggregator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: net::cli::LogArgs,
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
        /// Once listening, write the bound addresses, each with `/p2p/<aggregator peer id>`, one
        /// a line, to this file. It appears complete (written aside, then renamed), so a script
        /// that listens on port 0 can wait for it and give the nodes the real address.
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
    },
}

/// Writes `agg`'s listen addresses with its peer id to `path`, atomically.
fn write_addr_file(path: &Path, agg: &aggregator::Aggregator) -> anyhow::Result<()> {
    let id = net::multiaddr::Protocol::P2p(net::peer_id(&agg.id()));
    let text: String = agg.listen_addrs().iter().map(|a| format!("{}\n", a.clone().with(id.clone()))).collect();
    let mut aside = path.as_os_str().to_owned();
    aside.push(".partial");
    std::fs::write(&aside, text).with_context(|| format!("cannot write {}", Path::new(&aside).display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("cannot write {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,libp2p=warn");
    cli.log.finish(run(cli.command).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen { out } => {
            let peer = net::keys::keygen(&out).with_context(|| format!("cannot write key {}", out.display()))?;
            println!("{peer}");
        }
        Command::Run { config, addr_file } => {
            let cfg = aggregator::AggregatorConfig::load(&config)?;
            let shutdown = net::cli::shutdown_signal();
            let agg = aggregator::Aggregator::start(cfg).await.context("aggregator failed to start")?;
            if let Some(path) = addr_file {
                write_addr_file(&path, &agg)?;
            }
            let summary = agg.run(shutdown).await.context("aggregator failed")?;
            println!("{} rounds; global model at {}", summary.rounds.len(), summary.model.display());
        }
    }
    Ok(())
}
