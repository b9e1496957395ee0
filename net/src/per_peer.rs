//! One inbound connection per peer (or as many as [`crate::NetConfig::max_connections_per_peer`]
//! says), whatever the spare slot AutoNAT needs.
//!
//! `connection_limits` caps the connections a peer holds in both directions. With AutoNAT the
//! cap has one spare slot for a dial-back, and a peer that floods the aggregator with dials
//! could take that slot for a second inbound connection of its own. This tracker counts inbound
//! connections per peer and tells the event loop to close any beyond the cap, except from the
//! peers this one asked to dial it back (its AutoNAT servers), whose dial-back arrives inbound.

use std::collections::{HashMap, HashSet};

use libp2p::core::ConnectedPoint;
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

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

    /// Records an established connection; false if it is an inbound connection beyond the
    /// peer's cap, which the caller closes (it is then not counted).
    pub(crate) fn established(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) -> bool {
        if !endpoint.is_listener() {
            return true;
        }
        let max = self.max + usize::from(self.dial_back_from.contains(&peer));
        let open = self.open.entry(peer).or_default();
        if open.len() >= max {
            return false;
        }
        open.insert(id);
        true
    }

    /// Forgets a closed connection.
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(open) = self.open.get_mut(&peer) {
            open.remove(&id);
            if open.is_empty() {
                self.open.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::transport::PortUse;
    use libp2p::core::Endpoint;
    use libp2p::Multiaddr;

    fn inbound() -> ConnectedPoint {
        ConnectedPoint::Listener { local_addr: Multiaddr::empty(), send_back_addr: Multiaddr::empty() }
    }

    fn outbound() -> ConnectedPoint {
        ConnectedPoint::Dialer { address: Multiaddr::empty(), role_override: Endpoint::Dialer, port_use: PortUse::Reuse }
    }

    #[test]
    fn a_second_inbound_connection_is_refused_until_the_first_closes() {
        let (member, server) = (PeerId::random(), PeerId::random());
        let mut t = InboundPerPeer::new(1, [server]);
        let ids: Vec<ConnectionId> = (0..6).map(|_| ConnectionId::new_unchecked(rand_id())).collect();
        assert!(t.established(member, ids[0], &inbound()));
        assert!(!t.established(member, ids[1], &inbound()), "a second inbound connection of one peer");
        assert!(t.established(member, ids[2], &outbound()), "our own dials are not capped here");
        t.closed(member, ids[0]);
        assert!(t.established(member, ids[3], &inbound()), "once the first is gone");
        assert!(t.established(server, ids[4], &inbound()));
        assert!(t.established(server, ids[5], &inbound()), "the AutoNAT server's dial-back");
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
