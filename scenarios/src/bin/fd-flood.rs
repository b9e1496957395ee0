//! `fd-flood`: a roster member and a stranger hammer an aggregator (connections, streams,
//! oversized and malformed frames, Hellos, reference-chunk requests) and write what they sent
//! and what was refused to a JSON file ([`scenarios::flood::FloodReport`]). For the flood test;
//! see [`scenarios::flood`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use net::multiaddr::Multiaddr;
use protocol::{FederationId, Identity, ReferenceSetId};
use scenarios::flood::{self, FloodConfig};

#[derive(Parser)]
#[command(name = "fd-flood", version, about = "Floods an aggregator with what its defences must absorb (tests only)")]
struct Cli {
    /// The aggregator's address, ending in /p2p/<PeerId>.
    #[arg(long)]
    aggregator: Multiaddr,
    /// Key file of a roster member (the flooding member).
    #[arg(long)]
    member_key: PathBuf,
    /// The federation id.
    #[arg(long)]
    federation: String,
    /// SHA-256 of the reference set (for chunk requests).
    #[arg(long)]
    reference_sha256: String,
    /// Requests the member keeps in flight at once.
    #[arg(long, default_value_t = 10)]
    in_flight: usize,
    /// Dials in flight at once, for the stranger and for the member's extra connections each.
    #[arg(long, default_value_t = 4)]
    dials: usize,
    /// Silent TCP connections to hold open at once (a slowloris on handshakes; 0: none).
    #[arg(long, default_value_t = 0)]
    half_open: usize,
    /// The address the silent connections come from (on loopback, e.g. 127.0.0.2: another host
    /// as far as the aggregator can tell).
    #[arg(long)]
    half_open_from: Option<std::net::IpAddr>,
    /// Stop after this many seconds whatever happens.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Where to write the report (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Where to write the member's requests so far (JSON, twice a second), to tell when the flood
    /// is under way.
    #[arg(long)]
    progress: Option<PathBuf>,
    #[command(flatten)]
    log: net::cli::LogArgs,
}

// One thread: the flood competes with the federation for the machine's cores, not for all of them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,libp2p=warn");
    let cfg = FloodConfig {
        aggregator: cli.aggregator,
        member: net::keys::read(&cli.member_key)
            .with_context(|| format!("cannot read {}", cli.member_key.display()))?,
        stranger: Identity::generate().context("a stranger's key")?,
        federation: FederationId::new(cli.federation).context("--federation")?,
        reference: ReferenceSetId::from_hex(&cli.reference_sha256).context("--reference-sha256")?,
        in_flight: cli.in_flight.max(1),
        dials: cli.dials.max(1),
        half_open: cli.half_open,
        half_open_from: cli.half_open_from,
        max_duration: Duration::from_secs(cli.max_secs),
        progress: cli.progress,
    };
    let report = flood::run(cfg).await.context("flood")?;
    tracing::info!(
        seconds = report.seconds,
        requests = report.requests_sent(),
        finished = report.finished,
        "flood over"
    );
    let json = serde_json::to_vec_pretty(&report)?;
    learning::fs::atomic_write(&cli.out, &json).with_context(|| format!("cannot write {}", cli.out.display()))?;
    Ok(())
}
