//! The runtime glue shared by node and aggregator: libp2p, the egress ledger, key files, the
//! owner-thread pattern and the binaries' common set-up.
//!
//! [`spawn`] builds a Swarm (TCP + QUIC, Noise, Yamux, identify, ping, request-response with a
//! [`codec::FrameCodec`] that caps each message kind at its own size, an allow-list that refuses
//! every peer not on it at the connection level, and connection limits: one connection per peer,
//! a handful of streams per connection, a bounded number of handshakes in flight; the circuit
//! relay client, the optional relay service, DCUtR and AutoNAT in [`nat`]) and starts the
//! [`event_loop`] task, the only one that owns the Swarm. It
//! returns a clonable [`Client`] (commands, each with a `oneshot` reply), a bounded stream of
//! [`Event`]s, and a [`Handle`] for the shutdown. The loop holds no `Client` of its own: it
//! ends when the last `Client` is dropped, or when [`Handle::shutdown`] is called, in this fixed
//! order: stop taking inbound requests → drain the responses and requests in flight (bounded by
//! [`NetConfig::drain_timeout`]) → close every connection gracefully → the task returns.
//!
//! Every frame is a protocol [`protocol::SignedEnvelope`]. Inbound requests are verified off
//! the swarm task, in a bounded number of tasks (signer = authenticated peer, signature, size
//! caps, structure); refused ones are answered with a signed receipt carrying the reason code and
//! reported as [`Event::Refused`]. Requests of kinds given a [`rate::RateLimit`] beyond their
//! peer's budget are refused before verification. Verified requests reach the owner with
//! backpressure, never dropped because a channel is full; so do disconnections. Every message
//! sent is signed and recorded in the optional egress [`ledger::Ledger`] (on disk, with the bytes
//! themselves if asked) before it leaves. Identify tells peers neither our listen addresses nor
//! our version.
//!
//! Modules: [`client`] (the handle and responder), [`event_loop`] (the Swarm's owner),
//! [`nat`] (relay, hole punching, reachability), [`codec`], [`rate`], [`keys`], [`ledger`], [`owner`] (state
//! owned by a dedicated thread), [`metrics`] (traffic counters and the `GET /metrics` endpoint),
//! [`cli`].
#![deny(missing_docs)]

pub mod cli;
pub mod client;
pub mod codec;
pub mod event_loop;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod nat;
pub mod owner;
mod pending;
mod per_peer;
pub mod rate;

use std::time::Duration;

use libp2p::PeerId;
use protocol::{FederationId, Identity, Limits, Message, MessageKind, ParticipantId, RefusalReason};
use tokio_util::sync::CancellationToken;

pub use client::{Client, Responder};
pub use event_loop::Handle;
pub use libp2p::multiaddr;
pub use rate::RateLimit;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// The peer at the dialled address is not the one its `/p2p/` suffix names.
    #[error(
        "the peer at {addr} is {obtained}, not the PeerId its address names: ask the aggregator's operator for its current address with its PeerId (`aggregator` as `fd-aggregator init` prints it)"
    )]
    WrongPeer {
        /// The address dialled.
        addr: String,
        /// The PeerId the peer proved it has.
        obtained: String,
    },
    /// A request failed (timeout, closed connection, refused stream).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// Peer.
        peer: String,
        /// Cause.
        reason: String,
        /// The connection closed before a response came: what a dialler sees when the peer
        /// refuses it at the connection level (an aggregator whose roster lacks it).
        closed: bool,
    },
    /// A message could not be sealed or a response could not be verified.
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    /// The egress ledger could not be written; nothing was sent.
    #[error("egress ledger")]
    Ledger(#[source] std::io::Error),
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
    /// Inbound requests being verified or waiting for the owner at once; beyond it a request's
    /// stream is closed (its sender sees a failure and may retry).
    pub max_inbound: usize,
    /// How long the shutdown waits for responses and requests in flight.
    pub drain_timeout: Duration,
    /// Where to record every message sent (None: no ledger).
    pub ledger: Option<std::path::PathBuf>,
    /// Whether the ledger also keeps the bytes of every message sent (see [`ledger::Ledger`]).
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
    /// Serve as a circuit relay v2 for the allowed peers (None: do not). Relayed dialling and
    /// listening, and DCUtR, are always on (see [`nat`]).
    pub relay: Option<nat::RelayService>,
    /// Run AutoNAT (None: do not); a peer may then hold one more connection, for a dial-back.
    pub autonat: Option<nat::AutoNat>,
    /// Where to count the bytes and messages sent and received, per peer and kind (None: not
    /// counted beyond [`Client::traffic`]).
    pub traffic: Option<metrics::Traffic>,
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
            relay: None,
            autonat: None,
            traffic: None,
        }
    }
}

/// What the event loop reports to its owner.
// `Request` is the common event and the large one: boxing it would allocate once more per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
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
}

/// Builds the Swarm and starts its event loop on the current runtime. The loop stops when
/// `shutdown` (or the returned [`Handle`]) is cancelled, or when the last [`Client`] is dropped.
pub fn spawn(
    identity: Identity,
    cfg: NetConfig,
    shutdown: &CancellationToken,
) -> Result<(Client, tokio::sync::mpsc::Receiver<Event>, Handle), Error> {
    event_loop::spawn(identity, cfg, shutdown.child_token())
}
