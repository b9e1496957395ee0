//! `fd-aggregator relay` under load, as real processes on 127.0.0.1 (issue #26 item 1): an
//! aggregator with no open port listens through the relay, 30 `fd-node`s reach it through the
//! relay and complete every round, while a roster member (`greedy`, a libp2p swarm in this test)
//! opens eight circuits to the aggregator at once: the relay lets it hold two, its share, and
//! refuses the rest (`RESOURCE_LIMIT_EXCEEDED`), and the honest nodes keep theirs.
//!
//! With libp2p's default relay limits (16 circuits in all, 5 a source) both halves fail: the
//! relay refuses the honest nodes beyond the 16th, and lets the member hold five circuits.
//!
//! Long tier: `cargo test --workspace --release --test relay -- --ignored`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use common::{Procs, metrics, node_toml, scenario, spawn_run, submitted, wait_exit, wait_for_addrs, wait_until};
use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, ping, relay, tcp, yamux};
use scenarios::layout::node_name;
use scenarios::setup;
use tokio_util::sync::CancellationToken;

const NODES: usize = 30;
const ROUNDS: u64 = 2;
/// Circuits the greedy member asks for at once.
const GREEDY_CIRCUITS: usize = 8;
/// Its share: what the relay lets one source hold.
const SHARE: usize = 2;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[derive(NetworkBehaviour)]
struct Greedy {
    relay: relay::client::Behaviour,
    ping: ping::Behaviour,
}

/// What became of the greedy member's circuits.
#[derive(Debug, Default)]
struct Circuits {
    /// Connections to the aggregator through the relay that were established.
    established: usize,
    /// Refused by the relay: over the source's share.
    refused_by_relay: usize,
    /// Failed otherwise (with the errors).
    failed: Vec<String>,
}

/// The greedy member: connects to the relay, then asks for `GREEDY_CIRCUITS` circuits to the
/// aggregator at once. Sends what became of them once each has an outcome, then keeps the
/// connections it got (pinged, so kept alive) and sends the number still open when `stop` fires.
fn greedy(
    key: libp2p::identity::Keypair,
    relay_addr: Multiaddr,
    aggregator: PeerId,
    outcome: std_mpsc::Sender<Circuits>,
    held: std_mpsc::Sender<usize>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut swarm = SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
                .unwrap()
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .unwrap()
                .with_behaviour(|_, relay| Greedy { relay, ping: ping::Behaviour::new(ping::Config::new()) })
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
                .build();
            let relay_peer =
                relay_addr.iter().find_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None }).unwrap();
            swarm.dial(relay_addr.clone()).unwrap();
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await
                    && peer_id == relay_peer
                {
                    break;
                }
            }
            let circuit = relay_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(aggregator));
            let mut waiting = HashSet::new();
            for _ in 0..GREEDY_CIRCUITS {
                let opts = DialOpts::peer_id(aggregator)
                    .addresses(vec![circuit.clone()])
                    .condition(PeerCondition::Always)
                    .build();
                waiting.insert(opts.connection_id());
                swarm.dial(opts).unwrap();
            }
            let mut circuits = Circuits::default();
            let mut open: HashSet<ConnectionId> = HashSet::new();
            let mut reported = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } if peer_id == aggregator => {
                            open.insert(connection_id);
                            if waiting.remove(&connection_id) {
                                circuits.established += 1;
                            }
                        }
                        SwarmEvent::ConnectionClosed { connection_id, .. } => {
                            open.remove(&connection_id);
                        }
                        SwarmEvent::OutgoingConnectionError { connection_id, error, .. } if waiting.remove(&connection_id) => {
                            let error = format!("{error:?}");
                            if error.contains("ResourceLimitExceeded") {
                                circuits.refused_by_relay += 1;
                            } else {
                                circuits.failed.push(error);
                            }
                        }
                        _ => {}
                    },
                }
                if waiting.is_empty() && !reported {
                    reported = true;
                    outcome.send(std::mem::take(&mut circuits)).unwrap();
                }
            }
            held.send(open.len()).unwrap();
        });
    })
}

#[test]
#[ignore = "long tier (30 node processes through a relay): cargo test --workspace --release -- --ignored"]
fn thirty_relayed_nodes_complete_their_rounds_while_a_member_is_held_to_its_share_of_circuits() {
    let s = scenario("relay30", NODES, ROUNDS);
    let mut p = common::prepare(&s, "relay");
    let dir = p.dir.clone();
    // Every honest node makes every round; the greedy member, which answers nothing, holds
    // each round to its deadline.
    p.aggregator.round.quorum = Some(NODES);
    p.aggregator.round.deadline_secs = 4.0;
    let greedy_key = dir.keys().join("greedy.key");
    let greedy_id = net::keys::generate(&greedy_key).unwrap();
    p.aggregator.roster.push(aggregator::config::RosterEntry {
        name: "greedy".into(),
        peer_id: greedy_id.id(),
        samples: None,
    });

    // The relay, for the aggregator and the roster.
    let relay_key = dir.keys().join("relay.key");
    net::keys::generate(&relay_key).unwrap();
    let addr_file = dir.root().join("relay.addrs");
    let aggregator_id = net::keys::read(&p.aggregator.key).unwrap().id();
    let mut args: Vec<String> = vec!["relay".into(), "--key".into(), relay_key.display().to_string()];
    args.extend(["--addr-file".into(), addr_file.display().to_string()]);
    args.extend(["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    args.extend(["--aggregator".into(), net::keys::peer_id_string(&aggregator_id)]);
    for e in &p.aggregator.roster {
        args.extend(["--allow".into(), net::keys::peer_id_string(&e.peer_id)]);
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let relay_log = dir.root().join("relay.log");
    let mut procs = Procs(vec![common::launch(common::command("fd-aggregator", None), &args, &relay_log)]);
    let relay_addr = wait_for_addrs(&mut procs.0[0], &addr_file, &relay_log)[0].clone();

    // The aggregator has no address of its own: it listens through the relay only.
    p.aggregator.listen = vec![relay_addr.clone().with(Protocol::P2pCircuit)];
    setup::write_toml(&dir.federation(), &p.aggregator).unwrap();
    let agg_addrs = dir.aggregator_addrs();
    procs.0.push(common::spawn_aggregator_in(&p, None, &agg_addrs));
    wait_for_addrs(&mut procs.0[1], &agg_addrs, &dir.aggregator_log());
    let aggregator_peer = net::peer_id(&aggregator_id);

    // The greedy member asks for more circuits than its share, before the nodes start.
    let (outcome_tx, outcome_rx) = std_mpsc::channel();
    let (held_tx, held_rx) = std_mpsc::channel();
    let stop = CancellationToken::new();
    let mut seed = *greedy_id.seed();
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).unwrap();
    let greedy = greedy(key, relay_addr.clone(), aggregator_peer, outcome_tx, held_tx, stop.clone());
    let circuits = outcome_rx.recv_timeout(Duration::from_secs(60)).expect("the greedy member's circuits settled");
    assert!(circuits.failed.is_empty(), "circuits failed otherwise: {:?}", circuits.failed);
    assert_eq!(
        (circuits.established, circuits.refused_by_relay),
        (SHARE, GREEDY_CIRCUITS - SHARE),
        "the relay lets one source hold {SHARE} circuits and refuses the rest"
    );

    // The honest nodes, through the relay.
    let through = relay_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(aggregator_peer));
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.aggregator = through.clone();
        setup::write_toml(&node_toml(&dir, i), n).unwrap();
        procs.0.push(spawn_run("fd-node", None, &node_toml(&dir, i), &dir.node_log(i)));
    }
    let mut status = None;
    wait_until("the aggregator to exit", Duration::from_secs(900), || {
        for (i, node) in procs.0[2..].iter_mut().enumerate() {
            if let Some(s) = node.try_wait().unwrap().filter(|s| !s.success()) {
                panic!("node {i} {s}:\n{}", read(&dir.node_log(i)));
            }
        }
        status = procs.0[1].try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "aggregator {status}:\n{}", read(&dir.aggregator_log()));
    for (i, n) in p.nodes.iter().enumerate() {
        let status = wait_exit(&mut procs.0[i + 2], Duration::from_secs(60));
        assert!(status.success(), "node {i} {status}:\n{}", read(&dir.node_log(i)));
        assert_eq!(submitted(&n.state_dir), (1..=ROUNDS).collect::<Vec<_>>(), "node {i}");
    }
    let m = metrics(&p);
    assert_eq!(m.len() as u64, ROUNDS, "rounds completed");
    let honest: HashSet<String> = (0..NODES).map(node_name).collect();
    for r in &m {
        assert_eq!(r.participants.iter().cloned().collect::<HashSet<_>>(), honest, "round {}", r.round);
    }
    // The member kept its share to the end, and no more.
    stop.cancel();
    let held = held_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    greedy.join().unwrap();
    assert!(held <= SHARE, "the greedy member held {held} connections through the relay");
    eprintln!(
        "relay: {NODES} relayed nodes completed {ROUNDS} rounds; the greedy member's {GREEDY_CIRCUITS} circuits: {} held, {} refused by the relay",
        circuits.established, circuits.refused_by_relay
    );
}
