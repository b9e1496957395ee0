//! The task that alone owns the Swarm: one `select!` over swarm events, commands from the
//! [`Client`]s, the shutdown token, and the backlog of connection events for the owner.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, allow_block_list, connection_limits, identify, identity, noise, ping, tcp,
    yamux,
};
use protocol::{FederationId, Identity, Message, ParticipantId, Receipt, ReceiptStatus, RefusalReason, SignedEnvelope};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Command, Responder, Shared};
use crate::codec::{self, Written};
use crate::config::NetConfig;
use crate::denied::{DeniedLog, Who};
use crate::error::{Error, RequestFailure};
use crate::event::Event;
use crate::ids::{participant, peer_id};
use crate::ledger;
use crate::rate::Limiter;

/// What identify tells peers about this software: a name, not a version to fingerprint.
pub const AGENT: &str = "fedistil";

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so that refused peers never reach the other behaviours (nor count against limits).
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    per_ip: crate::pending::PendingPerIp,
    limits: connection_limits::Behaviour,
    // Before `rr`: a connection it denies never becomes one a request can be sent on.
    per_peer: crate::per_peer::InboundPerPeer,
    // Off on a relay (`NetConfig::requests`): it does not even negotiate the protocol.
    rr: Toggle<request_response::Behaviour<codec::FrameCodec>>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    nat: crate::nat::Nat,
}

/// Stops the event loop and waits for it (see the crate docs for the order of the shutdown).
#[derive(Debug)]
pub struct Handle {
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Cancels the loop and waits until it has drained and closed its connections.
    pub async fn shutdown(self) {
        self.token.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "network event loop panicked");
        }
    }
}

/// How many times a request is sent again when it failed before a byte of it was written (see
/// [`PendingRequest::written`]); with [`retry_delay`], about 11 s in all.
const STREAM_RETRIES: u8 = 30;

/// Wait before the next attempt: 25 ms, doubling, at most 400 ms.
fn retry_delay(attempt: u8) -> Duration {
    Duration::from_millis((25u64 << attempt.min(4)).min(400))
}

/// A request sent and not yet answered, kept whole so that it can be sent again.
struct PendingRequest {
    peer: PeerId,
    bytes: Vec<u8>,
    /// Set by the codec when it starts writing this attempt. An attempt that failed with an I/O
    /// error before that never left: request-response fails it so when every stream of this
    /// side's connection is busy with the peer's own requests (its handler's
    /// `on_fully_negotiated_outbound`), and sending it again cannot deliver it twice.
    written: Written,
    reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    attempt: u8,
}

/// Refused connections are logged once per IP address (or relayed peer) per this interval…
const DENIED_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// …for at most this many addresses and peers at once (see [`crate::denied`])…
const DENIED_LOG_KEYS: usize = 4096;
/// …in at most this many lines an interval in all; the rest are counted, and summed up in one
/// line an interval.
const DENIED_LOG_LINES: u32 = 20;

/// Peers off the allow-list remembered as logged; beyond that many the memory starts again.
const OFF_ROSTER_LOGGED: usize = 4096;

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Makes the `Client` behind each inbound request's [`Responder`] without keeping the
    /// command channel open: the loop ends when every strong `Client` is gone.
    weak: mpsc::WeakSender<Command>,
    events: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    federation: FederationId,
    inbound: Arc<Semaphore>,
    /// Disconnections the owner has not taken yet (at most one per peer).
    backlog: VecDeque<ParticipantId>,
    rate: Limiter,
    denied: DeniedLog,
    /// Peers off the allow-list already logged (see [`EventLoop::log_off_roster`]).
    off_roster_logged: HashSet<PeerId>,
    /// This peer's relays ([`NetConfig::relays`]).
    relays: HashSet<PeerId>,
    pending_listen: HashMap<ListenerId, (String, oneshot::Sender<Result<Multiaddr, Error>>)>,
    pending_dial: HashMap<ConnectionId, (String, oneshot::Sender<Result<PeerId, Error>>)>,
    pending_request: HashMap<OutboundRequestId, PendingRequest>,
    /// Responses handed to the swarm and not yet sent: flushed before the loop stops.
    unsent_responses: HashSet<InboundRequestId>,
    draining: bool,
    drain_timeout: Duration,
}

/// Builds the Swarm and starts its event loop on the current runtime. The loop stops when
/// `shutdown` (or the returned [`Handle`]) is cancelled, or when the last [`Client`] is dropped.
pub fn spawn(
    identity: Identity,
    cfg: NetConfig,
    shutdown: &CancellationToken,
) -> Result<(Client, mpsc::Receiver<Event>, Handle), Error> {
    let token = shutdown.child_token();
    let swarm = build_swarm(&identity, &cfg)?;
    let ledger = match &cfg.ledger {
        Some(path) => Some(ledger::Ledger::open(path, cfg.ledger_keeps_bytes).map_err(Error::Ledger)?),
        None => None,
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(cfg.event_capacity.max(1));
    let shared = Arc::new(Shared::new(identity, cfg.limits, ledger, cfg.traffic.clone()));
    let event_loop = EventLoop {
        swarm,
        commands: cmd_rx,
        weak: cmd_tx.downgrade(),
        events: ev_tx,
        shared: shared.clone(),
        federation: cfg.federation,
        inbound: Arc::new(Semaphore::new(cfg.max_inbound.max(1))),
        backlog: VecDeque::new(),
        rate: Limiter::new(&cfg.rate_limits),
        denied: DeniedLog::new(DENIED_LOG_INTERVAL, DENIED_LOG_KEYS, DENIED_LOG_LINES),
        off_roster_logged: HashSet::new(),
        relays: cfg.relays.iter().map(peer_id).collect(),
        pending_listen: HashMap::new(),
        pending_dial: HashMap::new(),
        pending_request: HashMap::new(),
        unsent_responses: HashSet::new(),
        draining: false,
        drain_timeout: cfg.drain_timeout,
    };
    let task = tokio::spawn(event_loop.run(token.clone()));
    Ok((Client { commands: cmd_tx, shared }, ev_rx, Handle { token, task }))
}

fn build_swarm(identity: &Identity, cfg: &NetConfig) -> Result<Swarm<Behaviour>, Error> {
    let mut seed = *identity.seed();
    let key = identity::Keypair::ed25519_from_bytes(&mut seed).map_err(|e| Error::Setup(e.into()))?;
    let timeout = cfg.request_timeout;
    let streams = cfg.max_streams_per_connection.max(1);
    // Muxer streams: request-response's, plus identify, ping and their negotiation, plus one a
    // relayed circuit where there are any (a relay's connection to the aggregator carries every
    // node's). A peer that opens more has its connection closed by the muxer; request-response
    // keeps its own cap on its streams.
    let muxer_streams = streams + 8 + cfg.circuit_streams;
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(cfg.connections_per_peer()))
        .with_max_pending_incoming(Some(cfg.max_pending_incoming.max(1)));
    let muxer = move || {
        let mut c = yamux::Config::default();
        c.set_max_num_streams(muxer_streams);
        c
    };
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, muxer)
        .map_err(|e| Error::Setup(e.into()))?
        .with_quic_config(|mut c| {
            c.max_concurrent_stream_limit = muxer_streams as u32;
            c
        })
        .with_relay_client(noise::Config::new, muxer)
        .map_err(|e| Error::Setup(e.into()))?
        .with_behaviour(|k, relay_client| Behaviour {
            allow: allow_block_list::Behaviour::default(),
            per_ip: crate::pending::PendingPerIp::new(cfg.max_pending_incoming_per_ip, cfg.max_pending_incoming),
            limits: connection_limits::Behaviour::new(limits),
            per_peer: crate::per_peer::InboundPerPeer::new(
                cfg.max_connections_per_peer,
                cfg.autonat.iter().flat_map(|a| a.servers.iter().map(peer_id)),
            ),
            rr: Toggle::from(cfg.requests.then(|| {
                request_response::Behaviour::with_codec(
                    codec::FrameCodec { limits: cfg.limits },
                    [(codec::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(timeout)
                        .with_max_concurrent_streams(streams),
                )
            })),
            identify: identify::Behaviour::new(
                identify::Config::new("/fedistil/1".into(), k.public())
                    .with_agent_version(AGENT.into())
                    .with_hide_listen_addrs(true),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            nat: crate::nat::Nat::new(
                k.public().to_peer_id(),
                relay_client,
                cfg.relay.as_ref(),
                cfg.autonat.as_ref(),
                cfg.hole_punching,
            ),
        })
        .map_err(|e| Error::Setup(e.into()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(3600))
                .with_max_negotiating_inbound_streams(muxer_streams)
        })
        .build();
    for p in &cfg.allowed {
        swarm.behaviour_mut().allow.allow_peer(peer_id(p));
    }
    Ok(swarm)
}

impl EventLoop {
    async fn run(mut self, token: CancellationToken) {
        let mut summary =
            tokio::time::interval_at(tokio::time::Instant::now() + DENIED_LOG_INTERVAL, DENIED_LOG_INTERVAL);
        loop {
            tokio::select! {
                _ = summary.tick() => self.summarise_denied(),
                _ = token.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break, // the last Client is gone
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                permit = self.events.clone().reserve_owned(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(p) = self.backlog.pop_front() {
                            permit.send(Event::Disconnected(p));
                        }
                    }
                    Err(_) => self.backlog.clear(), // the owner has stopped listening
                },
                _ = self.events.closed() => break,
            }
        }
        self.summarise_denied();
        self.shutdown().await;
    }

    /// Stop taking inbound requests → drain responses and requests in flight → close every
    /// connection gracefully. Bounded by the drain timeout.
    async fn shutdown(&mut self) {
        self.draining = true;
        let timeout = self.drain_timeout;
        tracing::debug!(
            unsent = self.unsent_responses.len(),
            requests = self.pending_request.len(),
            "network draining"
        );
        let drain = async {
            while !self.unsent_responses.is_empty() || !self.pending_request.is_empty() {
                tokio::select! {
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => self.on_command(cmd),
                        // No client left: only the swarm can still make progress.
                        None => {
                            let ev = self.swarm.select_next_some().await;
                            self.on_swarm_event(ev);
                        }
                    },
                    ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                }
            }
            let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
            for p in peers {
                let _ = self.swarm.disconnect_peer_id(p);
            }
            while self.swarm.connected_peers().next().is_some() {
                let ev = self.swarm.select_next_some().await;
                self.on_swarm_event(ev);
            }
        };
        if tokio::time::timeout(timeout, drain).await.is_err() {
            tracing::debug!(
                unsent = self.unsent_responses.len(),
                requests = self.pending_request.len(),
                "network stopped before everything in flight was done"
            );
        }
        for (_, PendingRequest { reply, .. }) in self.pending_request.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
        tracing::debug!("network event loop stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.pending_listen.insert(id, (addr.to_string(), reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(Error::Listen { addr: addr.to_string(), source: e.into() }));
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
                        let _ = reply.send(Err(Error::Dial { addr: addr.to_string(), source: e.into() }));
                    }
                }
            }
            Command::Request { peer, bytes, reply, attempt } => {
                if self.draining {
                    let _ = reply.send(Err(Error::Stopped));
                    return;
                }
                let Some(rr) = self.swarm.behaviour_mut().rr.as_mut() else {
                    let failure = RequestFailure::UnsupportedProtocol;
                    let _ = reply.send(Err(Error::Request { peer: peer.to_base58(), failure }));
                    return;
                };
                let request = codec::Request { bytes: bytes.clone(), written: Written::default() };
                let written = request.written.clone();
                let id = rr.send_request(&peer, request);
                self.pending_request.insert(id, PendingRequest { peer, bytes, written, reply, attempt });
            }
            Command::Respond { id, channel, bytes } => {
                // A channel comes from an inbound request: `rr` is on.
                let sent = self.swarm.behaviour_mut().rr.as_mut().map(|rr| rr.send_response(channel, bytes).is_ok());
                if sent == Some(true) {
                    self.unsent_responses.insert(id);
                } else {
                    tracing::warn!("response channel closed before the answer was ready");
                }
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
                if self.swarm.behaviour().nat.serves() {
                    self.swarm.add_external_address(address.clone());
                }
                if let Some((_, r)) = self.pending_listen.remove(&listener_id) {
                    let _ = r.send(Ok(address));
                }
            }
            // A relay that refuses a reservation closes its listener.
            SwarmEvent::ListenerError { listener_id, error }
            | SwarmEvent::ListenerClosed { listener_id, reason: Err(error), .. } => {
                if let Some((addr, r)) = self.pending_listen.remove(&listener_id) {
                    let _ = r.send(Err(Error::Listen { addr, source: error.into() }));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                if crate::nat::is_dial_back(&endpoint) {
                    self.swarm.close_connection(connection_id);
                }
                if let Some((_, r)) = self.pending_dial.remove(&connection_id) {
                    let _ = r.send(Ok(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                if num_established > 0 {
                    return;
                }
                if let Some(p) = participant(&peer_id)
                    && !self.backlog.contains(&p)
                    && !self.draining
                {
                    self.backlog.push_back(p);
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, peer_id } => {
                self.on_dial_error(connection_id, peer_id, error)
            }
            // Refused by the allow-list or the limits. Other failures (a handshake the remote
            // broke off, as an AutoNAT dial-back does once it has connected) refuse no one.
            SwarmEvent::IncomingConnectionError {
                error: error @ ListenError::Denied { .. },
                peer_id,
                send_back_addr,
                ..
            } => {
                self.shared.count_refused_connection();
                let off_roster = matches!(&error, ListenError::Denied { cause }
                    if cause.downcast_ref::<allow_block_list::NotAllowed>().is_some());
                match peer_id {
                    Some(peer) if off_roster => self.log_off_roster(peer),
                    _ => self.log_denied(Who::of(peer_id, &send_back_addr), peer_id, &error),
                }
            }
            SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                tracing::debug!(peer = %send_back_addr, %error, "incoming connection failed")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_request_response(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if self.relays.contains(&peer_id) =>
            {
                self.swarm.behaviour_mut().nat.observed_by_relay(&info.observed_addr)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Nat(ev)) => {
                if let Some(r) = crate::nat::on_event(ev) {
                    self.shared.reachability.send_replace(r);
                }
            }
            // A connection whose pings time out or fail is dead or stuck: close it, so that it
            // does not hold its peer's only connection slot while the peer tries to reconnect.
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, connection, result: Err(error) }))
                if !matches!(error, ping::Failure::Unsupported) =>
            {
                tracing::debug!(%peer, %error, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }

    /// Answers the dial that failed, if it was asked for (a peer at the address with another
    /// key than its `/p2p/` names is told apart).
    fn on_dial_error(&mut self, id: ConnectionId, peer: Option<PeerId>, error: libp2p::swarm::DialError) {
        let Some((addr, reply)) = self.pending_dial.remove(&id) else {
            tracing::debug!(?peer, %error, "outgoing connection failed");
            return;
        };
        let e = match error {
            libp2p::swarm::DialError::WrongPeerId { obtained, .. } => {
                Error::WrongPeer { addr, obtained: obtained.to_base58() }
            }
            error => Error::Dial { addr, source: error.into() },
        };
        let _ = reply.send(Err(e));
    }

    /// Logs once per peer (not once per connection: such a peer keeps dialling) that a peer
    /// whose key is not on the allow-list, the aggregator's roster, was refused, naming its
    /// PeerId so that the operator can tell a mistyped roster entry from a stranger.
    fn log_off_roster(&mut self, peer: PeerId) {
        if self.off_roster_logged.len() >= OFF_ROSTER_LOGGED {
            self.off_roster_logged.clear();
        }
        // Within the refusals' line budget: a flood of fresh keys is counted, not logged.
        if !self.off_roster_logged.contains(&peer) && self.denied.admit(&Who::Peer(peer), Instant::now()) {
            self.off_roster_logged.insert(peer);
            tracing::warn!(%peer, "PeerId {peer} is not on the roster: its connections are refused");
        }
    }

    /// Logs a refused connection once per IP address (or relayed peer) per
    /// [`DENIED_LOG_INTERVAL`], and no more than [`DENIED_LOG_LINES`] lines an interval in all, so
    /// that a peer off the roster that keeps dialling, a host that keeps reconnecting from new
    /// ports, or many hosts at once, can flood neither the log nor the swarm task.
    fn log_denied(&mut self, who: Who, peer: Option<PeerId>, error: &ListenError) {
        if self.denied.admit(&who, Instant::now()) {
            tracing::warn!(from = %who, peer = peer.map(tracing::field::display), %error, "incoming connection refused");
        }
    }

    /// The one line an interval that counts the refused connections not logged.
    fn summarise_denied(&mut self) {
        if let Some(suppressed) = self.denied.summary() {
            tracing::warn!(
                suppressed,
                interval_s = DENIED_LOG_INTERVAL.as_secs(),
                "incoming connections refused and not logged"
            );
        }
    }

    fn on_request_response(&mut self, ev: request_response::Event<codec::Request, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => {
                    self.on_request(peer, request_id, request.bytes, channel)
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(p) = self.pending_request.remove(&request_id) {
                        let _ = p.reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                let Some(p) = self.pending_request.remove(&request_id) else { return };
                let unsent = matches!(error, request_response::OutboundFailure::Io(_)) && !p.written.get();
                if unsent
                    && p.attempt < STREAM_RETRIES
                    && !self.draining
                    && let Some(commands) = self.weak.upgrade()
                {
                    // The request never left: most often the peer keeps every stream of the
                    // connection busy with its own requests (a flooding member does). Ask again
                    // shortly, once one of them is answered.
                    self.shared.count_retry();
                    tracing::debug!(%peer, attempt = p.attempt, "request failed before it was written; retrying");
                    tokio::spawn(async move {
                        tokio::time::sleep(retry_delay(p.attempt)).await;
                        // A loop that has stopped drops the reply: the caller sees `Stopped`.
                        let _ = commands
                            .send(Command::Request {
                                peer: p.peer,
                                bytes: p.bytes,
                                reply: p.reply,
                                attempt: p.attempt + 1,
                            })
                            .await;
                    });
                    return;
                }
                let failure = match error {
                    request_response::OutboundFailure::ConnectionClosed => RequestFailure::ConnectionClosed,
                    request_response::OutboundFailure::Timeout => RequestFailure::Timeout,
                    request_response::OutboundFailure::DialFailure => RequestFailure::Unreachable,
                    request_response::OutboundFailure::UnsupportedProtocols => RequestFailure::UnsupportedProtocol,
                    request_response::OutboundFailure::Io(e) => RequestFailure::Io(e),
                };
                let _ = p.reply.send(Err(Error::Request { peer: peer.to_base58(), failure }));
            }
            request_response::Event::InboundFailure { peer, error, request_id, .. } => {
                self.unsent_responses.remove(&request_id);
                tracing::warn!(peer = %peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.unsent_responses.remove(&request_id);
            }
        }
    }

    /// Hands an inbound request to a verification task, or closes its stream when the loop is
    /// draining or too many are in flight (the sender sees a failure and may retry). A request
    /// beyond its peer's rate limit is refused without being verified.
    fn on_request(&mut self, peer: PeerId, id: InboundRequestId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        self.shared.add_received(&peer, &request);
        let Some(sender) = participant(&peer) else { return };
        if self.draining {
            return;
        }
        let kind = protocol::codec::peek_kind(&request);
        let limited = self.rate.allow(peer, kind, tokio::time::Instant::now()).err();
        let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
            tracing::warn!(peer = %sender.short(), "too many inbound requests in flight; closing this one");
            return;
        };
        let Some(commands) = self.weak.upgrade() else { return };
        let client = Client { commands, shared: self.shared.clone() };
        let events = self.events.clone();
        let federation = self.federation.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limits = client.shared.limits;
            let opened = match limited {
                None => SignedEnvelope::from_bytes(&request, &limits).and_then(|env| env.open(&sender, &limits)),
                Some(rate) => Err(protocol::Error::Refused {
                    reason: RefusalReason::Unavailable,
                    detail: format!(
                        "rate limit: {kind:?} at most {} at once, then {} a second",
                        rate.burst, rate.per_second
                    ),
                }),
            };
            let responder = Responder { peer, id, channel, client };
            let (reason, detail, round) = match opened {
                Ok(message) if message.federation() == &federation => {
                    // Backpressure: wait for the owner rather than drop the request.
                    let _ = events.send(Event::Request { peer: sender, message, responder }).await;
                    return;
                }
                Ok(message) => (
                    RefusalReason::WrongFederation,
                    format!("federation {} is not {federation}", message.federation()),
                    message.round().unwrap_or(0),
                ),
                Err(e) => (e.refusal_reason(), e.to_string(), 0),
            };
            tracing::warn!(peer = %sender.short(), ?reason, %detail, "message refused");
            let receipt = Message::Receipt(Receipt {
                federation,
                round,
                status: ReceiptStatus::Refused(reason),
                detail: protocol::message::short_detail(&detail),
            });
            if let Err(e) = responder.respond(receipt).await {
                tracing::warn!(error = %crate::error::Chain(&e), "could not send a refusal receipt");
            }
            let _ = events.send(Event::Refused { peer: sender, reason, detail }).await;
        });
    }
}
