//! A connection flood: one key dials the aggregator over and over, `concurrency` dials at
//! once, and counts how each connection ended. A connection the aggregator closes before it
//! answers a ping on it was refused; one on which it answers was kept (the aggregator accepted
//! it: it answers nothing on a connection it refuses) and is closed by the dialler.
//!
//! The verdict waits for the aggregator's answer or its closing of the connection, however long
//! either takes: the dialler's handshake ends a round trip before the aggregator's, and a busy
//! aggregator (or a busy dialler) can take longer than any fixed window to refuse.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, ping, tcp, yamux};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Error;

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
    /// Established connections the aggregator closed without answering on them.
    pub refused: u64,
    /// Established connections on which the aggregator answered a ping (closed by the dialler).
    pub kept: u64,
    /// Dials that failed before a connection was established.
    pub failed: u64,
}

/// Dials `target` with `key` until `stop` fires, while `gate` is open (checked at least every
/// 250 ms). A connection whose verdict is still awaited when `stop` fires is in none of the
/// counts but `attempted` (and `established`).
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
        .with_behaviour(|_| ping::Behaviour::new(ping::Config::new()))
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut dials = Dials::default();
    // Dials in flight, and whether each has been established.
    let mut open: HashMap<ConnectionId, bool> = HashMap::new();
    let mut gate_check = tokio::time::interval(Duration::from_millis(250));
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
                    open.insert(id, false);
                }
                Err(_) => dials.failed += 1,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = gate_check.tick() => {}
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                    dials.established += 1;
                    open.insert(connection_id, true);
                }
                // An answer (a pong, or "not supported") comes only from a connection the
                // aggregator accepted: close it ourselves.
                SwarmEvent::Behaviour(ping::Event { connection, result, .. })
                    if matches!(result, Ok(_) | Err(ping::Failure::Unsupported))
                        && open.get(&connection) == Some(&true) =>
                {
                    open.remove(&connection);
                    dials.kept += 1;
                    swarm.close_connection(connection);
                }
                // Still awaiting its verdict: the aggregator closed it without answering.
                SwarmEvent::ConnectionClosed { connection_id, .. } if open.get(&connection_id) == Some(&true) => {
                    open.remove(&connection_id);
                    dials.refused += 1;
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::task::{Context, Poll};

    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;
    use libp2p::swarm::{
        ConnectionDenied, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
    };

    use super::*;

    /// How long the refuser's swarm is busy before it refuses the first connection: longer than
    /// the 2-s window in which the dialler once expected every refusal.
    const BUSY: Duration = Duration::from_secs(3);

    /// Refuses every inbound connection, the first only after its swarm has been busy for
    /// [`BUSY`] (as a swarm task flooded with work is), and reports the second's arrival.
    struct SlowRefuser {
        arrivals: usize,
        second: Option<std_mpsc::Sender<()>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    impl NetworkBehaviour for SlowRefuser {
        type ConnectionHandler = dummy::ConnectionHandler;
        type ToSwarm = std::convert::Infallible;

        fn handle_pending_inbound_connection(
            &mut self,
            _: ConnectionId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<(), ConnectionDenied> {
            self.arrivals += 1;
            if self.arrivals == 2
                && let Some(tx) = self.second.take()
            {
                let _ = tx.send(());
            }
            if self.arrivals > 1 { Err(ConnectionDenied::new(Refused)) } else { Ok(()) }
        }

        fn handle_established_inbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            std::thread::sleep(BUSY); // the busy swarm task, not a wait for anything
            Err(ConnectionDenied::new(Refused))
        }

        fn handle_established_outbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: Endpoint,
            _: PortUse,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Err(ConnectionDenied::new(Refused))
        }

        fn on_swarm_event(&mut self, _: FromSwarm) {}

        fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
            match event {}
        }

        fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
            Poll::Pending
        }
    }

    /// Runs a [`SlowRefuser`] on a thread of its own (its busy swarm blocks nothing else) until
    /// `done`; sends its address, then the second connection's arrival.
    fn refuser(
        addr: std_mpsc::Sender<(PeerId, Multiaddr)>,
        second: std_mpsc::Sender<()>,
        done: CancellationToken,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut swarm = SwarmBuilder::with_new_identity()
                    .with_tokio()
                    .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
                    .unwrap()
                    .with_behaviour(|_| SlowRefuser { arrivals: 0, second: Some(second) })
                    .unwrap()
                    .build();
                swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        _ = done.cancelled() => break,
                        ev = swarm.select_next_some() => if let SwarmEvent::NewListenAddr { address, .. } = ev {
                            let _ = addr.send((*swarm.local_peer_id(), address));
                        },
                    }
                }
            });
        })
    }

    /// A connection the listener refuses late is counted as refused, not kept: the verdict waits
    /// for the listener, not for a window of the dialler's clock. (With the 2-s window this
    /// counted `kept: 1, refused: 0`: the flood test's "stranger kept" failures under load.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_refused_late_is_refused_not_kept() {
        let (addr_tx, addr_rx) = std_mpsc::channel();
        let (second_tx, second_rx) = std_mpsc::channel();
        let done = CancellationToken::new();
        let listener = refuser(addr_tx, second_tx, done.clone());
        let (peer, addr) = addr_rx.recv_timeout(Duration::from_secs(30)).expect("the refuser listens");
        let stop = CancellationToken::new();
        let target = Target { peer, addr, concurrency: 1 };
        let key = libp2p::identity::Keypair::generate_ed25519();
        let dialler = tokio::spawn(run(key, target, Arc::new(AtomicBool::new(true)), stop.clone()));
        // One dial at a time: the second comes once the first has its verdict.
        tokio::task::spawn_blocking(move || second_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the dialler dials a second time");
        stop.cancel();
        let dials = dialler.await.unwrap().unwrap();
        done.cancel();
        listener.join().unwrap();
        assert_eq!((dials.established, dials.refused, dials.kept), (1, 1, 0), "{dials:?}");
    }
}
