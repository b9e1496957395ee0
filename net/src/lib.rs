//! libp2p glue shared by node and aggregator.
//!
//! [`spawn`] builds a Swarm (TCP + QUIC, Noise, Yamux, identify, ping, request-response with
//! a size-capped [`codec::FrameCodec`], and an allow-list that refuses every peer not on it at
//! the connection level) and starts the [`EventLoop`], the only task that owns the Swarm. It
//! returns a clonable [`Client`] (commands, each with a `oneshot` reply) and a bounded stream of
//! [`Event`]s.
//!
//! Every frame is a protocol [`SignedEnvelope`]. Inbound requests are verified in the event loop
//! (signer = authenticated peer, signature, size caps, structure); refused ones are answered
//! with a signed [`Receipt`] carrying the reason code and reported as [`Event::Refused`].
//! Responses are verified by the client against the peer that was asked. Every message sent is
//! recorded in the optional egress [`ledger::Ledger`] before it leaves.
#![deny(missing_docs)]

pub mod codec;
pub mod keys;
pub mod ledger;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, identify, identity, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder};
use protocol::{FederationId, Identity, Limits, Message, ParticipantId, Receipt, ReceiptStatus, RefusalReason, SignedEnvelope};
use tokio::sync::{mpsc, oneshot};

pub use libp2p::multiaddr;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Building the transport or swarm failed.
    #[error("transport setup: {0}")]
    Setup(String),
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        reason: String,
    },
    /// Dialling failed.
    #[error("cannot connect to {addr}: {reason}")]
    Dial {
        /// Address.
        addr: String,
        /// Cause.
        reason: String,
    },
    /// A request failed (timeout, closed connection, refused stream).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// Peer.
        peer: String,
        /// Cause.
        reason: String,
    },
    /// A message could not be sealed or a response could not be verified.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    /// The egress ledger could not be written; nothing was sent.
    #[error("egress ledger: {0}")]
    Ledger(std::io::Error),
    /// The event loop has stopped.
    #[error("network event loop has stopped")]
    Stopped,
}

/// The libp2p `PeerId` of a participant.
pub fn peer_id(p: &ParticipantId) -> PeerId {
    PeerId::from_bytes(&p.to_peer_id_bytes()).expect("an inline Ed25519 multihash is a valid PeerId")
}

/// The participant behind a `PeerId`, if it is an Ed25519 key.
pub fn participant(p: &PeerId) -> Option<ParticipantId> {
    ParticipantId::from_peer_id_bytes(&p.to_bytes()).ok()
}

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
    /// Where to record every message sent (None: no ledger).
    pub ledger: Option<std::path::PathBuf>,
}

impl NetConfig {
    /// Defaults for a federation and allow-list.
    pub fn new(federation: FederationId, allowed: Vec<ParticipantId>) -> Self {
        Self {
            federation,
            allowed,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(60),
            event_capacity: 256,
            ledger: None,
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so that refused peers never reach the other behaviours.
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    rr: request_response::Behaviour<codec::FrameCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// What the event loop reports.
#[derive(Debug)]
pub enum Event {
    /// First connection to a peer is up.
    Connected(ParticipantId),
    /// Last connection to a peer is gone.
    Disconnected(ParticipantId),
    /// A verified request; answer it with [`Responder::respond`].
    Request {
        /// Authenticated sender.
        peer: ParticipantId,
        /// The message.
        message: Message,
        /// Where the answer goes.
        responder: Responder,
    },
    /// An inbound message was refused (already answered with a receipt carrying `reason`).
    Refused {
        /// Sender.
        peer: ParticipantId,
        /// Reason code sent back.
        reason: RefusalReason,
        /// Detail for the log.
        detail: String,
    },
    /// A connection from a peer not on the allow-list was refused.
    Denied {
        /// The peer, if known.
        peer: Option<String>,
        /// Cause.
        detail: String,
    },
}

/// Answers one inbound request.
#[derive(Debug)]
pub struct Responder {
    peer: PeerId,
    id: InboundRequestId,
    channel: ResponseChannel<Vec<u8>>,
    client: Client,
}

impl Responder {
    /// Signs and sends the response.
    pub async fn respond(self, message: Message) -> Result<(), NetError> {
        let bytes = self.client.seal(&self.peer, "response", &message)?;
        self.client.send(Command::Respond { id: self.id, channel: self.channel, bytes }).await
    }
}

enum Command {
    Listen { addr: Multiaddr, reply: oneshot::Sender<Result<Multiaddr, NetError>> },
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, NetError>> },
    Request { peer: PeerId, bytes: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, NetError>> },
    Respond { id: InboundRequestId, channel: ResponseChannel<Vec<u8>>, bytes: Vec<u8> },
    Allow(PeerId),
    Disconnect(PeerId),
    Connected { reply: oneshot::Sender<Vec<ParticipantId>> },
}

/// Bytes sent and received on the wire (encoded envelopes), since the client was created.
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Clonable handle to the event loop.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    identity: Arc<Identity>,
    limits: Limits,
    ledger: Option<Arc<ledger::Ledger>>,
    traffic: Arc<Traffic>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.identity.id()).finish_non_exhaustive()
    }
}

impl Client {
    async fn send(&self, cmd: Command) -> Result<(), NetError> {
        self.commands.send(cmd).await.map_err(|_| NetError::Stopped)
    }

    fn seal(&self, peer: &PeerId, direction: &str, message: &Message) -> Result<Vec<u8>, NetError> {
        let bytes = SignedEnvelope::seal(message, &self.identity)?.to_bytes()?;
        if let Some(l) = &self.ledger {
            l.record(&peer.to_base58(), direction, message, &bytes).map_err(NetError::Ledger)?;
        }
        self.traffic.add_sent(bytes.len());
        Ok(bytes)
    }

    /// (bytes sent, bytes received) so far, counting encoded envelopes.
    pub fn traffic(&self) -> (u64, u64) {
        (self.traffic.sent.load(Ordering::Relaxed), self.traffic.received.load(Ordering::Relaxed))
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.identity.id()
    }

    /// Starts listening; returns the bound address (with the real port).
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Listen { addr, reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Dials an address (which may end in `/p2p/<peer id>`); returns the connected peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<ParticipantId, NetError> {
        let (reply, rx) = oneshot::channel();
        let text = addr.to_string();
        self.send(Command::Dial { addr, reply }).await?;
        let peer = rx.await.map_err(|_| NetError::Stopped)??;
        participant(&peer).ok_or(NetError::Dial { addr: text, reason: "peer is not an Ed25519 key".into() })
    }

    /// Adds a peer to the allow-list.
    pub async fn allow(&self, peer: &ParticipantId) -> Result<(), NetError> {
        self.send(Command::Allow(peer_id(peer))).await
    }

    /// Closes every connection to a peer.
    pub async fn disconnect(&self, peer: &ParticipantId) -> Result<(), NetError> {
        self.send(Command::Disconnect(peer_id(peer))).await
    }

    /// Peers currently connected.
    pub async fn connected(&self) -> Result<Vec<ParticipantId>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connected { reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Sends `bytes` exactly as given (no signing, no ledger) and returns the raw answer. For
    /// tests and diagnostics that must put malformed frames on the wire.
    pub async fn request_raw(&self, peer: &ParticipantId, bytes: Vec<u8>) -> Result<Vec<u8>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { peer: peer_id(peer), bytes, reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Signs and sends a request; verifies that the response was signed by `peer` and decodes it.
    pub async fn request(&self, peer: &ParticipantId, message: &Message) -> Result<Message, NetError> {
        let pid = peer_id(peer);
        let bytes = self.seal(&pid, "request", message)?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { peer: pid, bytes, reply }).await?;
        let raw = rx.await.map_err(|_| NetError::Stopped)??;
        self.traffic.add_received(raw.len());
        let env = SignedEnvelope::from_bytes(&raw, &self.limits)?;
        Ok(env.open(peer, &self.limits)?)
    }
}

/// The task that owns the Swarm.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    client: Client,
    federation: FederationId,
    pending_listen: HashMap<ListenerId, oneshot::Sender<Result<Multiaddr, NetError>>>,
    pending_dial: HashMap<ConnectionId, (String, oneshot::Sender<Result<PeerId, NetError>>)>,
    pending_request: HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<Vec<u8>, NetError>>)>,
    /// Responses handed to the swarm and not yet sent: flushed (briefly) before the loop stops.
    unsent_responses: HashSet<InboundRequestId>,
}

/// Builds the Swarm and returns the client, the event stream and the event loop (to spawn).
pub fn spawn(identity: Identity, cfg: NetConfig) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let mut seed = *identity.seed();
    let key = identity::Keypair::ed25519_from_bytes(&mut seed).map_err(|e| setup(&e))?;
    let cap = cfg.limits.max_message_bytes;
    let timeout = cfg.request_timeout;
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_behaviour(|k| Behaviour {
            allow: allow_block_list::Behaviour::default(),
            rr: request_response::Behaviour::with_codec(
                codec::FrameCodec { max: cap + 8 },
                [(codec::PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timeout).with_max_concurrent_streams(256),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new("/fedistil/1".into(), k.public()).with_agent_version(format!("fedistil/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    for p in &cfg.allowed {
        swarm.behaviour_mut().allow.allow_peer(peer_id(p));
    }
    let ledger = match &cfg.ledger {
        Some(path) => Some(Arc::new(ledger::Ledger::open(path).map_err(NetError::Ledger)?)),
        None => None,
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(cfg.event_capacity.max(1));
    let client = Client { commands: cmd_tx, identity: Arc::new(identity), limits: cfg.limits, ledger, traffic: Arc::default() };
    let event_loop = EventLoop {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        client: client.clone(),
        federation: cfg.federation,
        pending_listen: HashMap::new(),
        pending_dial: HashMap::new(),
        pending_request: HashMap::new(),
        unsent_responses: HashSet::new(),
    };
    Ok((client, ev_rx, event_loop))
}

impl EventLoop {
    /// Runs until every [`Client`] (but the loop's own) is dropped and the event receiver closes.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                _ = self.events.closed() => break,
            }
        }
        // The owner is gone; answers it gave just before (a node's last receipt) still go out.
        while let Ok(cmd) = self.commands.try_recv() {
            if let Command::Respond { .. } = cmd {
                self.on_command(cmd);
            }
        }
        tracing::debug!(unsent = self.unsent_responses.len(), connected = self.swarm.connected_peers().count(), "flushing");
        let flush = async {
            while !self.unsent_responses.is_empty() {
                let ev = self.swarm.select_next_some().await;
                self.on_swarm_event(ev);
            }
            // Close connections gracefully, so that what the muxer still buffers is delivered.
            let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
            for p in peers {
                let _ = self.swarm.disconnect_peer_id(p);
            }
            while self.swarm.connected_peers().next().is_some() {
                let ev = self.swarm.select_next_some().await;
                self.on_swarm_event(ev);
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), flush).await.is_err() {
            tracing::debug!(unsent = self.unsent_responses.len(), "stopping before every response and connection was closed");
        }
        tracing::debug!("network event loop stopped");
    }

    fn emit(&self, event: Event) {
        match self.events.try_send(event) {
            Ok(()) => {}
            // Bounded: a consumer that falls behind loses events rather than stalling the swarm.
            // A dropped request is answered by the peer's timeout.
            Err(mpsc::error::TrySendError::Full(_)) => tracing::warn!("event channel full; event dropped"),
            // The owner has stopped (the loop is flushing its last responses).
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::debug!("event channel closed; event dropped"),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.pending_listen.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Listen { addr: addr.to_string(), reason: e.to_string() }));
                }
            },
            Command::Dial { addr, reply } => {
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dial.insert(id, (addr.to_string(), reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dial { addr: addr.to_string(), reason: e.to_string() }));
                    }
                }
            }
            Command::Request { peer, bytes, reply } => {
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, bytes);
                self.pending_request.insert(id, (peer, reply));
            }
            Command::Respond { id, channel, bytes } => self.send_response(id, channel, bytes),
            Command::Allow(peer) => {
                self.swarm.behaviour_mut().allow.allow_peer(peer);
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.swarm.connected_peers().filter_map(participant).collect());
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                tracing::debug!(%address, "listening");
                if let Some(r) = self.pending_listen.remove(&listener_id) {
                    let _ = r.send(Ok(address));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(r) = self.pending_listen.remove(&listener_id) {
                    let _ = r.send(Err(NetError::Listen { addr: String::new(), reason: error.to_string() }));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, num_established, .. } => {
                if let Some((_, r)) = self.pending_dial.remove(&connection_id) {
                    let _ = r.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    if let Some(p) = participant(&peer_id) {
                        self.emit(Event::Connected(p));
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                if let Some(p) = participant(&peer_id) {
                    self.emit(Event::Disconnected(p));
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, peer_id } => {
                if let Some((addr, r)) = self.pending_dial.remove(&connection_id) {
                    let _ = r.send(Err(NetError::Dial { addr, reason: error.to_string() }));
                } else {
                    tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                }
            }
            SwarmEvent::IncomingConnectionError { error, peer_id, send_back_addr, .. } => {
                tracing::warn!(peer = ?peer_id, from = %send_back_addr, %error, "incoming connection refused");
                self.emit(Event::Denied { peer: peer_id.map(|p| p.to_base58()), detail: error.to_string() });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_request_response(ev),
            _ => {}
        }
    }

    fn on_request_response(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => self.on_request(peer, request_id, request, channel),
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, r)) = self.pending_request.remove(&request_id) {
                        let _ = r.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some((_, r)) = self.pending_request.remove(&request_id) {
                    let _ = r.send(Err(NetError::Request { peer: peer.to_base58(), reason: error.to_string() }));
                }
            }
            request_response::Event::InboundFailure { peer, error, request_id, .. } => {
                self.unsent_responses.remove(&request_id);
                tracing::warn!(peer = %peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { request_id, peer, .. } => {
                tracing::debug!(%peer, ?request_id, "response sent");
                self.unsent_responses.remove(&request_id);
            }
        }
    }

    fn send_response(&mut self, id: InboundRequestId, channel: ResponseChannel<Vec<u8>>, bytes: Vec<u8>) {
        if self.swarm.behaviour_mut().rr.send_response(channel, bytes).is_ok() {
            self.unsent_responses.insert(id);
        } else {
            tracing::warn!("response channel closed before the answer was ready");
        }
    }

    fn on_request(&mut self, peer: PeerId, id: InboundRequestId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        let Some(sender) = participant(&peer) else {
            return; // dropping the channel closes the stream
        };
        self.client.traffic.add_received(request.len());
        let limits = self.client.limits;
        let opened = SignedEnvelope::from_bytes(&request, &limits).and_then(|env| env.open(&sender, &limits));
        match opened {
            Ok(message) if message.federation() == &self.federation => {
                let responder = Responder { peer, id, channel, client: self.client.clone() };
                self.emit(Event::Request { peer: sender, message, responder });
            }
            Ok(message) => {
                let detail = format!("federation {} is not {}", message.federation(), self.federation);
                self.refuse(peer, sender, (id, channel), RefusalReason::WrongFederation, detail, message.round().unwrap_or(0));
            }
            Err(e) => self.refuse(peer, sender, (id, channel), e.refusal_reason(), e.to_string(), 0),
        }
    }

    fn refuse(&mut self, peer: PeerId, sender: ParticipantId, (id, channel): (InboundRequestId, ResponseChannel<Vec<u8>>), reason: RefusalReason, detail: String, round: u64) {
        tracing::warn!(peer = %sender.short(), ?reason, %detail, "message refused");
        let mut short = detail.clone();
        short.truncate(protocol::message::MAX_DETAIL_LEN);
        let receipt = Message::Receipt(Receipt { federation: self.federation.clone(), round, status: ReceiptStatus::Refused(reason), detail: short });
        match self.client.seal(&peer, "response", &receipt) {
            Ok(bytes) => self.send_response(id, channel, bytes),
            Err(e) => tracing::error!(error = %e, "could not seal a refusal receipt"),
        }
        self.emit(Event::Refused { peer: sender, reason, detail });
    }
}
