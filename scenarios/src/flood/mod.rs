//! A flooder, for the flood test (`fd-flood`): one roster member and one stranger hammer an
//! aggregator with what its defences are meant to absorb, and count what they sent and what was
//! refused.
//!
//! - The **member** (a key on the roster) joins like a node, then keeps a fixed number of
//!   requests in flight on its one connection, in rotation: valid `Hello`s and reference-set chunk
//!   requests (both rate-limited per peer), garbage frames, validly signed envelopes around
//!   noise, a `Hello` signed by another key, and oversized frames (a length claim over any cap,
//!   and a `Hello` frame over its kind's cap sent in full). It declines every round announced to
//!   it (reason `Policy`, so that the round need not wait for it), acknowledges every consensus,
//!   and stops when the aggregator says the federation is finished (`member`).
//! - **Connection floods** ([`dialer`]): the stranger (a key not on the roster) dials over and
//!   over, several dials at once, and so does the member with a second swarm while its first
//!   connection is up (a second connection is one too many).
//! - **Half-open connections** ([`half_open`], off unless asked for): silent TCP connections that
//!   hold the aggregator's slots for handshakes in flight.
//!
//! The flooder stops by itself: when the aggregator finishes the federation, when its TCP port
//! refuses connections (it has exited), or at the configured bound.

mod codec;
pub mod dialer;
pub mod half_open;
mod member;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use libp2p::Multiaddr;
use protocol::{FederationId, Identity, ReferenceSetId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use dialer::Dials;

/// What the flooder does, and for how long at most.
#[derive(Debug)]
pub struct FloodConfig {
    /// The aggregator's address, ending in `/p2p/<its PeerId>`.
    pub aggregator: Multiaddr,
    /// The roster member's key.
    pub member: Identity,
    /// A key that is not on the roster.
    pub stranger: Identity,
    /// The federation (for the messages the member signs).
    pub federation: FederationId,
    /// The reference set whose chunks the member asks for.
    pub reference: ReferenceSetId,
    /// Requests the member keeps in flight at once.
    pub in_flight: usize,
    /// Dials each connection flooder keeps in flight at once.
    pub dials: usize,
    /// Silent TCP connections held open at once (0: none).
    pub half_open: usize,
    /// The address they come from (None: the system's choice).
    pub half_open_from: Option<std::net::IpAddr>,
    /// The flooder stops after this long, whatever happens.
    pub max_duration: Duration,
    /// Where to write the member's counts so far, twice a second (None: nowhere).
    pub progress: Option<PathBuf>,
}

/// What happened to the requests of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Requests sent.
    pub sent: u64,
    /// Answered with what was asked (a join accepted, a chunk).
    pub served: u64,
    /// Answered with a signed refusal.
    pub refused: u64,
    /// No answer: the stream was closed or reset (the aggregator's read cap, its stream limit).
    pub dropped: u64,
}

/// What the flooder sent and what became of it (the JSON file `fd-flood --out` writes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    /// Seconds from start to stop.
    pub seconds: f64,
    /// Whether the member's first join was accepted.
    pub joined: bool,
    /// Whether the aggregator told the member that the federation is finished.
    pub finished: bool,
    /// The member's requests, by kind (`hello`, `chunk`, `garbage`, `malformed`, `forged`,
    /// `oversized`, `oversized_hello`).
    pub requests: BTreeMap<String, Outcomes>,
    /// Round announcements the member declined.
    pub announcements_declined: u64,
    /// Consensus messages the member acknowledged.
    pub consensus_acknowledged: u64,
    /// Times the member's own connection was lost.
    pub member_disconnects: u64,
    /// The member's extra connections (beyond its one).
    pub member_dials: Dials,
    /// The stranger's connections.
    pub stranger_dials: Dials,
    /// The silent connections.
    #[serde(default)]
    pub half_open: half_open::HalfOpen,
}

impl FloodReport {
    /// Requests of every kind sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.values().map(|o| o.sent).sum()
    }

    /// The outcomes of the requests of `kind` (zero if none were sent).
    pub fn of(&self, kind: &str) -> Outcomes {
        self.requests.get(kind).cloned().unwrap_or_default()
    }
}

/// Errors of the flooder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The swarm could not be built.
    #[error("swarm set-up: {0}")]
    Setup(String),
    /// The aggregator's address has no `/p2p/` suffix.
    #[error("the aggregator's address {0} does not end in /p2p/<PeerId>")]
    Address(String),
    /// A message could not be signed.
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
}

/// Runs the member and both connection flooders until the aggregator finishes the
/// federation, its listener is gone, or `cfg.max_duration` passes.
pub async fn run(cfg: FloodConfig) -> Result<FloodReport, Error> {
    let started = std::time::Instant::now();
    let aggregator = cfg.aggregator.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    });
    let aggregator = aggregator.ok_or_else(|| Error::Address(cfg.aggregator.to_string()))?;
    let stop = CancellationToken::new();
    let bound = stop.clone();
    let max = cfg.max_duration;
    let timer = tokio::spawn(async move {
        tokio::select! {
            _ = bound.cancelled() => {}
            _ = tokio::time::sleep(max) => bound.cancel(),
        }
    });
    let target = dialer::Target { peer: aggregator, addr: cfg.aggregator.clone(), concurrency: cfg.dials.max(1) };
    let stranger = tokio::spawn(dialer::run(
        keypair(&cfg.stranger)?,
        target.clone(),
        Arc::new(AtomicBool::new(true)),
        stop.clone(),
    ));
    // The member's extra connections wait until its one connection has joined (the slot is
    // taken), and pause while it is down: else they would take the slot from it.
    let joined = Arc::new(AtomicBool::new(false));
    let member_dials = tokio::spawn(dialer::run(keypair(&cfg.member)?, target, joined.clone(), stop.clone()));
    let listener = half_open::tcp_addr(&cfg.aggregator);
    if let Some(to) = listener {
        tokio::spawn(half_open::watch_listener(to, stop.clone()));
    }
    let silent = match listener {
        Some(to) if cfg.half_open > 0 => {
            Some(tokio::spawn(half_open::run(to, cfg.half_open_from, cfg.half_open, stop.clone())))
        }
        _ => None,
    };
    let mut report = member::run(&cfg, aggregator, joined, stop.clone()).await?;
    stop.cancel();
    let _ = timer.await;
    if let Some(t) = silent {
        report.half_open = t.await.map_err(|e| Error::Setup(e.to_string()))?;
    }
    report.stranger_dials = stranger.await.map_err(|e| Error::Setup(e.to_string()))??;
    report.member_dials = member_dials.await.map_err(|e| Error::Setup(e.to_string()))??;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The libp2p keypair of a protocol identity.
fn keypair(id: &Identity) -> Result<libp2p::identity::Keypair, Error> {
    let mut seed = *id.seed();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).map_err(|e| Error::Setup(e.to_string()))
}
