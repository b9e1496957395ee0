//! Real `fd-aggregator` and `fd-node` processes on 127.0.0.1: a federation on the digits data,
//! a stranger refused, a node killed mid-round, the aggregator SIGKILLed and resumed.
//!
//! The aggregator binds port 0 and reports the addresses it got (`--addr-file`); the tests wait
//! for files the processes write (that report, the aggregator's metrics and state, the nodes'
//! egress ledgers) and for exit statuses, with deadlines, never for a duration or a log line.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{
    PreparedDir, Procs, egress, metrics, node_toml, scenario, spawn_args, submitted, wait_exit, wait_for_addrs,
    wait_until,
};
use net::multiaddr::Protocol;
use scenarios::Scenario;
use scenarios::run::read_addr_file;
use scenarios::setup::{self, Prepared};

/// Prepares the files and a `federation.toml` that listens on port 0 (TCP and QUIC).
fn prepare(s: &Scenario, tweak: impl FnOnce(&mut Prepared)) -> PreparedDir {
    let mut p = common::prepare(s, "proc");
    p.aggregator.listen =
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap(), "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    tweak(&mut p);
    setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    p
}

fn spawn(bin: &str, config: &Path, log: &Path) -> Child {
    common::spawn_run(bin, None, config, log)
}

/// A node with simulated faults: `fd-sim-node`, which reads `simulation` beside its config.
fn spawn_sim(config: &Path, simulation: &Path, log: &Path) -> Child {
    spawn_args(
        "fd-sim-node",
        &["--config".as_ref(), config.as_os_str(), "--simulation".as_ref(), simulation.as_os_str()],
        log,
    )
}

/// `fd-aggregator run` on the prepared `federation.toml`, reporting its addresses in `addr_file`.
fn spawn_aggregator(p: &Prepared, addr_file: &Path) -> Child {
    common::spawn_aggregator_in(p, None, addr_file)
}

/// Starts the aggregator, waits for its addresses, then writes the configs that depend on them:
/// `federation.toml` listens on the bound ports from now on (an aggregator restarted from it
/// comes back where the nodes look for it), and each node's config names the aggregator's
/// address: node 0 comes in over QUIC, the others over TCP. Returns the aggregator process.
fn start_aggregator(p: &mut Prepared) -> Child {
    let addr_file = p.dir.aggregator_addrs();
    let mut agg = spawn_aggregator(p, &addr_file);
    let addrs = wait_for_addrs(&mut agg, &addr_file, &p.dir.aggregator_log());
    let over =
        |quic: bool| addrs.iter().find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic).unwrap().clone();
    p.aggregator.listen = addrs.iter().map(|a| a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()).collect();
    setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.aggregator = over(i == 0);
        setup::write_toml(&node_toml(&p.dir, i), n).unwrap();
    }
    agg
}

#[test]
fn three_node_processes_federate_and_a_stranger_is_refused() {
    let s = scenario("three", 3, 3);
    let mut p = prepare(&s, |_| {});
    let dir = p.dir.clone();
    let mut procs = Procs(vec![start_aggregator(&mut p)]);
    // A fourth node whose key is not on the roster.
    let stranger_key = dir.keys().join("stranger.key");
    net::keys::generate(&stranger_key).unwrap();
    let mut stranger = p.nodes[1].clone();
    stranger.key = stranger_key;
    stranger.state_dir = dir.root().join("stranger");
    setup::write_toml(&dir.root().join("stranger.toml"), &stranger).unwrap();
    for i in 0..3 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.node_log(i)));
    }
    procs.0.push(spawn("fd-node", &dir.root().join("stranger.toml"), &dir.root().join("stranger.log")));
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(
        status.success(),
        "aggregator failed: {}",
        std::fs::read_to_string(dir.aggregator_log()).unwrap_or_default()
    );
    // The aggregator told the nodes the federation is over: they stop on their own, cleanly
    // (status 0: nothing else stops an fd-node that is not sent a signal), having submitted in
    // every round.
    for i in 0..3 {
        let status = wait_exit(&mut procs.0[i + 1], Duration::from_secs(60));
        let log = std::fs::read_to_string(dir.node_log(i)).unwrap_or_default();
        assert!(status.success(), "node {i}: {status}\n{log}");
        assert_eq!(submitted(&p.nodes[i].state_dir), vec![1, 2, 3], "node {i}");
    }
    // The stranger was never in the federation, so nobody told it: it is still trying.
    assert!(procs.0[4].try_wait().unwrap().is_none(), "the stranger stopped");

    let m = metrics(&p);
    assert_eq!(m.len(), 3);
    for r in &m {
        assert_eq!(r.participants, vec!["node-00", "node-01", "node-02"], "round {}", r.round);
    }
    // The outputs exist and load; the global model beats the mean local-only model.
    let global = learning::Model::load(&p.dir.global_model(), s.backend).unwrap();
    assert!(p.aggregator.output.join("global.safetensors").is_file());
    assert!(p.aggregator.output.join("global.onnx").is_file());
    assert!(p.aggregator.output.join("report.md").is_file());
    let test = p.dataset.subset(&p.split.test);
    let acc =
        learning::eval::evaluate(&global.soft_labels(&test.features, 1.0, 256).unwrap(), &test.labels, 10).accuracy;
    let local = scenarios::baselines::local_only(&p, &test).unwrap();
    let mean_local = local.iter().sum::<f32>() / local.len() as f32;
    assert!(acc > mean_local, "global {acc} vs mean local-only {mean_local}");
    // The stranger got as far as its own network (it loaded its config and opened its ledger),
    // but never in: no announcement reached it, so it never submitted.
    assert!(stranger.state_dir.join("egress.jsonl").is_file(), "the stranger never started its network");
    assert_eq!(submitted(&stranger.state_dir), Vec::<u64>::new());
}

/// Issue #21: one data holder's CSV has a column too few. On a fresh node, which fetches the
/// reference set, the node stops at once, non-zero, with the message, having told the
/// aggregator; the aggregator names it and why, and every round closes without it (under the
/// default quorum) while the others finish. Before the fix the node retried forever and the
/// round never closed.
#[test]
fn a_node_whose_csv_lacks_a_column_stops_and_the_federation_goes_on_without_it() {
    let s = scenario("bad-csv", 4, 2);
    let bad = 3;
    let mut p = prepare(&s, |p| p.aggregator.round.quorum = None);
    let dir = p.dir.clone();
    // Its private rows as a CSV, the last feature column left out.
    let csv = dir.root().join("bad.csv");
    let data = p.dataset.subset(&p.parts[bad]);
    let mut text = String::new();
    for (i, label) in data.labels.iter().enumerate() {
        let row = data.row(i);
        let cells: Vec<String> = row[..row.len() - 1].iter().map(|v| v.to_string()).collect();
        text.push_str(&format!("{},{label}\n", cells.join(",")));
    }
    std::fs::write(&csv, text).unwrap();
    let mut spec = learning::data::DataSpec::file(
        csv,
        Some(learning::data::LabelColumn::Index(-1)),
        false,
        learning::data::Preprocess::None,
    );
    spec.classes = Some(data.classes);
    p.nodes[bad].data = spec;
    let _ = std::fs::remove_file(&p.nodes[bad].reference); // fetched, as a fresh node does
    let mut procs = Procs(vec![start_aggregator(&mut p)]);
    for i in 0..4 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.node_log(i)));
    }
    let status = wait_exit(&mut procs.0[1 + bad], Duration::from_secs(120));
    let log = std::fs::read_to_string(dir.node_log(bad)).unwrap_or_default();
    assert!(!status.success(), "the node with the wrong CSV stopped cleanly:\n{log}");
    assert!(log.contains(&format!("the private data has {} features a row", data.dim - 1)), "{log}");
    assert!(!p.nodes[bad].reference.exists(), "the set that does not fit is not written");

    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    let agg_log = std::fs::read_to_string(dir.aggregator_log()).unwrap_or_default();
    assert!(status.success(), "aggregator failed: {agg_log}");
    let named = agg_log.lines().find(|l| l.contains("cannot take part")).unwrap_or_else(|| panic!("{agg_log}"));
    assert!(named.contains("node-03") && named.contains("DataMismatch"), "{named}");
    let m = metrics(&p);
    assert_eq!(m.len(), 2);
    for r in &m {
        assert_eq!(r.participants, vec!["node-00", "node-01", "node-02"], "round {}", r.round);
    }
    for i in 0..3 {
        let status = wait_exit(&mut procs.0[i + 1], Duration::from_secs(60));
        assert!(status.success(), "node {i}: {status}");
        assert_eq!(submitted(&p.nodes[i].state_dir), vec![1, 2], "node {i}");
    }
}

#[test]
fn a_node_killed_mid_round_misses_it_and_rejoins_later() {
    let s = scenario("killnode", 4, 5);
    let mut p = prepare(&s, |p| {
        p.aggregator.round.quorum = Some(3);
        p.aggregator.round.deadline_secs = 5.0;
    });
    let dir = p.dir.clone();
    // Node 3 is a straggler, so that it can be killed mid-round.
    let straggler = scenarios::faults::Simulation { delay_ms: 1500, ..Default::default() };
    let sim = dir.root().join("straggler.toml");
    setup::write_toml(&sim, &straggler).unwrap();
    let mut procs = Procs(vec![start_aggregator(&mut p)]);
    for i in 0..3 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.node_log(i)));
    }
    procs.0.push(spawn_sim(&node_toml(&dir, 3), &sim, &dir.node_log(3)));
    // Kill it once it has taken round 2's announcement (its receipt is in its egress ledger)
    // and before its delayed submission.
    let state = p.nodes[3].state_dir.clone();
    let took_round_2 =
        || egress(&state).iter().any(|e| e.direction == "response" && e.kind == "Receipt" && e.round == Some(2));
    wait_until("node 3 to take round 2's announcement", Duration::from_secs(120), took_round_2);
    procs.0[4].kill().unwrap();
    procs.0[4].wait().unwrap();
    assert_eq!(submitted(&state), vec![1], "node 3 was killed before submitting in round 2");
    wait_until("round 2", Duration::from_secs(120), || metrics(&p).len() >= 2);
    // Restart it as a plain fd-node: it resumes its checkpoint and joins a later round.
    procs.0.push(spawn("fd-node", &node_toml(&dir, 3), &dir.node_log(3)));
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success());
    let m = metrics(&p);
    assert_eq!(m.len(), 5);
    assert_eq!(m[0].participants, vec!["node-00", "node-01", "node-02", "node-03"]);
    assert_eq!(
        m[1].participants,
        vec!["node-00", "node-01", "node-02"],
        "round 2 closed at quorum without the killed node"
    );
    assert!(m[2..].iter().any(|r| r.participants.contains(&"node-03".to_string())), "{m:?}");
}

#[test]
fn a_sigkilled_aggregator_resumes_with_its_rounds_intact() {
    let s = scenario("killagg", 3, 4);
    let mut p = prepare(&s, |_| {});
    let dir = p.dir.clone();
    let mut procs = Procs(vec![start_aggregator(&mut p)]);
    let first = read_addr_file(&dir.aggregator_addrs()).unwrap();
    for i in 0..3 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.node_log(i)));
    }
    // state.json is the commit point (metrics.jsonl is written just before it).
    let committed = || -> u64 {
        std::fs::read(p.aggregator.output.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["completed_round"].as_u64())
            .unwrap_or(0)
    };
    wait_until("round 2 committed", Duration::from_secs(120), || committed() >= 2);
    procs.0[0].kill().unwrap(); // SIGKILL
    procs.0[0].wait().unwrap();
    let before = metrics(&p);
    assert!(committed() >= 2 && before.len() >= 2);
    // It comes back from the same federation.toml, which now names the ports it had bound, so
    // the nodes find it where they were told to look.
    let addr_file = dir.aggregator_addrs();
    procs.0[0] = spawn_aggregator(&p, &addr_file);
    assert_eq!(
        wait_for_addrs(&mut procs.0[0], &addr_file, &dir.aggregator_log()),
        first,
        "the restarted aggregator listens where it did"
    );
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "{}", std::fs::read_to_string(dir.aggregator_log()).unwrap_or_default());
    let after = metrics(&p);
    assert_eq!(after.len(), 4);
    assert_eq!(after[..2], before[..2], "rounds 1 and 2 survive the crash unchanged");
    assert_eq!(after.iter().map(|m| m.round).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(learning::Model::load(&p.dir.global_model(), s.backend).is_ok());
}

#[test]
fn a_round_trained_before_the_aggregator_died_is_answered_after_it_returns_and_paid_for_once() {
    let mut s = scenario("paidonce", 3, 3);
    s.nodes.privacy =
        Some(scenarios::spec::NodesPrivacy { epsilon: 50.0, delta: 1e-5, clip_norm: 1.0, rounds: None, nodes: None });
    let mut p = prepare(&s, |_| {});
    let dir = p.dir.clone();
    // Node 1 is a straggler: its answer waits a while after its training, so that the
    // aggregator can die between the two. It comes in over TCP, so it sees the aggregator's
    // death at once (over QUIC, only at the connection's idle timeout).
    let straggler = scenarios::faults::Simulation { delay_ms: 2500, ..Default::default() };
    let sim = dir.root().join("straggler.toml");
    setup::write_toml(&sim, &straggler).unwrap();
    let mut procs = Procs(vec![start_aggregator(&mut p)]);
    for i in 0..3 {
        let log = dir.node_log(i);
        procs.0.push(if i == 1 {
            spawn_sim(&node_toml(&dir, i), &sim, &log)
        } else {
            spawn("fd-node", &node_toml(&dir, i), &log)
        });
    }
    let state = p.nodes[1].state_dir.clone();
    let paid = || -> Vec<Option<u64>> {
        node::budget::read_entries(&state).map(|e| e.iter().map(|e| e.round).collect()).unwrap_or_default()
    };
    // Kill the aggregator once node 1 has paid for round 2's training, before it answers.
    wait_until("node 1 to pay for round 2", Duration::from_secs(120), || paid().contains(&Some(2)));
    procs.0[0].kill().unwrap(); // SIGKILL
    procs.0[0].wait().unwrap();
    assert!(
        !submitted(&state).contains(&2),
        "node 1 answered round 2 before the aggregator died; the test lost its race"
    );
    let addr_file = dir.aggregator_addrs();
    procs.0[0] = spawn_aggregator(&p, &addr_file);
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "{}", std::fs::read_to_string(dir.aggregator_log()).unwrap_or_default());
    let m = metrics(&p);
    assert_eq!(m.iter().map(|m| m.round).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(m[1].participants.contains(&"node-01".to_string()), "node 1 answered round 2: {m:?}");
    let rounds: Vec<u64> = paid().into_iter().flatten().collect();
    assert_eq!(rounds, vec![1, 2, 3], "each round's training paid for once");
}
