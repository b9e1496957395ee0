//! NAT traversal with libp2p's own protocols, as one sub-behaviour of the Swarm: the circuit
//! relay v2 client (dial and listen through a relay, `/…/p2p/<relay>/p2p-circuit`), the relay
//! service itself when [`crate::NetConfig::relay`] asks for it, and, when
//! [`crate::NetConfig::hole_punching`] turns it on, DCUtR, which tries to replace a relayed
//! connection with a direct one (hole punching) and keeps the relayed one if it cannot (guarded
//! by [`crate::punch`]).
//!
//! A node only ever dials out, so a node behind a NAT needs none of this; an aggregator with no
//! open port does: it listens through a relay (a `/p2p-circuit` address in its `listen`), and
//! the nodes dial it through the same relay.
//!
//! AutoNAT (v1) tells a peer whether it is reachable: it asks a server (for a node: its aggregator
//! and the relays it is given) to dial it back at its listen addresses and at the address the
//! server saw it come from, from a new port (so that a NAT's mapping for the existing connection
//! cannot answer); a dial-back that connects means [`Reachability::Public`], one that fails means
//! [`Reachability::Private`]. The verdict is relative to the servers, which are the only peers that
//! ever need to reach a node, so private addresses count (AutoNAT's `only_global_ips` is off: a
//! federation on one LAN is a real deployment); only roster peers can connect at all, so only they
//! can ask for a dial-back. The verdict is reported ([`crate::Client::reachability`], a log
//! event); it does not change what a node dials, because a node only ever dials out: a private
//! node reaches a public aggregator directly, and an aggregator with no open port is reached
//! through the relay that the node's `aggregator` address names in any case.

use std::time::Duration;

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay};
use protocol::ParticipantId;

use crate::ids::peer_id;

/// Serving as a circuit relay v2 for the peers on the allow-list. The relay's own listen
/// addresses are taken as its external addresses: a relay is, by definition, reachable there.
///
/// libp2p's defaults (16 circuits in all, 5 a source, any peer may reserve) refuse honest
/// federations of more than about 15 relayed nodes and let three members fill every circuit.
/// [`RelayService::for_federation`] sizes them to the roster: a circuit or two a node, only the
/// aggregator reserves (is reachable through the relay), and caps on a circuit's bytes and
/// lifetime that fit a federation's connection (it reconnects when one closes).
#[derive(Clone, Debug, PartialEq)]
pub struct RelayService {
    /// Bytes one relayed connection may carry before the relay closes it.
    pub max_circuit_bytes: u64,
    /// How long one relayed connection may last before the relay closes it.
    pub max_circuit_duration: Duration,
    /// Circuits open at once, all sources together.
    pub max_circuits: usize,
    /// Circuits one source may hold at once (at least 1).
    pub max_circuits_per_source: usize,
    /// The only peers that may reserve a slot, that is, be reached through the relay.
    pub reservers: Vec<ParticipantId>,
}

impl RelayService {
    /// Bytes a circuit may carry by default: a federation's connection carries a reference set
    /// (usually some MiB) and a few KiB to MiB a round.
    pub const DEFAULT_CIRCUIT_BYTES: u64 = 1 << 30;
    /// How long a circuit may last by default; the node reconnects when it closes.
    pub const DEFAULT_CIRCUIT_DURATION: Duration = Duration::from_secs(24 * 3600);
    /// Circuits a source may open in a burst…
    const CIRCUIT_BURST: std::num::NonZeroU32 = std::num::NonZeroU32::new(30).expect("30 > 0");
    /// …then one each this long (libp2p's per-peer default).
    const CIRCUIT_REFILL: Duration = Duration::from_secs(120);

    /// For a federation of `nodes` relayed nodes whose aggregator is `aggregator`: two circuits
    /// a node (the relayed connection and one while it reconnects), twice as many in all plus
    /// two, and only the aggregator reserves.
    pub fn for_federation(aggregator: ParticipantId, nodes: usize) -> Self {
        Self {
            max_circuit_bytes: Self::DEFAULT_CIRCUIT_BYTES,
            max_circuit_duration: Self::DEFAULT_CIRCUIT_DURATION,
            max_circuits: 2 * nodes + 2,
            max_circuits_per_source: 2,
            reservers: vec![aggregator],
        }
    }

    /// libp2p's relay configuration for these limits.
    pub(crate) fn config(&self) -> relay::Config {
        let reservers: std::collections::HashSet<PeerId> = self.reservers.iter().map(peer_id).collect();
        let mut config = relay::Config {
            // Each reserver may reserve on each of a few relay addresses.
            max_reservations: 4 * reservers.len().max(1),
            max_reservations_per_peer: 4,
            max_circuits: self.max_circuits.max(1),
            // libp2p refuses a source once it holds *more* than this many circuits.
            max_circuits_per_peer: self.max_circuits_per_source.max(1) - 1,
            max_circuit_bytes: self.max_circuit_bytes,
            max_circuit_duration: self.max_circuit_duration,
            // Every source is a peer on the allow-list, counted by its key: libp2p's per-IP
            // budget (60 circuits, then one a minute, shared by every peer behind one address)
            // would let one member behind a NAT spend its neighbours' circuits.
            circuit_src_rate_limiters: Vec::new(),
            ..Default::default()
        }
        .circuit_src_per_peer(Self::CIRCUIT_BURST, Self::CIRCUIT_REFILL);
        // A reservation from anyone else is refused (as if it were over a rate limit).
        config
            .reservation_rate_limiters
            .push(Box::new(move |peer: PeerId, _: &Multiaddr, _: std::time::Instant| reservers.contains(&peer)));
        config
    }
}

/// AutoNAT: answering other peers' probes (every peer that has it does), and probing
/// [`AutoNat::servers`] when there are any and this peer listens.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoNat {
    /// The peers asked to dial this peer back (none: it only answers).
    pub servers: Vec<ParticipantId>,
    /// When the first probe goes out after the start (the connection to a server should be up).
    pub first_probe: Duration,
    /// Between probes until the verdict has been confirmed three times (then every 15 minutes).
    pub retry: Duration,
}

impl AutoNat {
    /// Probes `servers` (none: only answers): 1 s after the start (a node has usually joined by
    /// then), then every 3 s until the verdict is confirmed (four probes), then every 15 minutes.
    /// A probe is one small request and one dial; a server answers at most 3 a second per peer.
    pub fn new(servers: Vec<ParticipantId>) -> Self {
        Self { servers, first_probe: Duration::from_secs(1), retry: Duration::from_secs(3) }
    }

    fn behaviour(&self, local: PeerId) -> autonat::Behaviour {
        let config = autonat::Config {
            boot_delay: self.first_probe,
            retry_interval: self.retry,
            throttle_server_period: self.retry / 2,
            use_connected: false,
            only_global_ips: false,
            ..Default::default()
        };
        let mut b = autonat::Behaviour::new(local, config);
        for s in &self.servers {
            b.add_server(peer_id(s), None);
        }
        b
    }
}

/// Whether this peer can be reached from outside, as AutoNAT last concluded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// No verdict yet (no probe answered, or this peer does not probe).
    #[default]
    Unknown,
    /// A server dialled this peer back at this address.
    Public(Multiaddr),
    /// Servers could not dial this peer back: it is behind a NAT or a firewall.
    Private,
}

impl Reachability {
    /// `unknown`, `public` or `private`.
    pub fn name(&self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public(_) => "public",
            Reachability::Private => "private",
        }
    }

    /// Every [`Reachability::name`].
    pub const NAMES: [&'static str; 3] = ["unknown", "public", "private"];
}

impl From<autonat::NatStatus> for Reachability {
    fn from(s: autonat::NatStatus) -> Self {
        match s {
            autonat::NatStatus::Public(a) => Reachability::Public(a),
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        }
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Nat {
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: Toggle<crate::punch::Punch>,
    autonat: Toggle<autonat::Behaviour>,
}

impl Nat {
    pub(crate) fn new(
        local: PeerId,
        relay_client: relay::client::Behaviour,
        service: Option<&RelayService>,
        autonat: Option<&AutoNat>,
        hole_punching: bool,
    ) -> Self {
        let relay = service.map(|s| relay::Behaviour::new(local, s.config()));
        let autonat = autonat.map(|a| a.behaviour(local));
        let dcutr = hole_punching.then(|| crate::punch::Punch::new(local));
        Self { relay_client, relay: relay.into(), dcutr: dcutr.into(), autonat: autonat.into() }
    }

    /// One of this peer's relays saw it at `addr`: a hole-punching candidate (if it is on).
    pub(crate) fn observed_by_relay(&mut self, addr: &Multiaddr) {
        if let Some(punch) = self.dcutr.as_mut() {
            punch.observed_by_relay(addr);
        }
    }

    /// Whether this peer is a relay.
    pub(crate) fn serves(&self) -> bool {
        self.relay.is_enabled()
    }
}

/// Logs what NAT traversal did, with the peer in a field; returns AutoNAT's new verdict when
/// it changed.
pub(crate) fn on_event(ev: NatEvent) -> Option<Reachability> {
    match ev {
        NatEvent::Autonat(autonat::Event::StatusChanged { old, new }) => {
            let (old, new) = (Reachability::from(old), Reachability::from(new));
            let address = match &new {
                Reachability::Public(a) => Some(a.to_string()),
                _ => None,
            };
            tracing::info!(reachability = new.name(), was = old.name(), address, "AutoNAT: reachability changed");
            return Some(new);
        }
        NatEvent::Autonat(autonat::Event::OutboundProbe(ev)) => tracing::debug!(?ev, "AutoNAT probe"),
        NatEvent::Autonat(autonat::Event::InboundProbe(ev)) => tracing::debug!(?ev, "AutoNAT dial-back for a peer"),
        NatEvent::Dcutr(dcutr::Event { remote_peer_id, result: Ok(_) }) => {
            tracing::info!(peer = %remote_peer_id, "direct connection upgrade (DCUtR) succeeded")
        }
        NatEvent::Dcutr(dcutr::Event { remote_peer_id, result: Err(error) }) => {
            tracing::info!(peer = %remote_peer_id, %error, "direct connection upgrade (DCUtR) failed; the connection stays relayed")
        }
        NatEvent::RelayClient(relay::client::Event::ReservationReqAccepted { relay_peer_id, .. }) => {
            tracing::info!(relay = %relay_peer_id, "reserved a slot on the relay")
        }
        NatEvent::RelayClient(ev) => tracing::debug!(?ev, "relay client"),
        NatEvent::Relay(relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id }) => {
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "relaying a connection")
        }
        NatEvent::Relay(ev) => tracing::debug!(?ev, "relay service"),
    }
    None
}

/// The relays named in `addrs`: the peer before each `/p2p-circuit`.
pub fn relays(addrs: &[Multiaddr]) -> Vec<PeerId> {
    let mut found = Vec::new();
    for addr in addrs {
        let mut last = None;
        for p in addr.iter() {
            match p {
                Protocol::P2p(id) => last = Some(id),
                Protocol::P2pCircuit => found.extend(last.take()),
                _ => {}
            }
        }
    }
    found
}

/// Whether a connection this peer dialled is an AutoNAT dial-back: the only dials made from a
/// new port (ours reuse the listening port, so that NATs map them as hole punching expects).
/// Its work is done once it is up (the verdict goes back on the asking connection), so the
/// event loop closes it at once rather than let it hold the peer's spare slot for an hour.
pub(crate) fn is_dial_back(endpoint: &ConnectedPoint) -> bool {
    matches!(endpoint, ConnectedPoint::Dialer { role_override: Endpoint::Dialer, port_use: PortUse::New, .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_is_the_peer_before_the_circuit() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let through: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}").parse().unwrap();
        let direct: Multiaddr = format!("/ip4/10.0.0.2/tcp/4001/p2p/{target}").parse().unwrap();
        assert_eq!(relays(&[through, direct.clone()]), vec![relay]);
        assert_eq!(relays(&[direct]), Vec::<PeerId>::new());
    }

    #[test]
    fn only_a_dial_from_a_new_port_is_taken_for_a_dial_back() {
        let address: Multiaddr = "/ip4/10.0.0.2/tcp/4001".parse().unwrap();
        let dialer =
            |role_override, port_use| ConnectedPoint::Dialer { address: address.clone(), role_override, port_use };
        assert!(is_dial_back(&dialer(Endpoint::Dialer, PortUse::New)));
        assert!(!is_dial_back(&dialer(Endpoint::Dialer, PortUse::Reuse)), "our own dials reuse the listening port");
        assert!(!is_dial_back(&dialer(Endpoint::Listener, PortUse::Reuse)), "a hole punch");
        assert!(!is_dial_back(&ConnectedPoint::Listener {
            local_addr: address.clone(),
            send_back_addr: address.clone()
        }));
    }

    #[test]
    fn the_relay_is_sized_to_the_roster_and_only_the_aggregator_reserves() {
        let aggregator = protocol::Identity::from_seed([1; 32]).unwrap().id();
        let service = RelayService::for_federation(aggregator, 30);
        let mut c = service.config();
        assert_eq!((c.max_circuits, c.max_circuits_per_peer), (62, 1), "30 nodes fit, 2 circuits a source");
        assert!(c.max_circuit_bytes <= 1 << 30 && c.max_circuit_duration <= Duration::from_secs(24 * 3600));
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let now = std::time::Instant::now();
        let allowed = |c: &mut relay::Config, p: PeerId| {
            c.reservation_rate_limiters.iter_mut().all(|l| l.try_next(p, &addr, now))
        };
        assert!(allowed(&mut c, peer_id(&aggregator)), "the aggregator reserves");
        assert!(!allowed(&mut c, PeerId::random()), "a member does not");
    }
}
