//! One inbound connection per peer (or as many as [`crate::NetConfig::max_connections_per_peer`]
//! says), whatever the spare slot AutoNAT needs.
//!
//! `connection_limits` caps the connections a peer holds in both directions. With AutoNAT the
//! cap has one spare slot for a dial-back, and a peer that floods the aggregator with dials
//! could take that slot for a second inbound connection of its own. This behaviour counts
//! inbound connections per peer and denies any beyond the cap, except from the peers this one
//! asked to dial it back (its AutoNAT servers), whose dial-back arrives inbound.
//!
//! It denies them while they are being established, before the behaviours after it in
//! [`crate::event_loop`]'s `Behaviour` see them: a connection closed only once established
//! could, in between, be the one request-response picks for a request to that peer, which then
//! fails with the doomed connection.

use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Refused: the peer already holds its inbound connections.
#[derive(Debug, thiserror::Error)]
#[error("peer {peer} already holds {max} inbound connection(s)")]
pub struct TooManyFromPeer {
    peer: PeerId,
    max: usize,
}

/// Inbound connections per peer.
#[derive(Debug)]
pub(crate) struct InboundPerPeer {
    max: usize,
    dial_back_from: HashSet<PeerId>,
    open: HashMap<PeerId, HashSet<ConnectionId>>,
}

impl InboundPerPeer {
    /// At most `max` inbound connections a peer (at least 1), one more from `dial_back_from`.
    pub(crate) fn new(max: u32, dial_back_from: impl IntoIterator<Item = PeerId>) -> Self {
        Self { max: max.max(1) as usize, dial_back_from: dial_back_from.into_iter().collect(), open: HashMap::new() }
    }

    fn cap(&self, peer: &PeerId) -> usize {
        self.max + usize::from(self.dial_back_from.contains(peer))
    }
}

impl NetworkBehaviour for InboundPerPeer {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let max = self.cap(&peer);
        if self.open.get(&peer).map_or(0, HashSet::len) >= max {
            return Err(ConnectionDenied::new(TooManyFromPeer { peer, max }));
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    /// Counts a connection once every behaviour has accepted it (the swarm reports it right
    /// after the checks above, in the same step), and forgets it when it closes.
    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished { peer_id, connection_id, endpoint, .. })
                if endpoint.is_listener() =>
            {
                self.open.entry(peer_id).or_default().insert(connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { peer_id, connection_id, .. }) => {
                if let Some(open) = self.open.get_mut(&peer_id) {
                    open.remove(&connection_id);
                    if open.is_empty() {
                        self.open.remove(&peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::ConnectedPoint;

    fn inbound() -> ConnectedPoint {
        ConnectedPoint::Listener { local_addr: Multiaddr::empty(), send_back_addr: Multiaddr::empty() }
    }

    fn outbound() -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: Multiaddr::empty(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    /// What the swarm does with a new connection: asks the behaviour, then tells it (only if
    /// accepted). True if accepted.
    fn connect(b: &mut InboundPerPeer, peer: PeerId, id: usize, endpoint: &ConnectedPoint) -> bool {
        let id = ConnectionId::new_unchecked(id);
        let accepted = match endpoint {
            ConnectedPoint::Listener { .. } => {
                b.handle_established_inbound_connection(id, peer, &Multiaddr::empty(), &Multiaddr::empty()).is_ok()
            }
            ConnectedPoint::Dialer { .. } => b
                .handle_established_outbound_connection(id, peer, &Multiaddr::empty(), Endpoint::Dialer, PortUse::Reuse)
                .is_ok(),
        };
        if accepted {
            b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        accepted
    }

    fn close(b: &mut InboundPerPeer, peer: PeerId, id: usize, endpoint: &ConnectedPoint) {
        let connection_id = ConnectionId::new_unchecked(id);
        b.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id,
            endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn a_second_inbound_connection_is_denied_until_the_first_closes() {
        let (member, server) = (PeerId::random(), PeerId::random());
        let mut b = InboundPerPeer::new(1, [server]);
        assert!(connect(&mut b, member, 1, &inbound()));
        assert!(!connect(&mut b, member, 2, &inbound()), "a second inbound connection of one peer");
        assert!(connect(&mut b, member, 3, &outbound()), "our own dials are not capped here");
        close(&mut b, member, 3, &outbound());
        assert!(!connect(&mut b, member, 4, &inbound()), "closing our dial frees nothing inbound");
        close(&mut b, member, 1, &inbound());
        assert!(connect(&mut b, member, 5, &inbound()), "once the first is gone");
        assert!(connect(&mut b, server, 6, &inbound()));
        assert!(connect(&mut b, server, 7, &inbound()), "the AutoNAT server's dial-back");
        assert!(!connect(&mut b, server, 8, &inbound()), "and no more");
    }
}
