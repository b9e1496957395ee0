//! NAT traversal with libp2p's own protocols, as one sub-behaviour of the Swarm: the circuit
//! relay v2 client (dial and listen through a relay, `/…/p2p/<relay>/p2p-circuit`), the relay
//! service itself when [`NetConfig::relay`] asks for it, and DCUtR, which tries to replace a
//! relayed connection with a direct one (hole punching) and keeps the relayed one if it cannot.
//!
//! A node only ever dials out, so a node behind a NAT needs none of this; an aggregator with no
//! open port does: it listens through a relay (a `/p2p-circuit` address in its `listen`), and
//! the nodes dial it through the same relay.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{dcutr, relay, Multiaddr, PeerId};

use crate::{participant, NetConfig};

/// Serving as a circuit relay v2 for the peers on the allow-list. The relay's own listen
/// addresses are taken as its external addresses: a relay is, by definition, reachable there.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayService {
    /// Bytes one relayed connection may carry before the relay closes it.
    pub max_circuit_bytes: u64,
    /// How long one relayed connection may last before the relay closes it.
    pub max_circuit_duration: Duration,
}

impl Default for RelayService {
    /// Sized for a federation's connection, which lasts the whole run (libp2p's own defaults,
    /// 128 KiB and 2 minutes, suit only short hole-punching set-ups).
    fn default() -> Self {
        Self { max_circuit_bytes: 1 << 34, max_circuit_duration: Duration::from_secs(7 * 24 * 3600) }
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Nat {
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
}

impl Nat {
    pub(crate) fn new(local: PeerId, relay_client: relay::client::Behaviour, service: Option<&RelayService>) -> Self {
        let relay = service.map(|s| {
            let config = relay::Config { max_circuit_bytes: s.max_circuit_bytes, max_circuit_duration: s.max_circuit_duration, ..Default::default() };
            relay::Behaviour::new(local, config)
        });
        Self { relay_client, relay: relay.into(), dcutr: dcutr::Behaviour::new(local) }
    }

    /// Whether this peer is a relay.
    pub(crate) fn serves(&self) -> bool {
        self.relay.is_enabled()
    }
}

/// Logs what NAT traversal did, with the peer in a field.
pub(crate) fn on_event(ev: NatEvent) {
    match ev {
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

impl NetConfig {
    /// Lets this peer reach, or be reached, through the relays named in `addrs` (dial or
    /// listen addresses with `/p2p-circuit`): each relay joins the allow-list, and a peer may
    /// hold two connections, so that DCUtR can add a direct one beside the relayed one.
    pub fn through_relays(&mut self, addrs: &[Multiaddr]) {
        let relays: Vec<_> = relays(addrs).iter().filter_map(participant).collect();
        if !relays.is_empty() {
            self.allowed.extend(relays);
            self.max_connections_per_peer = self.max_connections_per_peer.max(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_is_the_peer_before_the_circuit() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let through: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}").parse().unwrap();
        let direct: Multiaddr = format!("/ip4/10.0.0.2/tcp/4001/p2p/{target}").parse().unwrap();
        assert_eq!(relays(&[through, direct.clone()]), vec![relay]);
        assert_eq!(relays(&[direct]), Vec::<PeerId>::new());
    }
}
