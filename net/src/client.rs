//! [`Client`]: the clonable handle through which the owner talks to the event loop, and
//! [`Responder`], which answers one inbound request.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::request_response::{InboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId};
use protocol::{Identity, Limits, Message, ParticipantId, SignedEnvelope};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;
use crate::ids::{participant, peer_id};
use crate::ledger::{Ledger, LedgerEntry};
use crate::metrics::Traffic;
use crate::nat::Reachability;

/// What the client asks of the event loop.
pub(crate) enum Command {
    Listen {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr, Error>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
    /// `attempt`: 0 from a client; the event loop counts its retries (see `event_loop`).
    Request {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
        attempt: u8,
    },
    Respond {
        id: InboundRequestId,
        channel: ResponseChannel<Vec<u8>>,
        bytes: Vec<u8>,
    },
    Connected {
        reply: oneshot::Sender<Vec<ParticipantId>>,
    },
}

/// The byte counters of a [`Client`], read-only ([`Client::meter`]).
#[derive(Clone)]
pub struct Meter(Arc<Shared>);

impl Meter {
    /// (bytes sent, bytes received) so far, counting encoded envelopes.
    pub fn traffic(&self) -> (u64, u64) {
        (self.0.sent.load(Ordering::Relaxed), self.0.received.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Meter").field(&self.traffic()).finish()
    }
}

/// What clients and the event loop share: the signing identity, the caps, the ledger, the
/// traffic counters and AutoNAT's verdict.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) identity: Identity,
    pub(crate) limits: Limits,
    pub(crate) ledger: Option<Ledger>,
    traffic: Option<Traffic>,
    sent: AtomicU64,
    received: AtomicU64,
    retries: AtomicU64,
    /// Incoming connections refused (allow-list, limits), logged or not.
    refused: watch::Sender<u64>,
    pub(crate) reachability: watch::Sender<Reachability>,
}

impl Shared {
    pub(crate) fn new(identity: Identity, limits: Limits, ledger: Option<Ledger>, traffic: Option<Traffic>) -> Self {
        Self {
            identity,
            limits,
            ledger,
            traffic,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            refused: watch::Sender::new(0),
            reachability: watch::Sender::new(Reachability::Unknown),
        }
    }

    /// Signs `message`, records it in the ledger (on disk before this returns) and counts it.
    pub(crate) async fn seal(&self, peer: &PeerId, direction: &str, message: &Message) -> Result<Vec<u8>, Error> {
        let bytes = SignedEnvelope::seal(message, &self.identity)?.to_bytes()?;
        if let Some(l) = &self.ledger {
            l.record(&LedgerEntry::new(&peer.to_base58(), direction, message, &bytes), &bytes)
                .await
                .map_err(Error::Ledger)?;
        }
        self.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if let Some(t) = &self.traffic {
            t.sent(peer, message.kind(), bytes.len());
        }
        Ok(bytes)
    }

    /// Counts a request sent again for want of a free stream.
    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an incoming connection refused by the allow-list or the limits.
    pub(crate) fn count_refused_connection(&self) {
        self.refused.send_modify(|n| *n += 1);
        if let Some(t) = &self.traffic {
            t.refused_connection();
        }
    }

    /// Counts a frame received from `peer`, before it is verified.
    pub(crate) fn add_received(&self, peer: &PeerId, frame: &[u8]) {
        self.received.fetch_add(frame.len() as u64, Ordering::Relaxed);
        if let Some(t) = &self.traffic {
            t.received(peer, frame);
        }
    }
}

/// Clonable handle to the event loop. The loop ends when the last one is dropped.
#[derive(Clone)]
pub struct Client {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.shared.identity.id()).finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), Error> {
        self.commands.send(cmd).await.map_err(|_| Error::Stopped)
    }

    /// (bytes sent, bytes received) so far, counting encoded envelopes.
    pub fn traffic(&self) -> (u64, u64) {
        (self.shared.sent.load(Ordering::Relaxed), self.shared.received.load(Ordering::Relaxed))
    }

    /// A read-only view of the byte counters of [`Client::traffic`] that does not keep the event
    /// loop running (for a status page that outlives the network).
    pub fn meter(&self) -> Meter {
        Meter(self.shared.clone())
    }

    /// Requests sent again so far because every stream of the connection was busy with the
    /// peer's own requests (each is retried for about 11 s before it fails).
    pub fn stream_retries(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }

    /// The incoming connections refused so far by the allow-list or the connection limits
    /// (each counted, whether it was logged or not), as a value that can be waited on.
    pub fn refused_connections(&self) -> watch::Receiver<u64> {
        self.shared.refused.subscribe()
    }

    /// AutoNAT's verdict on this peer's reachability, now and as it changes (see [`crate::nat`]).
    pub fn reachability(&self) -> watch::Receiver<Reachability> {
        self.shared.reachability.subscribe()
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.shared.identity.id()
    }

    /// Starts listening; returns the bound address (with the real port).
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Listen { addr, reply }).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Dials an address (which may end in `/p2p/<peer id>`); returns the connected peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<ParticipantId, Error> {
        let (reply, rx) = oneshot::channel();
        let text = addr.to_string();
        self.send(Command::Dial { addr, reply }).await?;
        let peer = rx.await.map_err(|_| Error::Stopped)??;
        participant(&peer).ok_or(Error::NotEd25519 { addr: text })
    }

    /// Peers currently connected.
    pub async fn connected(&self) -> Result<Vec<ParticipantId>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connected { reply }).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Sends `bytes` exactly as given, unsigned, and returns the raw answer: for tests that must
    /// put malformed frames on the wire. Only with the `raw-frames` feature, which no binary
    /// enables: every send of a real participant is signed. Still recorded in the ledger (as a
    /// `Raw` message with its hash and size).
    #[cfg(feature = "raw-frames")]
    pub async fn request_raw(&self, peer: &ParticipantId, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
        let pid = peer_id(peer);
        if let Some(l) = &self.shared.ledger {
            l.record(&LedgerEntry::unsigned(&pid.to_base58(), "request", &bytes), &bytes)
                .await
                .map_err(Error::Ledger)?;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { peer: pid, bytes, reply, attempt: 0 }).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Signs and sends a request; verifies that the response was signed by `peer` and decodes it.
    pub async fn request(&self, peer: &ParticipantId, message: &Message) -> Result<Message, Error> {
        let pid = peer_id(peer);
        let bytes = self.shared.seal(&pid, "request", message).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { peer: pid, bytes, reply, attempt: 0 }).await?;
        let raw = rx.await.map_err(|_| Error::Stopped)??;
        self.shared.add_received(&pid, &raw);
        let limits = &self.shared.limits;
        let env = SignedEnvelope::from_bytes(&raw, limits)?;
        Ok(env.open(peer, limits)?)
    }
}

/// Answers one inbound request.
#[derive(Debug)]
pub struct Responder {
    pub(crate) peer: PeerId,
    pub(crate) id: InboundRequestId,
    pub(crate) channel: ResponseChannel<Vec<u8>>,
    pub(crate) client: Client,
}

impl Responder {
    /// Signs and sends the response.
    pub async fn respond(self, message: Message) -> Result<(), Error> {
        let bytes = self.client.shared.seal(&self.peer, "response", &message).await?;
        self.client.send(Command::Respond { id: self.id, channel: self.channel, bytes }).await
    }
}
