//! A cap on one address's connections still in their handshake.
//!
//! `connection_limits` caps the handshakes in flight for everyone together
//! ([`crate::NetConfig::max_pending_incoming`]). A silent TCP connection holds one of those slots
//! until the handshake times out (10 s), so one host that keeps a few dozen of them open kept
//! every starting node out of the aggregator (the flood test's half-open connections). This
//! behaviour refuses a new incoming connection while its IP address already has
//! [`crate::NetConfig::max_pending_incoming_per_ip`] in their handshake, so such a host holds at
//! most that many of the slots. Connections through a relay are not counted here (their address
//! is the relay's; the relay limits its own circuits).
//!
//! An IPv6 host holds a whole /64 (often a /48): keyed by the exact address, it could fill every
//! slot from its prefix. IPv6 addresses are therefore counted by their /64 ([`Bucket`]). QUIC
//! connections are counted apart from TCP ones: a spoofed QUIC Initial costs the sender nothing
//! (no handshake with the claimed address happens before it counts), so spoofed Initials in the
//! name of an address cannot take that address's TCP slots.
//!
//! Strangers could still fill every slot from enough addresses. So the addresses (IPv6: the /64)
//! from which a peer on the allow-list has completed a handshake are remembered, and a quarter of
//! the slots ([`PendingPerIp::new`]'s `reserved`) is kept for them: connections from any other
//! address hold at most the rest, and a roster member seen before can still connect while
//! strangers hold every slot they may. A stranger behind a member's address shares its slots.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::ListenFailure;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Refused: too many handshakes in flight from one address.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {max} incoming connections in their handshake (counted by {bucket:?})")]
pub struct TooManyFromIp {
    ip: IpAddr,
    bucket: Bucket,
    max: usize,
}

/// What the handshakes in flight are counted by: an IPv4 address, or an IPv6 address's /64,
/// and the transport (QUIC apart from TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// The address, an IPv6 one with its last 64 bits zeroed.
    prefix: IpAddr,
    quic: bool,
}

impl Bucket {
    fn of(ip: IpAddr, addr: &Multiaddr) -> Self {
        Self { prefix: prefix(ip), quic: addr.iter().any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic)) }
    }
}

/// Refused: the slots for handshakes from addresses not seen before are all taken.
#[derive(Debug, thiserror::Error)]
#[error("{ip} is not an address a roster member has connected from, and such addresses hold {max} handshakes already")]
pub struct TooManyFromStrangers {
    ip: IpAddr,
    max: usize,
}

/// Addresses remembered as a roster member's; beyond this many, no more are added.
const KNOWN_ADDRESSES: usize = 4096;

/// See the module docs.
pub struct PendingPerIp {
    max: usize,
    /// Handshakes in flight from addresses not in `known`, at most.
    max_strangers: usize,
    per_ip: HashMap<Bucket, usize>,
    by_connection: HashMap<ConnectionId, (Bucket, bool)>,
    /// Prefixes (see [`prefix`]) a peer on the allow-list has completed a handshake from.
    known: HashSet<IpAddr>,
    strangers: usize,
}

impl PendingPerIp {
    /// At most `max` (at least 1) handshakes in flight per IP address, and at most `pending`
    /// less a quarter of it (the slots kept for known addresses) from addresses no roster member
    /// has connected from.
    pub fn new(max: u32, pending: u32) -> Self {
        let pending = pending.max(1) as usize;
        Self {
            max: max.max(1) as usize,
            max_strangers: (pending - pending / 4).max(1),
            per_ip: HashMap::new(),
            by_connection: HashMap::new(),
            known: HashSet::new(),
            strangers: 0,
        }
    }

    fn done(&mut self, id: ConnectionId) {
        if let Some((bucket, stranger)) = self.by_connection.remove(&id) {
            self.strangers -= usize::from(stranger);
            if let Some(n) = self.per_ip.get_mut(&bucket) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&bucket);
                }
            }
        }
    }
}

/// An IPv4 address, or an IPv6 address's /64 (its last 64 bits zeroed): what one host holds.
pub(crate) fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// The IP address of a direct (not relayed) connection's remote address.
pub(crate) fn direct_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

impl NetworkBehaviour for PendingPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = direct_ip(remote) else { return Ok(()) };
        let bucket = Bucket::of(ip, remote);
        let n = self.per_ip.get(&bucket).copied().unwrap_or(0);
        if n >= self.max {
            return Err(ConnectionDenied::new(TooManyFromIp { ip, bucket, max: self.max }));
        }
        let stranger = !self.known.contains(&bucket.prefix);
        if stranger && self.strangers >= self.max_strangers {
            return Err(ConnectionDenied::new(TooManyFromStrangers { ip, max: self.max_strangers }));
        }
        self.strangers += usize::from(stranger);
        self.per_ip.insert(bucket, n + 1);
        self.by_connection.insert(id, (bucket, stranger));
        Ok(())
    }

    // Called only for a peer on the allow-list: `allow` comes first and denies the others.
    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.done(id);
        if let Some(ip) = direct_ip(remote)
            && self.known.len() < KNOWN_ADDRESSES
        {
            self.known.insert(prefix(ip));
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

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) = event {
            self.done(connection_id);
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

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_handshakes() {
        let mut b = PendingPerIp::new(2, 64);
        let local = addr("/ip4/127.0.0.1/tcp/4001");
        let (a, other) = (addr("/ip4/10.0.0.9/tcp/50000"), addr("/ip4/10.0.0.10/tcp/50000"));
        let ids: Vec<ConnectionId> = (100..106).map(ConnectionId::new_unchecked).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &a).is_err(), "a third from one address");
        assert!(b.handle_pending_inbound_connection(ids[3], &local, &other).is_ok(), "another address is not held up");
        // One handshake completes, another fails: two slots free again.
        assert!(b.handle_established_inbound_connection(ids[0], PeerId::random(), &local, &a).is_ok());
        b.done(ids[1]);
        assert!(b.handle_pending_inbound_connection(ids[4], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[5], &local, &a).is_ok());
        assert_eq!(b.per_ip.get(&Bucket::of("10.0.0.9".parse().unwrap(), &a)), Some(&2));
        assert_eq!(b.strangers, 1, "10.0.0.9 is known once a handshake from it completed");
        // Relayed connections are the relay's business.
        let relayed =
            addr("/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit");
        assert!(b.handle_pending_inbound_connection(ConnectionId::new_unchecked(200), &local, &relayed).is_ok());
    }

    /// Strangers hold at most three quarters of the slots; an address a roster member has
    /// connected from has the rest.
    #[test]
    fn slots_are_kept_for_addresses_roster_members_came_from() {
        let mut b = PendingPerIp::new(1, 4);
        let local = addr("/ip4/10.0.0.1/tcp/4001");
        let member = addr("/ip6/2001:db8:1:2::1/tcp/50000");
        let mut id = 0;
        let mut pending = |b: &mut PendingPerIp, remote: &Multiaddr| {
            id += 1;
            b.handle_pending_inbound_connection(ConnectionId::new_unchecked(id), &local, remote).is_ok()
        };
        assert!(pending(&mut b, &member));
        assert!(
            b.handle_established_inbound_connection(ConnectionId::new_unchecked(1), PeerId::random(), &local, &member)
                .is_ok()
        );
        for i in 1..=3 {
            assert!(pending(&mut b, &addr(&format!("/ip4/10.0.0.{}/tcp/50000", 10 + i))), "stranger {i}");
        }
        assert!(!pending(&mut b, &addr("/ip4/10.0.0.14/tcp/50000")), "a fourth stranger");
        let again = addr("/ip6/2001:db8:1:2:ffff::9/tcp/50001");
        assert!(pending(&mut b, &again), "the member's /64 again, from another address");
        assert!(!pending(&mut b, &again), "…within its own share");
    }

    /// One IPv6 host holds its whole /64: its addresses share one count, and another /64 is not
    /// held up. QUIC is counted apart from TCP.
    #[test]
    fn an_ipv6_prefix_is_one_address_and_quic_is_counted_apart() {
        let mut b = PendingPerIp::new(2, 64);
        let local = addr("/ip6/::1/tcp/4001");
        let mut id = 0;
        let mut pending = |b: &mut PendingPerIp, remote: &str| {
            id += 1;
            b.handle_pending_inbound_connection(ConnectionId::new_unchecked(id), &local, &addr(remote)).is_ok()
        };
        assert!(pending(&mut b, "/ip6/2001:db8:1:2::1/tcp/50000"));
        assert!(pending(&mut b, "/ip6/2001:db8:1:2::2/tcp/50000"));
        assert!(!pending(&mut b, "/ip6/2001:db8:1:2:ffff::3/tcp/50000"), "a third address of the same /64");
        assert!(pending(&mut b, "/ip6/2001:db8:1:3::1/tcp/50000"), "another /64");
        assert!(pending(&mut b, "/ip6/2001:db8:1:2::1/udp/50000/quic-v1"), "QUIC apart");
        assert!(pending(&mut b, "/ip4/10.0.0.9/udp/50000/quic-v1"));
        assert!(pending(&mut b, "/ip4/10.0.0.9/tcp/50000"), "TCP slots left by QUIC Initials");
    }
}
