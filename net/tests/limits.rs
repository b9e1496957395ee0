//! The network layer's limits, on 127.0.0.1 between real peers: one connection per peer, a
//! handful of streams per connection, each message kind capped at its own size, per-peer rate
//! limits, and an identify that gives away neither listen addresses nor a version.
//!
//! `target` runs the defaults under test; `flooder` is built with room to misbehave (more
//! streams and connections of its own), so that what is refused is refused by `target`.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, SwarmBuilder, identify, noise, tcp, yamux};
use net::{Event, NetConfig, RateLimit, Responder};
use protocol::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn fed() -> FederationId {
    FederationId::new("limits").unwrap()
}

fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32]).unwrap()
}

/// `target` (seed 1) listening on loopback and allowing `allowed`; its address with /p2p/.
async fn target(
    cfg: impl FnOnce(&mut NetConfig),
    allowed: Vec<ParticipantId>,
    shutdown: &CancellationToken,
) -> (net::Client, mpsc::Receiver<Event>, Multiaddr) {
    let mut net_cfg = NetConfig::new(fed(), allowed);
    cfg(&mut net_cfg);
    let (client, events, _handle) = net::spawn(identity(1), net_cfg, shutdown).unwrap();
    let addr = client.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).await.unwrap();
    let addr = addr.with(libp2p::multiaddr::Protocol::P2p(net::peer_id(&identity(1).id())));
    (client, events, addr)
}

/// A peer (seed 2) with room for 64 streams and 4 connections of its own, connected to `addr`.
/// Its events are returned to be kept: the network stops when they are dropped.
async fn flooder(addr: Multiaddr, shutdown: &CancellationToken) -> (net::Client, mpsc::Receiver<Event>) {
    let mut cfg = NetConfig::new(fed(), vec![identity(1).id()]);
    cfg.max_streams_per_connection = 64;
    cfg.max_connections_per_peer = 4;
    let (client, events, _handle) = net::spawn(identity(2), cfg, shutdown).unwrap();
    client.dial(addr).await.unwrap();
    (client, events)
}

async fn next_request(events: &mut mpsc::Receiver<Event>) -> (Message, Responder) {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.expect("a request in time").expect("the target runs") {
            Event::Request { message, responder, .. } => return (message, responder),
            _ => continue,
        }
    }
}

fn receipt(round: u64, status: ReceiptStatus) -> Message {
    Message::Receipt(Receipt { federation: fed(), round, status, detail: String::new() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_handful_are_dropped_and_the_rest_served() {
    let shutdown = CancellationToken::new();
    let (_target, mut events, addr) = target(|_| {}, vec![identity(2).id()], &shutdown).await;
    let (flooder, _flooder_events) = flooder(addr, &shutdown).await;
    let default_streams = NetConfig::new(fed(), vec![]).max_streams_per_connection;
    // Three more requests than the target takes on one connection, all at once. The target's
    // owner holds every request it gets, so its streams stay open.
    let sent = default_streams + 3;
    let mut requests = tokio::task::JoinSet::new();
    for round in 0..sent as u64 {
        let c = flooder.clone();
        requests.spawn(async move { c.request(&identity(1).id(), &receipt(round, ReceiptStatus::Accepted)).await });
    }
    let mut failed = 0;
    while failed < 3 {
        let r = tokio::time::timeout(WAIT, requests.join_next())
            .await
            .expect("dropped streams fail at once")
            .unwrap()
            .unwrap();
        assert!(r.is_err(), "a request was answered while the target held every one: {r:?}");
        failed += 1;
    }
    let mut held = Vec::new();
    for _ in 0..default_streams {
        held.push(next_request(&mut events).await.1);
    }
    for responder in held {
        responder.respond(receipt(0, ReceiptStatus::Accepted)).await.unwrap();
    }
    let mut answered = 0;
    while let Some(r) = tokio::time::timeout(WAIT, requests.join_next()).await.unwrap() {
        assert!(r.unwrap().is_ok());
        answered += 1;
    }
    assert_eq!(answered, default_streams, "every stream the target took was served");
    shutdown.cancel();
}

/// A peer that keeps every stream of its connection busy with its own requests can still be
/// asked something: the target's request waits for a free stream (retrying) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_peer_that_fills_every_stream_waits_for_one_to_free() {
    let shutdown = CancellationToken::new();
    let (target, mut events, addr) = target(|_| {}, vec![identity(2).id()], &shutdown).await;
    let (flooder, mut flooder_events) = flooder(addr, &shutdown).await;
    let streams = NetConfig::new(fed(), vec![]).max_streams_per_connection;
    // The flooder fills the target's streams, and the target's owner holds every request.
    let mut requests = tokio::task::JoinSet::new();
    for round in 0..streams as u64 {
        let c = flooder.clone();
        requests.spawn(async move { c.request(&identity(1).id(), &receipt(round, ReceiptStatus::Accepted)).await });
    }
    let mut held = Vec::new();
    for _ in 0..streams {
        held.push(next_request(&mut events).await.1);
    }
    // Now the target asks the flooder something: no stream is free for it.
    let asking = {
        let target = target.clone();
        tokio::spawn(async move { target.request(&identity(2).id(), &receipt(99, ReceiptStatus::Accepted)).await })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..2000 {
        if target.stream_retries() > 0 {
            break;
        }
        assert!(!asking.is_finished(), "the request ended while every stream was busy: {:?}", asking.await);
        tick.tick().await;
    }
    assert!(target.stream_retries() > 0, "the request was never retried");
    // Once the target answers the flooder, a stream frees and the request goes through.
    for responder in held {
        responder.respond(receipt(0, ReceiptStatus::Accepted)).await.unwrap();
    }
    let (message, responder) = next_request(&mut flooder_events).await;
    assert_eq!(message, receipt(99, ReceiptStatus::Accepted));
    responder.respond(receipt(99, ReceiptStatus::Accepted)).await.unwrap();
    let answer = tokio::time::timeout(WAIT, asking).await.expect("answered in time").unwrap();
    assert_eq!(answer.unwrap(), receipt(99, ReceiptStatus::Accepted));
    while let Some(r) = requests.join_next().await {
        assert!(r.unwrap().is_ok());
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_kinds_are_capped_small_and_hellos_are_rate_limited() {
    let shutdown = CancellationToken::new();
    let limit = |c: &mut NetConfig| c.rate_limits = vec![(MessageKind::Hello, RateLimit { burst: 2, per_second: 0.0 })];
    let (_target, mut events, addr) = target(limit, vec![identity(2).id()], &shutdown).await;
    let (flooder, _flooder_events) = flooder(addr, &shutdown).await;
    let to = identity(1).id();
    let hello = |agent: String| {
        Message::Hello(Hello {
            federation: fed(),
            participant: identity(2).id(),
            protocol_version: PROTOCOL_VERSION,
            agent,
        })
    };
    // A hello of 2 KiB is over its kind's cap (about 1 KiB): the stream is closed unanswered.
    assert!(flooder.request(&to, &hello("x".repeat(2048))).await.is_err());
    // A receipt just as large is refused too; a submission of that size is read and answered.
    let labels = SoftLabels::encode(&vec![0.5; 2 * 256], 256, 2, Encoding::F32).unwrap();
    let sub = Message::Submission(Submission {
        federation: fed(),
        round: 1,
        announcement: AnnouncementDigest([0; 32]),
        reference_set: ReferenceSetId([0; 32]),
        temperature: 1.0,
        local_samples: Some(1),
        labels,
        abstained: None,
    });
    let asked = tokio::spawn({
        let f = flooder.clone();
        async move { f.request(&to, &sub).await }
    });
    let (got, responder) = next_request(&mut events).await;
    assert_eq!(got.kind(), MessageKind::Submission);
    responder.respond(receipt(1, ReceiptStatus::Accepted)).await.unwrap();
    assert!(asked.await.unwrap().is_ok());
    // Two hellos reach the owner; the third is refused by the rate limit, before verification.
    for _ in 0..2 {
        let asked = tokio::spawn({
            let f = flooder.clone();
            let h = hello("ok".into());
            async move { f.request(&to, &h).await }
        });
        let (got, responder) = next_request(&mut events).await;
        assert_eq!(got.kind(), MessageKind::Hello);
        responder.respond(receipt(0, ReceiptStatus::Accepted)).await.unwrap();
        asked.await.unwrap().unwrap();
    }
    match flooder.request(&to, &hello("ok".into())).await.unwrap() {
        Message::Receipt(Receipt { status: ReceiptStatus::Refused(RefusalReason::Unavailable), detail, .. }) => {
            assert!(detail.contains("rate"), "{detail}")
        }
        other => panic!("expected a rate-limit refusal, got {other:?}"),
    }
    shutdown.cancel();
}

#[derive(NetworkBehaviour)]
struct Probe {
    identify: identify::Behaviour,
}

/// A plain libp2p peer dials the target twice: the second connection is closed, the first kept;
/// identify tells it no listen address and a name without a version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_peer_and_identify_gives_nothing_away() {
    let shutdown = CancellationToken::new();
    let mut seed = [3u8; 32];
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).unwrap();
    let (_target, _events, addr) = target(|_| {}, vec![identity(3).id()], &shutdown).await;
    let mut probe = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k| Probe {
            identify: identify::Behaviour::new(identify::Config::new("/probe/1".into(), k.public())),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    probe.dial(addr.clone()).unwrap();
    let (mut info, mut closed, mut established) = (None, 0, 0);
    tokio::time::timeout(WAIT, async {
        while info.is_none() || closed == 0 {
            match probe.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    established += 1;
                    if established == 1 {
                        probe.dial(addr.clone()).unwrap();
                    }
                }
                SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => closed += 1,
                SwarmEvent::Behaviour(ProbeEvent::Identify(identify::Event::Received { info: i, .. })) => {
                    info = Some(i)
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the probe is identified and its second connection closed");
    assert_eq!(closed, 1);
    assert_eq!(probe.network_info().connection_counters().num_established(), 1, "the first connection stays");
    let info = info.unwrap();
    assert!(info.listen_addrs.is_empty(), "listen addresses given away: {:?}", info.listen_addrs);
    assert_eq!(info.agent_version, "fedistil");
    shutdown.cancel();
}

/// Counts the events at WARN or above, whatever they say.
struct CountWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// 300 quick connections from 150 loopback addresses, two each, against a target that takes 4
/// handshakes at once, 3 of them from strangers (a quarter is kept for addresses roster members
/// came from): every refusal is counted (the client's count and `fd_refused_connections`), and
/// the log gets a bounded number of lines, not one per address (150) or per port (297).
/// One thread: the subscriber set here sees the event loop's lines.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_flood_is_counted_and_logs_a_bounded_number_of_lines() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Arc::new(AtomicUsize::new(0));
    let _log = tracing::subscriber::set_default(tracing_subscriber::registry().with(CountWarnings(warnings.clone())));
    let shutdown = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let traffic = net::metrics::Traffic::register(&mut registry, Default::default());
    let (target, _events, addr) = target(
        |c| {
            c.max_pending_incoming = 4;
            c.traffic = Some(traffic);
        },
        vec![],
        &shutdown,
    )
    .await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let mut refused = target.refused_connections();
    let mut held = Vec::new();
    for i in 0..300u16 {
        let from = std::net::Ipv4Addr::new(127, 0, 1 + (i / 2 / 100) as u8, (i / 2 % 100) as u8 + 1);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        held.push(socket.connect((std::net::Ipv4Addr::LOCALHOST, port).into()).await.unwrap());
    }
    // Three silent connections hold the strangers' handshake slots: the other 297 are refused.
    tokio::time::timeout(WAIT, refused.wait_for(|n| *n >= 297)).await.expect("every refusal counted").unwrap();
    let lines = warnings.load(Ordering::Relaxed);
    assert!((1..=20).contains(&lines), "{lines} lines logged for 297 refusals");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("fd_refused_connections_total 297"), "{text}");
    drop(held);
    shutdown.cancel();
}
