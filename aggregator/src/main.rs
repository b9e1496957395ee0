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
    /// Serve as a circuit relay v2 for an aggregator behind a NAT and its nodes, and nothing
    /// else (the aggregator lists `/…/p2p/<relay id>/p2p-circuit` among its listen addresses).
    Relay {
        /// The relay's key (see `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// A public address to listen on, e.g. `/ip4/0.0.0.0/tcp/4002` (repeatable).
        #[arg(long, required = true)]
        listen: Vec<net::multiaddr::Multiaddr>,
        /// A PeerId it relays for: the aggregator's and each node's (repeatable).
        #[arg(long, required = true, value_parser = parse_peer)]
        allow: Vec<protocol::ParticipantId>,
        /// Once listening, write its addresses, each with `/p2p/<relay peer id>`, to this file.
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
    },
}

fn parse_peer(s: &str) -> Result<protocol::ParticipantId, String> {
    net::keys::parse_peer_id(s).map_err(|e| e.to_string())
}

/// Writes listen addresses with the peer id `who` to `path`, atomically.
fn write_addr_file(path: &Path, who: &protocol::ParticipantId, addrs: &[net::multiaddr::Multiaddr]) -> anyhow::Result<()> {
    let id = net::multiaddr::Protocol::P2p(net::peer_id(who));
    let text: String = addrs.iter().map(|a| format!("{}\n", a.clone().with(id.clone()))).collect();
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
                write_addr_file(&path, &agg.id(), agg.listen_addrs())?;
            }
            let summary = agg.run(shutdown).await.context("aggregator failed")?;
            println!("{} rounds; global model at {}", summary.rounds.len(), summary.model.display());
        }
        Command::Relay { key, listen, allow, addr_file } => {
            let identity = net::keys::read(&key).with_context(|| format!("cannot read key {}", key.display()))?;
            let shutdown = net::cli::shutdown_signal();
            let relay = aggregator::relay::Relay::start(identity, &listen, allow).await.context("relay failed to start")?;
            if let Some(path) = addr_file {
                write_addr_file(&path, &relay.id(), relay.listen_addrs())?;
            }
            relay.run(shutdown).await;
        }
    }
    Ok(())
}
