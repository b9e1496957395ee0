//! Hole punching (DCUtR) against a member that lies about its addresses, in network namespaces the
//! test makes (issue #26 item 2). A relay (host 0), an aggregator with `connections.hole_punching`
//! on that listens only through the relay (host 1), and a roster member (host 2, a libp2p swarm
//! in this test with libp2p's own DCUtR) that claims, as the addresses to punch a hole to, the
//! loopback address and its private LAN address. The relay and the aggregator also have a global
//! address (11.77.0.0/24), so that the aggregator has an address the relay saw to offer and the
//! exchange of addresses takes place. The aggregator dials neither claimed address (a listener
//! waits at each: on the aggregator's own loopback, and at the member's LAN address) and says
//! that the connection stays relayed.
//!
//! Long tier (root, `ip netns`): `cargo test --workspace --release --test hole_punching -- --ignored`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[allow(dead_code)] // this test uses part of the LAN helpers
#[path = "netns/lan.rs"]
mod lan;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Procs, scenario, wait_for_addrs};
use lan::{Lan, ip};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, dcutr, noise, ping, relay, tcp, yamux};
use scenarios::setup;
use tokio_util::sync::CancellationToken;

/// The claimed ports: on loopback (the aggregator's own, if it dialled it) and on the member's
/// LAN address.
const LOOPBACK_PORT: u16 = 4101;
const LAN_PORT: u16 = 4102;
const RELAY_PORT: u16 = 4002;
const WAIT: Duration = Duration::from_secs(60);

/// Makes this peer's address candidates the given ones, as identify would from what others say.
struct Claim(VecDeque<Multiaddr>);

impl NetworkBehaviour for Claim {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.0.pop_front() {
            Some(addr) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr)),
            None => Poll::Pending,
        }
    }
}

#[derive(NetworkBehaviour)]
struct Liar {
    claim: Claim,
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    ping: ping::Behaviour,
}

/// Runs `f` on a thread inside network namespace `netns`: every socket it makes is made there.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A listener in `netns` at `at` that sets `dialled` when anything connects, until `stop`: it
/// waits on the accept itself or the cancellation, whichever comes first.
fn watch(netns: &str, at: SocketAddr, dialled: Arc<AtomicBool>, stop: CancellationToken) -> JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = in_netns(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(at).await.unwrap();
            ready_tx.send(()).unwrap();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => if accepted.is_ok() {
                        dialled.store(true, Ordering::SeqCst);
                    },
                }
            }
        });
    });
    ready_rx.recv_timeout(WAIT).unwrap();
    thread
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
#[ignore = "long tier (network namespaces, root): cargo test --workspace --release -- --ignored"]
fn a_member_claiming_loopback_and_private_addresses_is_not_dialled_there() {
    let lan = Lan::or_fail("punch", 3);
    let (relay_ns, agg_ns, member_ns) = (lan.hosts[0].clone(), lan.hosts[1].clone(), lan.hosts[2].clone());
    for (i, host) in lan.hosts.iter().enumerate() {
        ip(&["-n", host, "addr", "add", &format!("11.77.0.{}/24", i + 1), "dev", "eth0"]).unwrap();
    }

    let mut p = common::prepare(&scenario("punch", 3, 1), "punch");
    let dir = p.dir.clone();
    let member_key = dir.keys().join("liar.key");
    let member = net::keys::generate(&member_key).unwrap();
    p.aggregator.roster.push(aggregator::config::RosterEntry {
        name: "liar".into(),
        peer_id: member.id(),
        samples: None,
    });

    // The relay, on its global address.
    let relay_key = dir.keys().join("relay.key");
    net::keys::generate(&relay_key).unwrap();
    let addr_file = dir.root().join("relay.addrs");
    let aggregator_id = net::keys::read(&p.aggregator.key).unwrap().id();
    let args: Vec<String> = vec![
        "relay".into(),
        "--key".into(),
        relay_key.display().to_string(),
        "--addr-file".into(),
        addr_file.display().to_string(),
        "--listen".into(),
        format!("/ip4/11.77.0.1/tcp/{RELAY_PORT}"),
        "--aggregator".into(),
        net::keys::peer_id_string(&aggregator_id),
        "--allow".into(),
        net::keys::peer_id_string(&member.id()),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let relay_log = dir.root().join("relay.log");
    let mut procs = Procs(vec![common::launch(common::command("fd-aggregator", Some(&relay_ns)), &args, &relay_log)]);
    let relay_addr = wait_for_addrs(&mut procs.0[0], &addr_file, &relay_log)[0].clone();

    // The aggregator, with hole punching on, reachable only through the relay.
    p.aggregator.listen = vec![relay_addr.clone().with(Protocol::P2pCircuit)];
    p.aggregator.connections.hole_punching = true;
    setup::write_toml(&dir.federation(), &p.aggregator).unwrap();
    let agg_addrs = dir.aggregator_addrs();
    procs.0.push(common::spawn_aggregator_in(&p, Some(&agg_ns), &agg_addrs));
    wait_for_addrs(&mut procs.0[1], &agg_addrs, &dir.aggregator_log());

    // Where the member's lies lead: the aggregator's own loopback, and the member's LAN address.
    let stop = CancellationToken::new();
    let (loopback, lan_addr) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let loopback_at = SocketAddr::from(([127, 0, 0, 1], LOOPBACK_PORT));
    let lan_at = SocketAddr::from(([10, 77, 0, 3], LAN_PORT));
    let watchers = [
        watch(&agg_ns, loopback_at, loopback.clone(), stop.clone()),
        watch(&member_ns, lan_at, lan_addr.clone(), stop.clone()),
    ];

    // The member: claims both, and reaches the aggregator through the relay (its own DCUtR then
    // dials the address the relay saw the aggregator at, which the aggregator offered, and fails:
    // nothing listens there).
    let claims: VecDeque<Multiaddr> = [
        format!("/ip4/127.0.0.1/tcp/{LOOPBACK_PORT}"),
        format!("/ip4/10.77.0.3/tcp/{LAN_PORT}"),
        format!("/ip6/::1/tcp/{LOOPBACK_PORT}"),
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let mut seed = *member.seed();
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).unwrap();
    let aggregator = net::peer_id(&aggregator_id);
    let through = relay_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(aggregator));
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    let liar = in_netns(&member_ns, {
        let stop = stop.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut swarm = SwarmBuilder::with_existing_identity(key)
                    .with_tokio()
                    .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
                    .unwrap()
                    .with_relay_client(noise::Config::new, yamux::Config::default)
                    .unwrap()
                    .with_behaviour(|k, relay| Liar {
                        claim: Claim(claims),
                        relay,
                        dcutr: dcutr::Behaviour::new(k.public().to_peer_id()),
                        ping: ping::Behaviour::new(ping::Config::new()),
                    })
                    .unwrap()
                    .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
                    .build();
                swarm.dial(through).unwrap();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        ev = swarm.select_next_some() => match ev {
                            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. }
                                if peer_id == aggregator && endpoint.is_relayed() => {
                                let _ = connected_tx.send(());
                            }
                            _ => {}
                        },
                    }
                }
            })
        }
    });
    connected_rx.recv_timeout(WAIT).expect("the member reached the aggregator through the relay");

    // The aggregator took the member's addresses and dialled none of them.
    const STAYS_RELAYED: &str = "hole punching: no global address to dial";
    let start = Instant::now();
    while !read(&dir.aggregator_log()).contains(STAYS_RELAYED)
        && !loopback.load(Ordering::SeqCst)
        && !lan_addr.load(Ordering::SeqCst)
    {
        assert!(
            start.elapsed() < WAIT,
            "the aggregator never exchanged addresses with the member:\n{}",
            read(&dir.aggregator_log())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dialled = (loopback.load(Ordering::SeqCst), lan_addr.load(Ordering::SeqCst));
    stop.cancel();
    liar.join().unwrap();
    for w in watchers {
        w.join().unwrap();
    }
    assert_eq!(dialled, (false, false), "the aggregator dialled (loopback, LAN address) as the member claimed");
    eprintln!("hole punching: the member's loopback and LAN addresses were not dialled; the connection stayed relayed");
}
