//! [`NetConfig`]: the settings of the network layer, with the defaults both node and aggregator
//! start from.

use std::time::Duration;

use libp2p::Multiaddr;
use protocol::{FederationId, Limits, MessageKind, ParticipantId};

use crate::ids::participant;
use crate::metrics::Traffic;
use crate::nat::{self, AutoNat, RelayService};
use crate::rate::RateLimit;

/// Settings of the network layer.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Federation id (for refusal receipts).
    pub federation: FederationId,
    /// Peers allowed to connect (and to be dialled); everyone else is refused at connection level.
    pub allowed: Vec<ParticipantId>,
    /// Caps applied to every inbound message.
    pub limits: Limits,
    /// Timeout of one request, response included.
    pub request_timeout: Duration,
    /// Capacity of the event channel.
    pub event_capacity: usize,
    /// Inbound requests being verified or waiting for the owner at once; beyond it a request's
    /// stream is closed (its sender sees a failure and may retry).
    pub max_inbound: usize,
    /// How long the shutdown waits for responses and requests in flight.
    pub drain_timeout: Duration,
    /// Where to record every message sent (None: no ledger).
    pub ledger: Option<std::path::PathBuf>,
    /// Whether the ledger also keeps the bytes of every message sent (see [`crate::ledger::Ledger`]).
    pub ledger_keeps_bytes: bool,
    /// Connections one peer may hold to us at once.
    pub max_connections_per_peer: u32,
    /// Request-response streams open at once on one connection, inbound and outbound; inbound
    /// streams beyond it are dropped.
    pub max_streams_per_connection: usize,
    /// Incoming connections still in their handshake at once; more are refused.
    pub max_pending_incoming: u32,
    /// Of those, from one IP address (see `pending`): a host that opens silent connections
    /// holds at most this many of the slots.
    pub max_pending_incoming_per_ip: u32,
    /// Per-peer limits on inbound requests of some kinds; a request beyond its peer's budget is
    /// refused (reason `Unavailable`) before it is verified.
    pub rate_limits: Vec<(MessageKind, RateLimit)>,
    /// Speak the federation's request-response protocol (false: not even negotiate it, as a relay
    /// does: every request to it fails as an unsupported protocol, and nothing it would have to
    /// read, verify or answer reaches it).
    pub requests: bool,
    /// Serve as a circuit relay v2 for the allowed peers (None: do not). Relayed dialling and
    /// listening are always on (see [`crate::nat`]).
    pub relay: Option<RelayService>,
    /// The relays this peer reaches or is reached through (set by [`NetConfig::through_relays`]):
    /// the address one of them says it saw this peer at is a hole-punching candidate.
    pub relays: Vec<ParticipantId>,
    /// Try to replace relayed connections with direct ones (DCUtR, guarded by [`crate::punch`]);
    /// off by default: a peer's relayed connection stays relayed.
    pub hole_punching: bool,
    /// Streams one connection may carry for relayed circuits, beyond the request-response ones:
    /// each circuit is a stream on the connection between the relay and the peer reached
    /// through it. Set by [`NetConfig::through_relays`] (two a peer allowed) and for a relay
    /// (its circuits); 0 otherwise.
    pub circuit_streams: usize,
    /// Run AutoNAT (None: do not); a peer may then hold one more connection, for a dial-back.
    pub autonat: Option<AutoNat>,
    /// Where to count the bytes and messages sent and received, per peer and kind (None: not
    /// counted beyond [`crate::Client::traffic`]).
    pub traffic: Option<Traffic>,
}

impl NetConfig {
    /// Default of [`NetConfig::max_pending_incoming`].
    pub const DEFAULT_MAX_PENDING_INCOMING: u32 = 64;
    /// Default of [`NetConfig::max_pending_incoming_per_ip`].
    pub const DEFAULT_MAX_PENDING_INCOMING_PER_IP: u32 = 8;

    /// Defaults for a federation and allow-list.
    pub fn new(federation: FederationId, allowed: Vec<ParticipantId>) -> Self {
        Self {
            federation,
            allowed,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(60),
            event_capacity: 256,
            max_inbound: 64,
            drain_timeout: Duration::from_secs(2),
            ledger: None,
            ledger_keeps_bytes: false,
            max_connections_per_peer: 1,
            max_streams_per_connection: 8,
            max_pending_incoming: Self::DEFAULT_MAX_PENDING_INCOMING,
            max_pending_incoming_per_ip: Self::DEFAULT_MAX_PENDING_INCOMING_PER_IP,
            rate_limits: Vec::new(),
            requests: true,
            relay: None,
            relays: Vec::new(),
            hole_punching: false,
            circuit_streams: 0,
            autonat: None,
            traffic: None,
        }
    }

    /// Lets this peer reach, or be reached, through the relays named in `addrs` (dial or
    /// listen addresses with `/p2p-circuit`): each relay joins the allow-list, and a peer may
    /// hold two connections, so that DCUtR (if [`NetConfig::hole_punching`]) can add a direct
    /// one beside the relayed one, or a node reconnect while its old circuit closes.
    pub fn through_relays(&mut self, addrs: &[Multiaddr]) {
        let relays: Vec<_> = nat::relays(addrs).iter().filter_map(participant).collect();
        if !relays.is_empty() {
            self.allowed.extend(relays.iter().copied());
            self.relays.extend(relays);
            self.max_connections_per_peer = self.max_connections_per_peer.max(2);
            // Two circuits a peer: a relay lets a source hold two (see `RelayService`).
            self.circuit_streams = self.circuit_streams.max(2 * self.allowed.len());
        }
    }

    /// Connections one peer may hold: the federation's, plus one for an AutoNAT dial-back (which
    /// would otherwise be refused, and a reachable peer told that it is not).
    pub(crate) fn connections_per_peer(&self) -> u32 {
        self.max_connections_per_peer.max(1) + u32::from(self.autonat.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::peer_id;

    #[test]
    fn autonat_leaves_room_for_one_dial_back_per_peer() {
        let mut cfg = NetConfig::new(FederationId::new("f").unwrap(), Vec::new());
        assert_eq!(cfg.connections_per_peer(), 1);
        cfg.autonat = Some(AutoNat::new(Vec::new()));
        assert_eq!(cfg.connections_per_peer(), 2);
        let relay = peer_id(&protocol::Identity::from_seed([1; 32]).unwrap().id());
        cfg.through_relays(&[format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit").parse().unwrap()]);
        assert_eq!(cfg.connections_per_peer(), 3, "relayed, direct (DCUtR) and a dial-back");
    }
}
