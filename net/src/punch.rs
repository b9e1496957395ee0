//! Hole punching (DCUtR), opt-in ([`crate::NetConfig::hole_punching`]) and guarded.
//!
//! libp2p's DCUtR, on each relayed connection, swaps address lists with the peer (its CONNECT
//! message) and dials every address the peer claimed, loopback and private ranges included: a
//! roster member could make the aggregator dial its own loopback services or its LAN. Its own
//! list is built from every address identify's peers say they saw it at, confirmed or not. This
//! behaviour wraps it:
//!
//! - a peer's claimed addresses are dialled only if they are global ([`is_global`]), at most
//!   [`MAX_DIALLED`] of them; with none left, nothing is dialled and the connection stays relayed;
//! - this peer's own list holds only global addresses that are confirmed: its confirmed
//!   external addresses (an AutoNAT verdict), and the address one of its relays (a peer it was
//!   configured with, [`crate::NetConfig::relays`]) says it saw it connect from
//!   ([`Punch::observed_by_relay`]); not what any other peer says.
//!
//! libp2p's relay passes the destination nothing of what it observed of the source (the STOP
//! message's addresses are empty), so a claimed global address cannot be checked against the
//! address the relay saw the peer connect from: a member can still have the aggregator dial a
//! few global addresses of its choice, once for each relayed connection (the relay limits how
//! many it may open). That is why hole punching is off unless the operator turns it on.

use std::net::IpAddr;
use std::task::{Context, Poll};

use either::Either;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::dcutr;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ExternalAddrConfirmed, NewExternalAddrCandidate};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// A peer's claimed addresses dialled at most, per hole punch.
pub const MAX_DIALLED: usize = 4;

/// The handler DCUtR runs on a relayed connection, and what it reports to the behaviour: named
/// through the behaviour's types, libp2p keeps the module private.
trait Left {
    type L;
}

impl<A, B> Left for Either<A, B> {
    type L = A;
}

type Relayed = <<dcutr::Behaviour as NetworkBehaviour>::ConnectionHandler as Left>::L;
type RelayedEvent = <Relayed as ConnectionHandler>::ToBehaviour;

/// See the module docs.
pub(crate) struct Punch {
    inner: dcutr::Behaviour,
}

impl Punch {
    pub(crate) fn new(local: PeerId) -> Self {
        Self { inner: dcutr::Behaviour::new(local) }
    }

    /// One of this peer's relays saw it at `addr` (identify): a candidate, if it is global.
    pub(crate) fn observed_by_relay(&mut self, addr: &Multiaddr) {
        if is_global(addr) {
            self.inner.on_swarm_event(FromSwarm::NewExternalAddrCandidate(NewExternalAddrCandidate { addr }));
        }
    }
}

/// Whether an IP address can be reached across the Internet: not loopback, private (RFC 1918,
/// IPv6 unique-local), link-local, shared (100.64/10), documentation, benchmarking, multicast,
/// broadcast, reserved or unspecified.
pub fn is_global_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, b2, _] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_multicast()
                || b0 == 0
                || b0 >= 240
                || (b0 == 100 && (64..128).contains(&b1))
                || (b0 == 192 && b1 == 0 && b2 == 0)
                || (b0 == 198 && (18..20).contains(&b1)))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_global_ip(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
                || s[0] == 0x0100) // discard-only
        }
    }
}

/// Whether `addr` is a direct address at a global IP ([`is_global_ip`]); relayed addresses and
/// names (`/dns/…`) are not.
pub fn is_global(addr: &Multiaddr) -> bool {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return false;
    }
    match addr.iter().next() {
        Some(Protocol::Ip4(a)) => is_global_ip(a.into()),
        Some(Protocol::Ip6(a)) => is_global_ip(a.into()),
        _ => false,
    }
}

/// The addresses of `claimed` that may be dialled: global ones, the first [`MAX_DIALLED`].
fn dialable(peer: &PeerId, claimed: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let total = claimed.len();
    let kept: Vec<Multiaddr> = claimed.into_iter().filter(is_global).take(MAX_DIALLED).collect();
    if kept.len() < total {
        tracing::info!(
            %peer,
            claimed = total,
            dialled = kept.len(),
            "hole punching: addresses a peer claimed that are not global (or beyond the first {MAX_DIALLED}) are not dialled"
        );
    }
    kept
}

impl NetworkBehaviour for Punch {
    type ConnectionHandler = <dcutr::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = dcutr::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // What any peer says it saw us at, unconfirmed: not a candidate (see
            // `observed_by_relay` for what a relay says).
            FromSwarm::NewExternalAddrCandidate(_) => {}
            FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr }) => {
                if is_global(addr) {
                    self.inner.on_swarm_event(FromSwarm::NewExternalAddrCandidate(NewExternalAddrCandidate { addr }));
                }
            }
            event => self.inner.on_swarm_event(event),
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        let event = match event {
            Either::Left(RelayedEvent::InboundConnectNegotiated { remote_addrs }) => {
                let remote_addrs = dialable(&peer, remote_addrs);
                if remote_addrs.is_empty() {
                    tracing::info!(%peer, "hole punching: no global address to dial; the connection stays relayed");
                    return;
                }
                Either::Left(RelayedEvent::InboundConnectNegotiated { remote_addrs })
            }
            Either::Left(RelayedEvent::OutboundConnectNegotiated { remote_addrs }) => {
                let remote_addrs = dialable(&peer, remote_addrs);
                if remote_addrs.is_empty() {
                    tracing::info!(%peer, "hole punching: no global address to dial; the connection stays relayed");
                    return;
                }
                Either::Left(RelayedEvent::OutboundConnectNegotiated { remote_addrs })
            }
            event => event,
        };
        self.inner.on_connection_handler_event(peer, id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_global_addresses_are_dialled() {
        for local in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.1/udp/1/quic-v1",
            "/ip4/169.254.0.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip4/198.18.0.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/::ffff:10.0.0.1/tcp/1",
            "/dns/example.org/tcp/1",
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        ] {
            assert!(!is_global(&addr(local)), "{local}");
        }
        for global in ["/ip4/1.2.3.4/tcp/1", "/ip4/8.8.8.8/udp/1/quic-v1", "/ip6/2a00:1450::1/tcp/1"] {
            assert!(is_global(&addr(global)), "{global}");
        }
        let claimed: Vec<Multiaddr> =
            (1..=6).map(|i| addr(&format!("/ip4/1.2.3.{i}/tcp/1"))).chain([addr("/ip4/127.0.0.1/tcp/1")]).collect();
        let kept = dialable(&PeerId::random(), claimed);
        assert_eq!(kept.len(), MAX_DIALLED);
        assert!(kept.iter().all(is_global));
    }
}
