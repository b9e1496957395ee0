//! A connection flood: one key dials the aggregator over and over, `concurrency` dials at
//! once, and counts how each connection ended. A connection the aggregator closes within
//! [`REFUSED_WITHIN`] of its handshake was refused; one still open then is counted as kept and
//! closed by the dialler.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, tcp, yamux};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Error;

/// A connection closed by the aggregator this soon after its handshake was refused.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// Where to dial, and how many dials at once.
#[derive(Clone, Debug)]
pub struct Target {
    /// The aggregator.
    pub peer: PeerId,
    /// Its address.
    pub addr: Multiaddr,
    /// Dials in flight at once.
    pub concurrency: usize,
}

/// How the dials of one key ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dials {
    /// Dials started.
    pub attempted: u64,
    /// Connections whose handshake completed.
    pub established: u64,
    /// Established connections the aggregator closed at once.
    pub refused: u64,
    /// Established connections still open after [`REFUSED_WITHIN`] (closed by the dialler).
    pub kept: u64,
    /// Dials that failed before a connection was established.
    pub failed: u64,
}

/// Dials `target` with `key` until `stop` fires, while `gate` is open (checked at least every
/// 250 ms).
pub async fn run(
    key: libp2p::identity::Keypair,
    target: Target,
    gate: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Result<Dials, Error> {
    let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|_| dummy::Behaviour)
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut dials = Dials::default();
    let mut open: HashMap<ConnectionId, Option<Instant>> = HashMap::new();
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        while open.len() < target.concurrency && !stop.is_cancelled() && gate.load(Ordering::Relaxed) {
            let opts = DialOpts::peer_id(target.peer)
                .addresses(vec![target.addr.clone()])
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            dials.attempted += 1;
            match swarm.dial(opts) {
                Ok(()) => {
                    open.insert(id, None);
                }
                Err(_) => dials.failed += 1,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = check.tick() => {
                // Connections the aggregator kept past the refusal window: close them ourselves.
                let now = Instant::now();
                let stale: Vec<ConnectionId> = open.iter().filter(|(_, at)| at.is_some_and(|t| now.duration_since(t) > REFUSED_WITHIN)).map(|(id, _)| *id).collect();
                for id in stale {
                    open.insert(id, None);
                    dials.kept += 1;
                    swarm.close_connection(id);
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                    dials.established += 1;
                    open.insert(connection_id, Some(Instant::now()));
                }
                SwarmEvent::ConnectionClosed { connection_id, .. } => {
                    // Still timed: the aggregator closed it (a connection closed by us is untimed).
                    if let Some(Some(_)) = open.remove(&connection_id) {
                        dials.refused += 1;
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                    open.remove(&connection_id);
                    dials.failed += 1;
                }
                _ => {}
            },
        }
    }
    Ok(dials)
}
