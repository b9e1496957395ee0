//! The flooding roster member: joins, then keeps `in_flight` requests open on its one
//! connection, cycling through [`KINDS`]; declines every round, acknowledges every consensus,
//! and stops when told that the federation is finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{PeerId, SwarmBuilder, noise, tcp, yamux};
use protocol::{
    Hello, Limits, Message, MessageKind, ParticipantId, Receipt, ReceiptStatus, RefSetRequest, RefusalReason,
    SignedEnvelope,
};
use tokio_util::sync::CancellationToken;

use super::codec::{FloodCodec, Frame, PROTOCOL};
use super::{Error, FloodConfig, FloodReport, keypair};

/// The requests sent, in rotation.
pub(crate) const KINDS: [&str; 7] =
    ["hello", "chunk", "garbage", "malformed", "forged", "oversized", "oversized_hello"];

/// A length claim over any cap (4 GiB).
const HUGE_CLAIM: u32 = u32::MAX;
/// A `Hello` frame over its kind's cap, sent in full.
const BIG_HELLO: usize = 128 << 10;

type Behaviour = request_response::Behaviour<FloodCodec>;

/// The frames the member sends, prepared once.
struct Frames {
    hello: Vec<u8>,
    chunk: Vec<u8>,
    forged: Vec<u8>,
    member: protocol::Identity,
    counter: u64,
}

impl Frames {
    fn new(cfg: &FloodConfig) -> Result<Self, Error> {
        let hello = Message::Hello(Hello {
            federation: cfg.federation.clone(),
            participant: cfg.member.id(),
            protocol_version: protocol::PROTOCOL_VERSION,
            agent: "fd-flood".into(),
        });
        let chunk = Message::RefSetRequest(RefSetRequest {
            federation: cfg.federation.clone(),
            reference_set: cfg.reference,
            offset: 0,
            len: 64 << 10,
        });
        Ok(Self {
            hello: SignedEnvelope::seal(&hello, &cfg.member)?.to_bytes()?,
            chunk: SignedEnvelope::seal(&chunk, &cfg.member)?.to_bytes()?,
            // The member's Hello, signed by another key.
            forged: SignedEnvelope::seal(&hello, &cfg.stranger)?.to_bytes()?,
            member: protocol::Identity::from_seed(*cfg.member.seed())?,
            counter: 0,
        })
    }

    /// Deterministic noise: `n` bytes from the counter.
    fn noise(&mut self, n: usize) -> Vec<u8> {
        self.counter += 1;
        let mut state = self.counter;
        (0..n)
            .map(|_| {
                state = protocol::seed::mix(state);
                state as u8
            })
            .collect()
    }

    fn frame(&mut self, kind: &str) -> Result<Frame, Error> {
        let whole = |bytes: Vec<u8>| Frame { claimed: None, bytes };
        Ok(match kind {
            "hello" => whole(self.hello.clone()),
            "chunk" => whole(self.chunk.clone()),
            "forged" => whole(self.forged.clone()),
            "garbage" => {
                let n = 16 + (self.counter as usize * 97) % 2048;
                whole(self.noise(n))
            }
            // A validly signed envelope whose body is noise.
            "malformed" => {
                let body = self.noise(64 + (self.counter as usize * 31) % 512);
                whole(SignedEnvelope::seal_raw(MessageKind::Hello as u8, body, &self.member).to_bytes()?)
            }
            // A submission's header under a claim of 4 GiB, then a little.
            "oversized" => {
                let mut bytes = self.hello.clone();
                bytes.truncate(4096);
                bytes[1] = MessageKind::Submission as u8;
                Frame { claimed: Some(HUGE_CLAIM), bytes }
            }
            _ => {
                let mut bytes = self.hello.clone();
                bytes.resize(BIG_HELLO, 0);
                whole(bytes)
            }
        })
    }
}

fn build(cfg: &FloodConfig) -> Result<Swarm<Behaviour>, Error> {
    let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
    let rr = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(10))
        .with_max_concurrent_streams(cfg.in_flight + 8);
    Ok(SwarmBuilder::with_existing_identity(keypair(&cfg.member)?)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|_| Behaviour::with_codec(FloodCodec, [(PROTOCOL, ProtocolSupport::Full)], rr))
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

/// What an answer from the aggregator was.
enum Answer {
    Served,
    Refused,
}

fn classify(bytes: &[u8], aggregator: &ParticipantId, report: &mut FloodReport) -> Answer {
    let limits = Limits::default();
    let opened = SignedEnvelope::from_bytes(bytes, &limits).and_then(|e| e.open(aggregator, &limits));
    match opened {
        Ok(Message::JoinReply(r)) if r.outcome.is_ok() => {
            report.joined = true;
            Answer::Served
        }
        Ok(Message::RefSetChunk(_)) => Answer::Served,
        _ => Answer::Refused,
    }
}

/// The member's receipt for a request of the aggregator: declines rounds, acknowledges the rest.
fn receipt(cfg: &FloodConfig, aggregator: &ParticipantId, request: &[u8], report: &mut FloodReport) -> (Vec<u8>, bool) {
    let limits = Limits::default();
    let message = SignedEnvelope::from_bytes(request, &limits).and_then(|e| e.open(aggregator, &limits));
    let (round, status, finished) = match &message {
        Ok(Message::RoundAnnouncement(a)) => {
            report.announcements_declined += 1;
            (a.round, ReceiptStatus::Refused(RefusalReason::Policy), false)
        }
        Ok(Message::Consensus(c)) => {
            report.consensus_acknowledged += 1;
            (c.round, ReceiptStatus::Accepted, false)
        }
        Ok(Message::Finished(_)) => {
            report.finished = true;
            (0, ReceiptStatus::Accepted, true)
        }
        _ => (0, ReceiptStatus::Refused(RefusalReason::Unavailable), false),
    };
    let receipt =
        Message::Receipt(Receipt { federation: cfg.federation.clone(), round, status, detail: "fd-flood".into() });
    let bytes = SignedEnvelope::seal(&receipt, &cfg.member).and_then(|e| e.to_bytes()).unwrap_or_default();
    (bytes, finished)
}

/// The requests in flight, and which of them is the join.
#[derive(Default)]
struct InFlight {
    kinds: HashMap<OutboundRequestId, &'static str>,
    /// The first Hello, answered before the flood starts so that the member has joined.
    join: Option<OutboundRequestId>,
    flooding: bool,
}

impl InFlight {
    /// The kind of a request that has just been answered or has failed.
    fn settle(&mut self, id: OutboundRequestId) -> Option<&'static str> {
        if self.join == Some(id) {
            self.join = None;
            self.flooding = true;
            return Some("hello");
        }
        self.kinds.remove(&id)
    }
}

/// Joins, floods until `stop` fires or the federation is finished, and reports. `up` tells
/// whether its connection is up and has joined.
// Over 80 lines, kept whole: one `select!` over the member's swarm whose arms share the loop's
// state (what is in flight, connected, finishing); split, each step would take all of it.
pub(crate) async fn run(
    cfg: &FloodConfig,
    aggregator: PeerId,
    up: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Result<FloodReport, Error> {
    let agg = net::participant(&aggregator).ok_or_else(|| Error::Address(cfg.aggregator.to_string()))?;
    let mut swarm = build(cfg)?;
    let mut frames = Frames::new(cfg)?;
    let mut report = FloodReport::default();
    let mut flight = InFlight::default();
    let mut connected = false;
    let mut finishing: Option<tokio::time::Instant> = None;
    let mut next = 0usize;
    let mut redial = tokio::time::interval(Duration::from_millis(500));
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    loop {
        up.store(connected && flight.flooding, Ordering::Relaxed);
        if connected && flight.flooding && finishing.is_none() {
            while flight.kinds.len() < cfg.in_flight {
                let kind = KINDS[next % KINDS.len()];
                next += 1;
                let id = swarm.behaviour_mut().send_request(&aggregator, frames.frame(kind)?);
                report.requests.entry(kind.into()).or_default().sent += 1;
                flight.kinds.insert(id, kind);
            }
        }
        let finish_by = finishing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(finish_by), if finishing.is_some() => break,
            _ = redial.tick(), if !connected => {
                let _ = swarm.dial(cfg.aggregator.clone());
            }
            _ = progress.tick(), if cfg.progress.is_some() => {
                if let Some(path) = &cfg.progress {
                    write_progress(path, &report).await;
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == aggregator => {
                    connected = true;
                    if flight.join.is_none() && !flight.flooding {
                        flight.join = Some(swarm.behaviour_mut().send_request(&aggregator, frames.frame("hello")?));
                        report.requests.entry("hello".into()).or_default().sent += 1;
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } if peer_id == aggregator => {
                    connected = false;
                    report.member_disconnects += 1;
                    // Join again before flooding again.
                    flight.flooding = false;
                    flight.join = None;
                }
                SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => match message {
                    request_response::Message::Response { request_id, response } => {
                        if let Some(kind) = flight.settle(request_id) {
                            let served = matches!(classify(&response, &agg, &mut report), Answer::Served);
                            let o = report.requests.entry(kind.into()).or_default();
                            if served { o.served += 1 } else { o.refused += 1 }
                        }
                    }
                    request_response::Message::Request { request, channel, .. } => {
                        let (bytes, finished) = receipt(cfg, &agg, &request.bytes, &mut report);
                        let _ = swarm.behaviour_mut().send_response(channel, bytes);
                        if finished {
                            // Let the receipt go out (at most 2 s), then stop.
                            finishing = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                        }
                    }
                },
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, .. }) => {
                    if let Some(kind) = flight.settle(request_id) {
                        report.requests.entry(kind.into()).or_default().dropped += 1;
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::ResponseSent { .. }) if finishing.is_some() => break,
                _ => {}
            },
        }
    }
    stop.cancel();
    Ok(report)
}

/// Writes `report` to `path` through a temporary file, so that a reader never sees half of it.
async fn write_progress(path: &std::path::Path, report: &FloodReport) {
    let tmp = path.with_extension("tmp");
    let Ok(json) = serde_json::to_vec(report) else { return };
    if tokio::fs::write(&tmp, json).await.is_ok() {
        let _ = tokio::fs::rename(&tmp, path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{FederationId, Identity, ReferenceSetId};

    /// Each frame is what its kind says: the aggregator's codec and verification see a Hello, a
    /// submission's header under a huge claim, noise behind a valid signature, a forged signer.
    #[test]
    fn the_frames_are_what_they_claim_to_be() {
        let cfg = FloodConfig {
            aggregator: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            member: Identity::generate().unwrap(),
            stranger: Identity::generate().unwrap(),
            federation: FederationId::new("f").unwrap(),
            reference: ReferenceSetId([1; 32]),
            in_flight: 1,
            dials: 1,
            half_open: 0,
            half_open_from: None,
            max_duration: Duration::from_secs(1),
            progress: None,
        };
        let mut frames = Frames::new(&cfg).unwrap();
        let limits = Limits::default();
        let member = cfg.member.id();
        let open = |f: &Frame| SignedEnvelope::from_bytes(&f.bytes, &limits).and_then(|e| e.open(&member, &limits));
        assert!(matches!(open(&frames.frame("hello").unwrap()), Ok(Message::Hello(_))));
        assert!(matches!(open(&frames.frame("chunk").unwrap()), Ok(Message::RefSetRequest(_))));
        assert!(open(&frames.frame("forged").unwrap()).is_err(), "signed by another key");
        let malformed = frames.frame("malformed").unwrap();
        assert!(
            SignedEnvelope::from_bytes(&malformed.bytes, &limits).is_ok() && open(&malformed).is_err(),
            "a valid envelope around noise"
        );
        assert!(open(&frames.frame("garbage").unwrap()).is_err());
        let over = frames.frame("oversized").unwrap();
        assert_eq!(protocol::codec::peek_kind(&over.bytes), Some(MessageKind::Submission));
        assert!(over.claimed.unwrap() as usize > limits.max_frame() && over.bytes.len() < 8192);
        let big = frames.frame("oversized_hello").unwrap();
        assert_eq!(protocol::codec::peek_kind(&big.bytes), Some(MessageKind::Hello));
        assert!(big.bytes.len() > limits.frame_cap(Some(MessageKind::Hello)) && big.claimed.is_none());
    }
}
