//! `fd-aggregator relay`: a circuit relay v2 and nothing else, for an aggregator that has no
//! open port (behind a NAT). The aggregator listens through the relay (a
//! `/…/p2p/<relay>/p2p-circuit` address in its `listen`), the nodes dial it through the relay
//! (`/…/p2p/<relay>/p2p-circuit/p2p/<aggregator>`), and DCUtR then tries to connect them
//! directly. The relay serves only the peers it is told to allow: the aggregator and the roster.
//! It sees who talks to whom and how much, never what: every connection through it is
//! end-to-end Noise-encrypted.

use net::multiaddr::Multiaddr;
use net::nat::RelayService;
use net::{Client, Event, Handle, NetConfig};
use protocol::{FederationId, Identity, ParticipantId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// A running relay.
pub struct Relay {
    client: Client,
    events: mpsc::Receiver<Event>,
    network: Handle,
    addrs: Vec<Multiaddr>,
    shutdown: CancellationToken,
}

impl Relay {
    /// Starts serving `allow` on `listen` (the relay's public addresses), until `shutdown`.
    /// Only `aggregators` (allowed too) may reserve a slot, that is, be reached through the
    /// relay; none given: every allowed peer may (a member could then pose as reachable here).
    /// The circuits are sized to the peers allowed (see [`RelayService::for_federation`]), and
    /// the relay has no request-response protocol: a request to it fails as unsupported.
    pub async fn start(
        identity: Identity,
        listen: &[Multiaddr],
        allow: Vec<ParticipantId>,
        aggregators: Vec<ParticipantId>,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        if listen.is_empty() {
            return Err(Error::config("listen", "no address"));
        }
        let mut allow = allow;
        for a in &aggregators {
            if !allow.contains(a) {
                allow.push(*a);
            }
        }
        if allow.is_empty() {
            return Err(Error::config("allow", "no peer to relay for"));
        }
        let service = RelayService {
            reservers: if aggregators.is_empty() {
                tracing::warn!("no --aggregator given: every allowed peer may reserve a slot on this relay");
                allow.clone()
            } else {
                aggregators
            },
            ..RelayService::for_federation(allow[0], allow.len())
        };
        let service_circuits = service.max_circuits;
        // The federation id only names the refusal receipts the relay would send.
        let mut cfg = NetConfig::new(FederationId::new("relay")?, allow);
        cfg.relay = Some(service);
        // The relay answers no request: it does not speak the federation's protocol at all.
        cfg.requests = false;
        // Every circuit to the aggregator is a stream on the relay's connection to it.
        cfg.circuit_streams = service_circuits;
        // Answers AutoNAT probes: a node behind a relay asks the relay whether it is reachable.
        cfg.autonat = Some(net::nat::AutoNat::new(Vec::new()));
        let (client, events, network) = net::spawn(identity, cfg, shutdown)?;
        let mut addrs = Vec::new();
        for addr in listen {
            let bound =
                client.listen(addr.clone()).await.map_err(|e| Error::config("listen", net::error::Chain(&e)))?;
            addrs.extend(net::interfaces::expand(addr, &bound));
        }
        tracing::info!(peer = %net::keys::peer_id_string(&client.id()), addrs = ?addrs, "relay listening");
        Ok(Self { client, events, network, addrs, shutdown: shutdown.clone() })
    }

    /// The addresses it listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Its identity.
    pub fn id(&self) -> ParticipantId {
        self.client.id()
    }

    /// Relays until the token given to [`Relay::start`] is cancelled, then closes its
    /// connections.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ev = self.events.recv() => match ev {
                    Some(_) => {}
                    None => break,
                },
            }
        }
        drop(self.client);
        self.network.shutdown().await;
    }
}
