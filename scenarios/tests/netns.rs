//! The aggregator and 3 nodes as real processes, each in its own Linux network namespace: a LAN
//! made by the test (a "switch" namespace holding a bridge, one veth pair per host, addresses in
//! 10.77.0.0/24, the aggregator on fixed ports), checked against the same federation on
//! 127.0.0.1; the same LAN with `tc netem` delay and loss on every link; and two nodes each
//! behind its own masquerading NAT (a router namespace with nftables; no route from the LAN to
//! the private side), which join because a node only ever dials out to the aggregator.
//!
//! Namespaces need root (CI runs as root). Where they cannot be made, each test writes why to
//! the terminal (past the test harness's capture) and returns; with `FD_REQUIRE_NETNS` set (as
//! `.ci/run` does) that is a failure instead, and so is a NAT test without `nft`. A kernel
//! without `sch_netem` cannot delay or drop packets: the impaired test then says so and returns.
//! Every namespace a test makes, and with it every veth, bridge and NAT, is removed when the test
//! ends, also when it fails.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[path = "netns/link.rs"]
mod link;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{metrics, node_toml, scenario, spawn_run, submitted, wait_exit, wait_for_addrs, Procs};
use net::multiaddr::{Multiaddr, Protocol};
use scenarios::setup::{self, Prepared};
use scenarios::Scenario;

/// The LAN's first three octets; host `i` is `.{i + 1}`, the aggregator host 0.
const SUBNET: &str = "10.77.0";
/// The aggregator's fixed port (TCP and QUIC) on the LAN.
const PORT: u16 = 4001;
const ROUNDS: u64 = 3;
/// Where the delay relay listens when the kernel has no netem (host 4 of the impaired LAN).
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);

/// 1 % of the packets a host sends on its link are dropped (netem's `loss 1%`, by nftables).
const LOSS_RULES: &str = "table inet fdloss {
    chain output {
        type filter hook output priority filter; policy accept;
        oifname \"eth0\" numgen random mod 100 < 1 counter drop
    }
}
";

/// A masquerading router: what leaves by `eth0` (the LAN) takes the router's address; from the
/// LAN to `eth1` (the private side) only replies to connections made from inside pass.
const NAT_RULES: &str = "table ip fdnat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" counter masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname \"eth1\" oifname \"eth0\" accept
        iifname \"eth0\" oifname \"eth1\" ct state established,related accept
    }
}
";

/// Runs `program args`; on failure, what it said.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let line = format!("`{program} {}`", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| format!("{line}: cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{line} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Loads an nftables ruleset inside namespace `netns`.
fn nft(netns: &str, rules: &str) -> Result<(), String> {
    let line = format!("`ip netns exec {netns} nft -f -`");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{line}: cannot run ip: {e}"))?;
    child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() { Ok(()) } else { Err(format!("{line} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())) }
}

/// Network namespaces made by a test, deleted when dropped (with the veths and bridge in them).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> Result<String, String> {
        ip(&["netns", "add", &name])?;
        self.0.push(name.clone());
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(e) = ip(&["netns", "del", name]) {
                let _ = writeln!(std::io::stderr(), "cannot remove network namespace {name}: {e}");
            }
        }
    }
}

/// A switch namespace with a bridge, and hosts: namespace `hosts[i]` has `eth0` at
/// `10.77.0.{i + 1}/24`, one end of a veth pair whose other end is a port of the bridge.
struct Lan {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
    namespaces: Namespaces,
}

/// Runs `ip args`, panicking if it fails: once a namespace could be made, a failing step is a
/// broken test set-up, not a missing permission.
fn set(args: &[&str]) {
    ip(args).unwrap();
}

impl Lan {
    /// Errs with the reason if this machine cannot make a network namespace.
    fn new(tag: &str, hosts: usize) -> Result<Lan, String> {
        let mut namespaces = Namespaces(Vec::new());
        let prefix = format!("fd{}{tag}", std::process::id());
        let switch = namespaces.add(format!("{prefix}-sw"))?;
        let mut lan = Lan { prefix, switch, hosts: Vec::new(), namespaces };
        set(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"]);
        set(&["-n", &lan.switch, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let host = lan.namespaces.add(format!("{}-h{i}", lan.prefix)).unwrap();
            lan.plug(&host, &format!("p{i}"), &format!("{SUBNET}.{}/24", i + 1));
            lan.hosts.push(host);
        }
        Ok(lan)
    }

    /// Connects namespace `host` to the bridge through port `port`: its `eth0` gets `addr`.
    fn plug(&self, host: &str, port: &str, addr: &str) {
        set(&["-n", &self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host]);
        set(&["-n", &self.switch, "link", "set", port, "master", "br0", "up"]);
        set(&["-n", host, "addr", "add", addr, "dev", "eth0"]);
        set(&["-n", host, "link", "set", "eth0", "up"]);
        set(&["-n", host, "link", "set", "lo", "up"]);
    }

    /// A host behind its own masquerading router `k`: the router is on the LAN at
    /// `10.77.0.{200 + k}` (`eth0`) and on a private link `10.{100 + k}.0.0/24` (`eth1`); the
    /// host, at `.2` on that link, routes everything through the router. Nothing on the LAN has a
    /// route to the private side, and the router forwards from the LAN only what belongs to
    /// connections made from inside. Returns (router, host) namespaces; errs if `nft` cannot set
    /// up the NAT (not installed).
    fn behind_nat(&mut self, k: usize) -> Result<(String, String), String> {
        let router = self.namespaces.add(format!("{}-r{k}", self.prefix)).unwrap();
        self.plug(&router, &format!("r{k}"), &format!("{SUBNET}.{}/24", 200 + k));
        let host = self.namespaces.add(format!("{}-n{k}", self.prefix)).unwrap();
        let private = |last: u8| format!("10.{}.0.{last}", 100 + k);
        set(&["-n", &router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &host]);
        set(&["-n", &router, "addr", "add", &format!("{}/24", private(1)), "dev", "eth1"]);
        set(&["-n", &router, "link", "set", "eth1", "up"]);
        set(&["-n", &host, "addr", "add", &format!("{}/24", private(2)), "dev", "eth0"]);
        set(&["-n", &host, "link", "set", "eth0", "up"]);
        set(&["-n", &host, "link", "set", "lo", "up"]);
        set(&["-n", &host, "route", "add", "default", "via", &private(1)]);
        set(&["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        nft(&router, NAT_RULES)?;
        Ok((router, host))
    }

    /// Packets counted so far by the rules of `chain` in `table` (family `family`) in `netns`.
    fn counted(netns: &str, family: &str, table: &str, chain: &str) -> u64 {
        let text = ip(&["netns", "exec", netns, "nft", "-j", "list", "chain", family, table, chain]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["nftables"].as_array().unwrap().iter().filter_map(|item| item["rule"]["expr"].as_array()).flatten().filter_map(|e| e["counter"]["packets"].as_u64()).sum()
    }

    /// A LAN, or `None` after saying why there is none (a failure if `FD_REQUIRE_NETNS` is set).
    fn or_skip(test: &str, hosts: usize) -> Option<Lan> {
        let why = match Lan::new(test, hosts) {
            Ok(lan) => return Some(lan),
            Err(why) => format!("network namespaces cannot be made here: {why}"),
        };
        required(test, &why);
        None
    }

    /// `tc netem` with `impairment` (e.g. `delay 100ms loss 1%`) on every host's side of its
    /// link, so a packet between two hosts passes it twice.
    fn impair(&self, impairment: &str) -> Result<(), String> {
        for host in &self.hosts {
            let mut args = vec!["-n", host, "qdisc", "add", "dev", "eth0", "root", "netem"];
            args.extend(impairment.split_whitespace());
            run("tc", &args)?;
        }
        Ok(())
    }

    /// Bytes host `i` has received on its link.
    fn rx_bytes(&self, i: usize) -> u64 {
        let text = ip(&["-n", &self.hosts[i], "-j", "-s", "link", "show", "dev", "eth0"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[0]["stats64"]["rx"]["bytes"].as_u64().unwrap()
    }
}

/// Says, past the harness's output capture, that `test` did not run and why.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} (these tests need root, iproute2, nftables, and the kernel's veth, bridge, nftables NAT and netem support)");
}

/// Runs the scenario's federation as processes: the aggregator listens on `listen` (inside
/// `hosts[0]` if given), node `i` runs inside `hosts[i + 1]`, node 0 over QUIC and the others
/// over TCP, to the aggregator's address or, with `via`, to the same port at that address (a
/// relay). Waits until every process has exited cleanly, every node having submitted in every
/// round. Returns the prepared run and the addresses the aggregator reported.
fn federate(s: &Scenario, kind: &str, hosts: Option<&[String]>, listen: Vec<Multiaddr>, via: Option<Ipv4Addr>) -> (Prepared, Vec<Multiaddr>) {
    let host = |i: usize| hosts.map(|h| h[i].as_str());
    let dir = common::test_dir(kind, &s.name);
    let mut p = setup::prepare(s, &dir).unwrap();
    p.aggregator.listen = listen;
    setup::write_toml(&dir.join("federation.toml"), &p.aggregator).unwrap();
    let addr_file = dir.join("aggregator.addrs");
    let log = |name: &str| dir.join(format!("{name}.log"));
    let mut procs = Procs(vec![common::spawn_aggregator_in(&p, host(0), &addr_file)]);
    let addrs = wait_for_addrs(&mut procs.0[0], &addr_file, &log("aggregator"));
    let over = |quic: bool| {
        let addr = addrs.iter().find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic).unwrap();
        addr.iter().map(|p| match (p, via) {
            (Protocol::Ip4(_), Some(relay)) => Protocol::Ip4(relay),
            (p, _) => p,
        }).collect::<Multiaddr>()
    };
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.aggregator = over(i == 0);
        setup::write_toml(&node_toml(&dir, i), n).unwrap();
        procs.0.push(spawn_run("fd-node", host(i + 1), &node_toml(&dir, i), &log(&format!("node-{i}"))));
    }
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "{kind}: aggregator {status}:\n{}", read(&log("aggregator")));
    for (i, n) in p.nodes.iter().enumerate() {
        let status = wait_exit(&mut procs.0[i + 1], Duration::from_secs(60));
        assert!(status.success(), "{kind}: node {i} {status}:\n{}", read(&log(&format!("node-{i}"))));
        assert_eq!(submitted(&n.state_dir), (1..=s.rounds).collect::<Vec<_>>(), "{kind}: node {i}");
    }
    (p, addrs)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The aggregator's fixed addresses on the LAN.
fn lan_listen() -> Vec<Multiaddr> {
    vec![format!("/ip4/{SUBNET}.1/tcp/{PORT}").parse().unwrap(), format!("/ip4/{SUBNET}.1/udp/{PORT}/quic-v1").parse().unwrap()]
}

/// The aggregator's metrics, after checking that every node made the consensus of every round.
fn every_round_complete(p: &Prepared) -> Vec<aggregator::RoundMetrics> {
    let m = metrics(p);
    assert_eq!(m.iter().map(|r| r.round).collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>());
    for r in &m {
        assert_eq!(r.participants, vec!["node-00", "node-01", "node-02"], "round {}", r.round);
    }
    m
}

/// What must not depend on the network: everything the aggregator measured but the time.
fn outcome(p: &Prepared) -> Vec<aggregator::RoundMetrics> {
    metrics(p).into_iter().map(|m| aggregator::RoundMetrics { seconds: 0.0, ..m }).collect()
}

#[test]
fn a_federation_across_namespaces_matches_the_same_on_loopback() {
    let Some(lan) = Lan::or_skip("lan", 4) else { return };
    let s = scenario("netns", 3, ROUNDS);
    // The same scenario (same seed, same data) on 127.0.0.1, at the same time.
    let loopback = std::thread::spawn({
        let s = s.clone();
        move || federate(&s, "loopback", None, vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap(), "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()], None).0
    });
    let (p, addrs) = federate(&s, "lan", Some(&lan.hosts), lan_listen(), None);
    let loopback = loopback.join().unwrap();

    let bound: Vec<Multiaddr> = addrs.iter().map(|a| a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()).collect();
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

/// Fails the test if `FD_REQUIRE_NETNS` is set, otherwise says why it did not run.
fn required(test: &str, why: &str) {
    assert!(std::env::var_os("FD_REQUIRE_NETNS").is_none(), "{test}: FD_REQUIRE_NETNS is set, but {why}");
    skip(test, why);
}

#[test]
fn a_federation_over_delayed_lossy_links_completes_its_rounds() {
    let test = "impaired";
    let Some(lan) = Lan::or_skip(test, 5) else { return };
    let s = scenario("impaired", 3, ROUNDS);
    let delay = Duration::from_millis(100);
    // netem on every link; without it, the same by other means: nftables drops 1 % of what each
    // host sends, and the nodes reach the aggregator through a relay that holds everything
    // 100 ms each way (so one round trip between a node and the aggregator takes 200 ms more).
    let (via, relay) = match lan.impair("delay 100ms loss 1%") {
        Ok(()) => (None, None),
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "{test}: tc netem is not available ({why}); emulating it with nftables (loss) and a userspace delay relay");
            for host in &lan.hosts {
                if let Err(why) = nft(host, LOSS_RULES) {
                    return required(test, &format!("without netem, loss needs nft: {why}"));
                }
            }
            let port = |ip: Ipv4Addr| SocketAddr::from((ip, PORT));
            (Some(RELAY), Some(link::DelayRelay::start(&lan.hosts[4], port(RELAY), port(Ipv4Addr::new(10, 77, 0, 1)), delay)))
        }
    };
    let (p, _) = federate(&s, "impaired", Some(&lan.hosts), lan_listen(), via);
    let m = every_round_complete(&p);
    let dropped: u64 = match relay {
        Some(relay) => {
            let received: u64 = m.iter().map(|r| r.bytes_in).sum();
            assert!(relay.forwarded() >= received, "the relay forwarded {} bytes < {received} bytes of messages", relay.forwarded());
            lan.hosts.iter().map(|h| Lan::counted(h, "inet", "fdloss", "output")).sum()
        }
        None => 0,
    };
    let seconds: Vec<String> = m.iter().map(|r| format!("{:.2}", r.seconds)).collect();
    let _ = writeln!(std::io::stderr(), "{test}: {ROUNDS} rounds completed over impaired links; round seconds {}; packets dropped by nftables {dropped}", seconds.join(", "));
}

#[test]
fn nodes_behind_masquerading_nats_join_and_complete_their_rounds() {
    let test = "nat";
    let Some(mut lan) = Lan::or_skip(test, 2) else { return };
    let s = scenario("nat", 3, ROUNDS);
    // Node 0 (over QUIC) and node 1 (over TCP) each behind its own NAT; node 2 on the LAN.
    let mut behind = Vec::new();
    for k in 0..2 {
        match lan.behind_nat(k) {
            Ok(pair) => behind.push(pair),
            Err(why) => return required(test, &format!("cannot set up a NAT with nft: {why}")),
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
    let (p, _) = federate(&s, "nat", Some(&hosts), lan_listen(), None);
    every_round_complete(&p);
    // Their traffic went through the routers' NAT.
    for (router, _) in &behind {
        assert!(Lan::counted(router, "ip", "fdnat", "postrouting") > 0, "nothing was masqueraded by {router}");
    }
}
