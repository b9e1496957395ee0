//! The flood test: a roster member and a stranger (`fd-flood`) hammer a real `fd-aggregator`
//! (connections, streams, oversized and malformed frames, Hellos, reference-chunk requests)
//! while 10 real `fd-node`s run 5 rounds on the digits data. Every honest submission must be
//! accepted in every round, the flooder must have sent a flood and been refused, and the
//! aggregator's peak RSS must stay within 3× the same federation's without the flood.
//!
//! The figures (peak RSS of both runs, the flood's counts) are printed:
//! `cargo test --workspace --release --test flood -- --ignored --nocapture`.
//!
//! Part of the flood: 80 silent TCP connections from 127.0.0.2 (`fd-flood --half-open 80
//! --half-open-from 127.0.0.2`; `FD_FLOOD_HALF_OPEN=N` sets another count), each holding a slot
//! for handshakes in flight until libp2p's 10-s handshake timeout, and reopened at once. Before
//! the per-address cap (`max_pending_incoming_per_ip`, 8 of the 64 slots), 40 of them against 16
//! slots kept the 10 starting nodes out for the flood's whole 100 s (130 failed joins).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{
    Procs, launch_aggregator_tcp, metrics, node_toml, scenario, spawn_args, spawn_run, submitted, wait_exit,
    wait_exit_with_peak, wait_until,
};
use scenarios::flood::FloodReport;
use scenarios::layout::node_name;

const NODES: usize = 10;
const ROUNDS: u64 = 5;
/// Silent connections the flooder holds open (from 127.0.0.2, another host as far as the
/// aggregator can tell): more than the aggregator's slots for handshakes in flight.
const HALF_OPEN: usize = 80;
/// Requests the flooder has sent before the honest nodes start.
const FLOOD_HEAD_START: u64 = 1000;

/// What one federation run gave.
struct Run {
    /// The aggregator's peak RSS, KiB.
    peak_kib: u64,
    seconds: f64,
    flood: Option<FloodReport>,
}

/// Runs 10 nodes for 5 rounds as processes, with the flooder if `flood`.
fn federate(name: &str, flood: bool) -> Run {
    let started = Instant::now();
    let s = scenario(name, NODES, ROUNDS);
    let mut p = common::prepare(&s, "flood");
    let dir = p.dir.clone();
    // A round closes as soon as every roster member has answered or declined (the flooder
    // declines what reaches it), else once the deadline has passed and the quorum, every honest
    // node, has answered: the round cannot close without an honest node, and the deadline only
    // bounds how long it waits for the flooder. The flooder's own requests fill its connection's
    // stream slots, so the aggregator's requests to it wait for a slot to free (see `net`'s
    // retries), and a roster member still not asked holds its round to the deadline, as a silent
    // one does.
    p.aggregator.round.quorum = Some(NODES);
    // The handshake limits a deployment has (a simulation makes room for all its nodes on
    // 127.0.0.1): the flood is measured against them.
    p.aggregator.connections = Default::default();
    p.aggregator.round.deadline_secs = 4.0;
    let member_key = dir.keys().join("flooder.key");
    if flood {
        let id = net::keys::generate(&member_key).unwrap();
        p.aggregator.roster.push(aggregator::config::RosterEntry {
            name: "flooder".into(),
            peer_id: id.id(),
            samples: None,
        });
    }
    let (agg, addr) = launch_aggregator_tcp(&mut p);
    let mut procs = Procs(vec![agg]);
    let report_path = dir.root().join("flood.json");
    let progress = dir.root().join("flood.progress.json");
    if flood {
        let args = [
            "--aggregator".into(),
            addr.to_string(),
            "--member-key".into(),
            member_key.display().to_string(),
            "--federation".into(),
            p.aggregator.federation.to_string(),
            "--reference-sha256".into(),
            p.aggregator.reference.sha256.to_hex(),
            "--max-secs".into(),
            "100".into(),
            "--out".into(),
            report_path.display().to_string(),
            "--progress".into(),
            progress.display().to_string(),
            "--half-open".into(),
            std::env::var("FD_FLOOD_HALF_OPEN").unwrap_or_else(|_| HALF_OPEN.to_string()),
            "--half-open-from".into(),
            "127.0.0.2".into(),
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        procs.0.push(spawn_args("fd-flood", &args, &dir.root().join("flood.log")));
        // The honest nodes start into a flood already under way.
        let flooder = &mut procs.0[1];
        wait_until("the flood to be under way", Duration::from_secs(60), || {
            assert!(
                flooder.try_wait().unwrap().is_none(),
                "fd-flood exited: {}",
                std::fs::read_to_string(dir.root().join("flood.log")).unwrap_or_default()
            );
            let sent = std::fs::read(&progress)
                .ok()
                .and_then(|b| serde_json::from_slice::<FloodReport>(&b).ok())
                .map_or(0, |r| r.requests_sent());
            sent >= FLOOD_HEAD_START
        });
    }
    for i in 0..NODES {
        procs.0.push(spawn_run("fd-node", None, &node_toml(&dir, i), &dir.node_log(i)));
    }
    let (status, peak_kib) = wait_exit_with_peak(&mut procs.0[0], Duration::from_secs(120));
    assert!(
        status.success(),
        "{name}: aggregator failed: {}",
        std::fs::read_to_string(dir.aggregator_log()).unwrap_or_default()
    );
    // Every honest submission was accepted in every round, and the nodes stopped cleanly.
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let m = metrics(&p);
    assert_eq!(m.iter().map(|r| r.round).collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>(), "{name}");
    for r in &m {
        assert_eq!(r.participants, names, "{name}: round {}", r.round);
    }
    let first_node = if flood { 2 } else { 1 };
    for i in 0..NODES {
        let status = wait_exit(&mut procs.0[first_node + i], Duration::from_secs(60));
        assert!(status.success(), "{name}: node {i}: {status}");
        assert_eq!(submitted(&p.nodes[i].state_dir), (1..=ROUNDS).collect::<Vec<_>>(), "{name}: node {i}");
    }
    let flood = flood.then(|| {
        // The flooder stops by itself once the aggregator has finished (it is told so).
        let status = wait_exit(&mut procs.0[1], Duration::from_secs(30));
        assert!(
            status.success(),
            "fd-flood failed: {}",
            std::fs::read_to_string(dir.root().join("flood.log")).unwrap_or_default()
        );
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap()
    });
    Run { peak_kib, seconds: started.elapsed().as_secs_f64(), flood }
}

#[test]
#[ignore = "long tier (floods): cargo test --workspace --release -- --ignored"]
fn a_flooding_member_and_a_stranger_cannot_keep_ten_honest_nodes_out_nor_inflate_the_aggregator() {
    let quiet = federate("quiet", false);
    let loud = federate("loud", true);
    let f = loud.flood.as_ref().unwrap();
    println!(
        "aggregator peak RSS: {} KiB without the flood ({:.1} s), {} KiB with it ({:.1} s)",
        quiet.peak_kib, quiet.seconds, loud.peak_kib, loud.seconds
    );
    println!("flood: {}", serde_json::to_string_pretty(f).unwrap());
    assert!(f.joined && f.finished, "the member joined and was told the federation finished: {f:?}");
    // It declined the rounds whose question reached it (most do: the aggregator's requests wait
    // for one of the stream slots its own requests fill).
    assert!(f.announcements_declined >= 1, "{f:?}");
    // It was a flood, and everything that should be refused was.
    assert!(f.requests_sent() >= FLOOD_HEAD_START + 200, "{} requests", f.requests_sent());
    for kind in ["garbage", "malformed", "forged", "oversized", "oversized_hello"] {
        let o = f.of(kind);
        assert!(o.sent >= 100, "{kind}: {o:?}");
        assert_eq!(o.served, 0, "{kind} served: {o:?}");
    }
    // The rate limits held: a burst of 4 Hellos then 0.1 a second; 10 chunk requests then 1/6 a second.
    let (hello, chunk) = (f.of("hello"), f.of("chunk"));
    assert!(hello.sent >= 100 && hello.served as f64 <= 4.0 + 0.1 * f.seconds + 1.0, "{hello:?} in {} s", f.seconds);
    assert!(chunk.sent >= 100 && chunk.served as f64 <= 10.0 + f.seconds / 6.0 + 1.0, "{chunk:?} in {} s", f.seconds);
    // Connections: every one of the stranger's is refused, and so is every one the member opens
    // beyond its one while that one is up (the dials in flight when the flood stopped aside).
    let (stranger, member) = (&f.stranger_dials, &f.member_dials);
    let in_flight = 8;
    assert!(
        stranger.attempted >= 200
            && stranger.kept == 0
            && stranger.refused + stranger.failed + in_flight >= stranger.attempted,
        "stranger: {stranger:?}"
    );
    assert!(
        member.attempted >= 200
            && member.kept <= f.member_disconnects
            && member.refused + member.failed + member.kept + in_flight >= member.attempted,
        "member: {member:?}"
    );
    // The silent connections were held (and the ones beyond the address's share refused).
    assert!(f.half_open.opened + f.half_open.failed >= HALF_OPEN as u64, "{:?}", f.half_open);
    // Memory stays bounded.
    assert!(
        loud.peak_kib < 3 * quiet.peak_kib,
        "peak RSS {} KiB under the flood, {} KiB without",
        loud.peak_kib,
        quiet.peak_kib
    );
}
