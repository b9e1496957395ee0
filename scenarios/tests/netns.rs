//! The aggregator and 3 nodes as real processes, each in its own Linux network namespace: a LAN
//! made by the test (a "switch" namespace holding a bridge, one veth pair per host, addresses in
//! 10.77.0.0/24, the aggregator on fixed ports), checked against the same federation on
//! 127.0.0.1; the same LAN with 100 ms of delay each way and 1 % loss on every link; and two nodes each
//! behind its own masquerading NAT (a router namespace with nftables; no route from the LAN to
//! the private side), which join because a node only ever dials out to the aggregator, and
//! learn from AutoNAT that they cannot be reached (while a node on the LAN learns that it can);
//! and an aggregator behind a NAT reached through a circuit relay, against the same federation
//! direct, which gives the relay's overhead per round in bytes and milliseconds.
//!
//! These tests are the long tier (`cargo test --workspace --release -- --ignored`, which
//! `.ci/run` runs as root): they need root, `ip netns` and `nft`, and where one is missing a test
//! fails, naming it; none passes by skipping. Delay and loss come from `tc netem`; on a kernel
//! without `sch_netem` the impaired test emulates them, nftables dropping 1 % of each host's
//! packets and a userspace delay relay (`netns/link.rs`) between the nodes and the aggregator.
//! Every namespace a test makes, and with it every veth, bridge and NAT, is removed when the test
//! ends, also when it fails.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[path = "netns/lan.rs"]
mod lan;
#[path = "netns/link.rs"]
mod link;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{
    PreparedDir, Procs, metrics, node_toml, scenario, spawn_run, submitted, wait_exit, wait_for_addrs, wait_until,
};
use lan::{LOSS_RULES, Lan, SUBNET, ip, nft, unavailable};
use net::multiaddr::{Multiaddr, Protocol};
use scenarios::Scenario;
use scenarios::layout::node_name;
use scenarios::setup::{self, Prepared};

/// The aggregator's fixed port (TCP and QUIC) on the LAN.
const PORT: u16 = 4001;
const ROUNDS: u64 = 3;
/// Where the delay relay listens when the kernel has no netem (host 4 of the impaired LAN).
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);

/// How the nodes reach the aggregator.
enum Dial {
    /// At an address it reported: node 0 over QUIC, the others over TCP.
    Direct,
    /// At the same port of another host (the delay relay).
    Via(Ipv4Addr),
    /// Through a circuit relay at these addresses (each ending in `/p2p/<relay>`).
    Circuit(Vec<Multiaddr>),
}

impl Dial {
    /// Node `i`'s address of the aggregator, which reported `addrs`.
    fn address(&self, addrs: &[Multiaddr], i: usize) -> Multiaddr {
        let quic = |a: &&Multiaddr| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == (i == 0);
        let aggregator = addrs.iter().find(quic).unwrap();
        match self {
            Dial::Direct => aggregator.clone(),
            Dial::Via(host) => {
                aggregator.iter().map(|p| if let Protocol::Ip4(_) = p { Protocol::Ip4(*host) } else { p }).collect()
            }
            Dial::Circuit(relay) => {
                let id = aggregator.iter().last().unwrap();
                relay.iter().find(quic).unwrap().clone().with(Protocol::P2pCircuit).with(id)
            }
        }
    }
}

/// Prepares the scenario's files in a fresh folder (removed when the result is dropped), with
/// the aggregator listening on `listen`.
fn prepare(s: &Scenario, kind: &str, listen: Vec<Multiaddr>) -> PreparedDir {
    let mut p = common::prepare(s, kind);
    p.aggregator.listen = listen;
    p
}

/// Runs the scenario's federation as processes: the aggregator listens on `listen` (inside
/// `hosts[0]` if given), node `i` runs inside `hosts[i + 1]` and reaches it as `dial` says.
/// Waits until every process has exited cleanly, every node having submitted in every round.
/// Returns the prepared run and the addresses the aggregator reported.
fn federate(
    s: &Scenario,
    kind: &str,
    hosts: Option<&[String]>,
    listen: Vec<Multiaddr>,
    dial: Dial,
) -> (PreparedDir, Vec<Multiaddr>) {
    let mut p = prepare(s, kind, listen);
    let addrs = federate_prepared(&mut p, kind, hosts, &dial);
    (p, addrs)
}

fn federate_prepared(p: &mut Prepared, kind: &str, hosts: Option<&[String]>, dial: &Dial) -> Vec<Multiaddr> {
    let host = |i: usize| hosts.map(|h| h[i].as_str());
    let dir = p.dir.clone();
    setup::write_toml(&dir.federation(), &p.aggregator).unwrap();
    let addr_file = dir.aggregator_addrs();
    let mut procs = Procs(vec![common::spawn_aggregator_in(p, host(0), &addr_file)]);
    let addrs = wait_for_addrs(&mut procs.0[0], &addr_file, &dir.aggregator_log());
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.aggregator = dial.address(&addrs, i);
        setup::write_toml(&node_toml(&dir, i), n).unwrap();
        procs.0.push(spawn_run("fd-node", host(i + 1), &node_toml(&dir, i), &dir.node_log(i)));
    }
    // The aggregator ends the federation; a node that fails before that fails the test at once.
    let mut status = None;
    wait_until("the aggregator to exit", Duration::from_secs(300), || {
        for (i, node) in procs.0[1..].iter_mut().enumerate() {
            if let Some(s) = node.try_wait().unwrap().filter(|s| !s.success()) {
                panic!("{kind}: node {i} {s}:\n{}", read(&dir.node_log(i)));
            }
        }
        status = procs.0[0].try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "{kind}: aggregator {status}:\n{}", read(&dir.aggregator_log()));
    for (i, n) in p.nodes.iter().enumerate() {
        let status = wait_exit(&mut procs.0[i + 1], Duration::from_secs(60));
        assert!(status.success(), "{kind}: node {i} {status}:\n{}", read(&dir.node_log(i)));
        assert_eq!(submitted(&n.state_dir), (1..=p.scenario.rounds).collect::<Vec<_>>(), "{kind}: node {i}");
    }
    addrs
}

/// A node's AutoNAT verdict (`public`, `private`, `unknown`), or `none` if it wrote none.
fn reachability(state_dir: &Path) -> String {
    let file = std::fs::read(state_dir.join(node::reachability::FILE)).ok();
    let verdict = file.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    verdict.and_then(|v| v["reachability"].as_str().map(str::to_owned)).unwrap_or_else(|| "none".to_owned())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The aggregator's fixed addresses on the LAN.
fn lan_listen() -> Vec<Multiaddr> {
    listen_at(&format!("{SUBNET}.1"))
}

/// TCP and QUIC on the fixed port at `ip`.
fn listen_at(ip: &str) -> Vec<Multiaddr> {
    vec![format!("/ip4/{ip}/tcp/{PORT}").parse().unwrap(), format!("/ip4/{ip}/udp/{PORT}/quic-v1").parse().unwrap()]
}

/// The aggregator's metrics, after checking that every node made the consensus of every round.
fn every_round_complete(p: &Prepared) -> Vec<aggregator::RoundMetrics> {
    let m = metrics(p);
    assert_eq!(m.iter().map(|r| r.round).collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>());
    for r in &m {
        assert_eq!(r.participants, (0..3).map(node_name).collect::<Vec<_>>(), "round {}", r.round);
    }
    m
}

/// What must not depend on the network: everything the aggregator measured but the time.
fn outcome(p: &Prepared) -> Vec<aggregator::RoundMetrics> {
    metrics(p).into_iter().map(|m| aggregator::RoundMetrics { seconds: 0.0, ..m }).collect()
}

#[test]
#[ignore = "long tier (network namespaces, root): cargo test --workspace --release -- --ignored"]
fn a_federation_across_namespaces_matches_the_same_on_loopback() {
    let lan = Lan::or_fail("lan", 4);
    let s = scenario("netns", 3, ROUNDS);
    // The same scenario (same seed, same data) on 127.0.0.1, at the same time.
    let loopback = std::thread::spawn({
        let s = s.clone();
        move || {
            federate(
                &s,
                "loopback",
                None,
                vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap(), "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
                Dial::Direct,
            )
            .0
        }
    });
    let (p, addrs) = federate(&s, "lan", Some(&lan.hosts), lan_listen(), Dial::Direct);
    let loopback = loopback.join().unwrap();

    let bound: Vec<Multiaddr> =
        addrs.iter().map(|a| a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()).collect();
    assert_eq!(bound, lan_listen(), "the aggregator listens on its fixed LAN addresses");
    every_round_complete(&p);
    let m = outcome(&p);
    // The messages crossed the bridge: the aggregator's link carried at least what it received.
    let received: u64 = m.iter().map(|r| r.bytes_in).sum();
    assert!(lan.rx_bytes(0) >= received, "aggregator link {} bytes < {received} bytes of messages", lan.rx_bytes(0));
    // Same seed, same data: the same consensus rounds and the same global model, bit for bit.
    assert_eq!(m, outcome(&loopback), "the aggregator's rounds differ between the LAN and loopback");
    let model = |p: &Prepared| std::fs::read(p.aggregator.output.join("global.safetensors")).unwrap();
    assert!(model(&p) == model(&loopback), "the global model differs between the LAN and loopback");
}

#[test]
#[ignore = "long tier (network namespaces, root): cargo test --workspace --release -- --ignored"]
fn a_federation_over_delayed_lossy_links_completes_its_rounds() {
    let test = "impaired";
    let lan = Lan::or_fail(test, 5);
    let s = scenario("impaired", 3, ROUNDS);
    let delay = Duration::from_millis(100);
    // netem on every link; without it, the same by other means: nftables drops 1 % of what each
    // host sends, and the nodes reach the aggregator through a relay that holds everything
    // 100 ms each way (so one round trip between a node and the aggregator takes 200 ms more).
    let (dial, relay) = match lan.impair("delay 100ms loss 1%") {
        Ok(()) => (Dial::Direct, None),
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "{test}: tc netem is not available ({why}); emulating it with nftables (loss) and a userspace delay relay"
            );
            for host in &lan.hosts {
                if let Err(why) = nft(host, LOSS_RULES) {
                    unavailable(test, &format!("without netem, loss needs nft: {why}"));
                }
            }
            let port = |ip: Ipv4Addr| SocketAddr::from((ip, PORT));
            (
                Dial::Via(RELAY),
                Some(link::DelayRelay::start(&lan.hosts[4], port(RELAY), port(Ipv4Addr::new(10, 77, 0, 1)), delay)),
            )
        }
    };
    let (p, _) = federate(&s, "impaired", Some(&lan.hosts), lan_listen(), dial);
    let m = every_round_complete(&p);
    let dropped: u64 = match relay {
        Some(relay) => {
            let received: u64 = m.iter().map(|r| r.bytes_in).sum();
            assert!(
                relay.forwarded() >= received,
                "the relay forwarded {} bytes < {received} bytes of messages",
                relay.forwarded()
            );
            lan.hosts.iter().map(|h| Lan::counted(h, "inet", "fdloss", "output", None)).sum()
        }
        None => 0,
    };
    let seconds: Vec<String> = m.iter().map(|r| format!("{:.2}", r.seconds)).collect();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {ROUNDS} rounds completed over impaired links; round seconds {}; packets dropped by nftables {dropped}",
        seconds.join(", ")
    );
}

#[test]
#[ignore = "long tier (network namespaces, root): cargo test --workspace --release -- --ignored"]
fn nodes_behind_masquerading_nats_join_and_complete_their_rounds() {
    let test = "nat";
    let mut lan = Lan::or_fail(test, 2);
    // A fourth roster member stays offline, so that each round waits for its deadline: the run
    // lasts long enough (3 × 4 s) for the nodes' AutoNAT verdicts: probes begin a second in, and
    // the dial-back to node 0's QUIC address waits out QUIC's 5-s handshake timeout.
    let s = scenario("nat", 4, ROUNDS);
    // Node 0 (over QUIC) and node 1 (over TCP) each behind its own NAT; node 2 on the LAN.
    let mut behind = Vec::new();
    for k in 0..2 {
        match lan.behind_nat(k, Ipv4Addr::new(10, 77, 0, 1)) {
            Ok(pair) => behind.push(pair),
            Err(why) => unavailable(test, &format!("cannot set up a NAT with nft: {why}")),
        }
    }
    // No way in: the aggregator's host has no route to either private side.
    for (_, host) in &behind {
        let inside = ip(&["-n", host, "-j", "addr", "show", "dev", "eth0"]).unwrap();
        let inside: serde_json::Value = serde_json::from_str(&inside).unwrap();
        let addr = inside[0]["addr_info"][0]["local"].as_str().unwrap().to_owned();
        assert!(ip(&["-n", &lan.hosts[0], "route", "get", &addr]).is_err(), "the LAN can reach {addr}");
    }
    let hosts = [lan.hosts[0].clone(), behind[0].1.clone(), behind[1].1.clone(), lan.hosts[1].clone()];
    // Every node listens, so that AutoNAT has a port to probe: the aggregator dials each back.
    let mut p = prepare(&s, "nat", lan_listen());
    p.nodes.pop();
    p.aggregator.round.quorum = Some(3);
    p.aggregator.round.deadline_secs = 4.0;
    for n in &mut p.nodes {
        n.listen = vec![format!("/ip4/0.0.0.0/tcp/{PORT}").parse().unwrap()];
    }
    federate_prepared(&mut p, "nat", Some(&hosts), &Dial::Direct);
    every_round_complete(&p);
    // Their traffic went through the routers' NAT.
    for (router, _) in &behind {
        assert!(Lan::counted(router, "ip", "fdnat", "postrouting", None) > 0, "nothing was masqueraded by {router}");
    }
    // AutoNAT: the nodes behind the NATs learnt that they cannot be reached, the one on the LAN
    // that it can (at its LAN address); each still completed every round, dialling out.
    let verdicts: Vec<String> = p.nodes.iter().map(|n| reachability(&n.state_dir)).collect();
    assert_eq!(
        verdicts,
        ["private", "private", "public"],
        "AutoNAT's verdicts on the nodes behind the NATs and on the LAN"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.nodes[2].state_dir.join(node::reachability::FILE)).unwrap()).unwrap();
    let id = net::keys::peer_id_string(&net::keys::read(&p.nodes[2].key).unwrap().id());
    assert_eq!(
        file["address"],
        format!("/ip4/{SUBNET}.2/tcp/{PORT}/p2p/{id}"),
        "where the aggregator reached the node on the LAN"
    );
    let _ = writeln!(
        std::io::stderr(),
        "{test}: AutoNAT: nodes behind NATs {}, on the LAN {}",
        verdicts[..2].join(", "),
        verdicts[2]
    );
}

#[test]
#[ignore = "long tier (network namespaces, root): cargo test --workspace --release -- --ignored"]
fn an_aggregator_behind_a_nat_is_reached_through_a_relay() {
    let test = "relay";
    // Host 0: the relay; hosts 1–3: the nodes; host 4: the aggregator on the LAN, for the direct
    // run that the relayed one is compared with; and the aggregator's host behind a NAT.
    let mut lan = Lan::or_fail(test, 5);
    let relay_ip = Ipv4Addr::new(10, 77, 0, 1);
    let (router, inside) = match lan.behind_nat(0, relay_ip) {
        Ok(pair) => pair,
        Err(why) => unavailable(test, &format!("cannot set up a NAT with nft: {why}")),
    };
    let h = |i: usize| lan.hosts[i].clone();
    let s = scenario("relay", 3, ROUNDS);
    let direct_link = Lan::link_bytes(&h(4));
    let (direct, _) =
        federate(&s, "relay-direct", Some(&[h(4), h(1), h(2), h(3)]), listen_at(&format!("{SUBNET}.5")), Dial::Direct);

    let direct_link = Lan::link_bytes(&h(4)) - direct_link;
    // Two relayed runs: nodes that only dial out, then nodes that listen, which DCUtR needs.
    let mut runs = [prepare(&s, "relayed", Vec::new()), prepare(&s, "relayed-listening", Vec::new())];
    for (i, n) in runs[1].nodes.iter_mut().enumerate() {
        n.listen = listen_at(&format!("{SUBNET}.{}", i + 2));
    }
    let relay_key = runs[0].dir.keys().join("relay.key");
    net::keys::generate(&relay_key).unwrap();
    let mut args: Vec<String> =
        vec!["relay".into(), "--key".into(), relay_key.display().to_string(), "--addr-file".into()];
    let addr_file = runs[0].dir.root().join("relay.addrs");
    args.push(addr_file.display().to_string());
    for a in listen_at(&relay_ip.to_string()) {
        args.extend(["--listen".into(), a.to_string()]);
    }
    for p in &runs {
        let aggregator = net::keys::read(&p.aggregator.key).unwrap().id();
        args.extend(["--aggregator".into(), net::keys::peer_id_string(&aggregator)]);
        for e in &p.aggregator.roster {
            args.extend(["--allow".into(), net::keys::peer_id_string(&e.peer_id)]);
        }
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let log = runs[0].dir.root().join("relay.log");
    let mut relay = Procs(vec![common::launch(common::command("fd-aggregator", Some(&h(0))), &args, &log)]);
    let relay_addrs = wait_for_addrs(&mut relay.0[0], &addr_file, &log);
    // Rounds after the first: the first also waits for the nodes' processes to start and join.
    let mean_ms =
        |m: &[aggregator::RoundMetrics]| 1000.0 * m[1..].iter().map(|r| r.seconds).sum::<f64>() / (m.len() - 1) as f64;
    for p in &mut runs {
        let kind = p.dir.root().file_name().unwrap().to_string_lossy().into_owned();
        // The aggregator has no open port: it listens on its private address, which the LAN
        // cannot reach, and through the relay (over TCP).
        let tcp = |a: &&Multiaddr| a.iter().any(|p| matches!(p, Protocol::Tcp(_)));
        let private: Multiaddr = format!("/ip4/10.100.0.2/tcp/{PORT}").parse().unwrap();
        p.aggregator.listen = vec![private, relay_addrs.iter().find(tcp).unwrap().clone().with(Protocol::P2pCircuit)];
        let (link, inside_link, direct_packets) = (
            Lan::link_bytes(&h(0)),
            Lan::link_bytes(&inside),
            Lan::counted(&router, "ip", "fdnat", "forward", Some("direct")),
        );
        let started = std::time::Instant::now();
        federate_prepared(p, &kind, Some(&[inside.clone(), h(1), h(2), h(3)]), &Dial::Circuit(relay_addrs.clone()));
        let elapsed = started.elapsed();
        let (through_relay, aggregator_link) = (Lan::link_bytes(&h(0)) - link, Lan::link_bytes(&inside) - inside_link);
        let m = every_round_complete(p);
        // Same seed, same data: the relay changes nothing but the path.
        assert_eq!(
            outcome(p),
            outcome(&direct),
            "{kind}: the rounds differ between the relayed and the direct federation"
        );
        // Packets of a working connection from a node's own address reached the aggregator's
        // private side: DCUtR connected them directly.
        let upgraded = Lan::counted(&router, "ip", "fdnat", "forward", Some("direct")) > direct_packets;
        let listening = if p.nodes[0].listen.is_empty() { "nodes dial out only" } else { "nodes listen" };
        let verdicts: Vec<String> = p.nodes.iter().map(|n| reachability(&n.state_dir)).collect();
        let (relayed_ms, direct_ms) = (mean_ms(&m), mean_ms(&metrics(&direct)));
        let (per_round, direct_per_round) = (aggregator_link / ROUNDS, direct_link / ROUNDS);
        let _ = writeln!(
            std::io::stderr(),
            "{test} ({listening}): {ROUNDS} rounds through the relay in {:.1} s; direct connection upgrade (DCUtR): {}; AutoNAT verdicts of the nodes: {}; \
             relay overhead per round: {} bytes ({per_round} bytes through the aggregator's link relayed, {direct_per_round} direct; the relay's link carried {} bytes, everything twice) and {:.0} ms ({relayed_ms:.0} ms a round relayed, {direct_ms:.0} ms direct, rounds 2–{ROUNDS})",
            elapsed.as_secs_f64(),
            if upgraded { "a node connected directly" } else { "no direct connection" },
            verdicts.join(", "),
            per_round as i64 - direct_per_round as i64,
            through_relay / ROUNDS,
            relayed_ms - direct_ms,
        );
    }
}
