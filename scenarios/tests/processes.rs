//! Real `fd-aggregator` and `fd-node` processes on 127.0.0.1: a federation on the digits data,
//! a stranger refused, a node killed mid-round, the aggregator SIGKILLed and resumed.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scenarios::presets::preset;
use scenarios::run::sibling_binary;
use scenarios::setup::{self, Prepared};
use scenarios::spec::data_dir;
use scenarios::Scenario;

fn scenario(name: &str, nodes: usize, rounds: u64) -> Scenario {
    let mut s = Scenario::from_toml(&preset("quickstart", &data_dir()).unwrap()).unwrap();
    s.name = name.into();
    s.rounds = rounds;
    s.split.nodes = nodes;
    s.split.reference = 400;
    s.round.samples = 200;
    s.nodes.train.epochs = 3;
    s
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prepares the files and writes configs for an aggregator on `port` (TCP and QUIC).
fn prepare(s: &Scenario, tweak: impl FnOnce(&mut Prepared)) -> (Prepared, u16) {
    let dir = std::env::temp_dir().join(format!("fd-proc-{}-{}", s.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut p = setup::prepare(s, &dir).unwrap();
    let port = free_port();
    p.aggregator.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(), format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().unwrap()];
    tweak(&mut p);
    let agg = net::keys::peer_id_string(&net::keys::read(&p.aggregator.key).unwrap().id());
    setup::write_toml(&dir.join("federation.toml"), &p.aggregator).unwrap();
    for (i, n) in p.nodes.iter_mut().enumerate() {
        // Node 0 comes in over QUIC, the others over TCP.
        let addr = if i == 0 { format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{agg}") } else { format!("/ip4/127.0.0.1/tcp/{port}/p2p/{agg}") };
        n.aggregator = addr.parse().unwrap();
        setup::write_toml(&node_toml(&dir, i), n).unwrap();
    }
    (p, port)
}

fn node_toml(dir: &Path, i: usize) -> PathBuf {
    dir.join("nodes").join(format!("node-{i:02}")).join("node.toml")
}

fn spawn(bin: &str, config: &Path, log: &Path) -> Child {
    spawn_args(bin, &["run".as_ref(), "--config".as_ref(), config.as_os_str()], log)
}

/// A node with simulated faults: `fd-sim-node`, which reads `simulation` beside its config.
fn spawn_sim(config: &Path, simulation: &Path, log: &Path) -> Child {
    spawn_args("fd-sim-node", &["--config".as_ref(), config.as_os_str(), "--simulation".as_ref(), simulation.as_os_str()], log)
}

fn spawn_args(bin: &str, args: &[&std::ffi::OsStr], log: &Path) -> Child {
    let exe = sibling_binary(bin).expect("workspace binaries are built by cargo test --workspace");
    Command::new(exe)
        .args(args)
        .env("RUST_LOG", "info,libp2p=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap()
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn metrics(p: &Prepared) -> Vec<aggregator::RoundMetrics> {
    std::fs::read_to_string(p.aggregator.output.join("metrics.jsonl"))
        .map(|t| t.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
        .unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(c: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "process did not finish in {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_node_processes_federate_and_a_stranger_is_refused() {
    let s = scenario("three", 3, 3);
    let (p, port) = prepare(&s, |_| {});
    let dir = p.dir.clone();
    // A fourth node whose key is not on the roster.
    let stranger_key = dir.join("keys/stranger.key");
    net::keys::generate(&stranger_key).unwrap();
    let mut stranger = p.nodes[1].clone();
    stranger.key = stranger_key;
    stranger.state_dir = dir.join("stranger");
    setup::write_toml(&dir.join("stranger.toml"), &stranger).unwrap();

    let mut procs = Procs(vec![spawn("fd-aggregator", &dir.join("federation.toml"), &dir.join("aggregator.log"))]);
    for i in 0..3 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.join(format!("node-{i}.log"))));
    }
    procs.0.push(spawn("fd-node", &dir.join("stranger.toml"), &dir.join("stranger.log")));
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "aggregator failed: {}", std::fs::read_to_string(dir.join("aggregator.log")).unwrap_or_default());
    // The aggregator told the nodes the federation is over: they stop on their own, cleanly.
    for i in 1..=3 {
        let status = wait_exit(&mut procs.0[i], Duration::from_secs(60));
        let log = std::fs::read_to_string(dir.join(format!("node-{}.log", i - 1))).unwrap_or_default();
        assert!(status.success() && log.contains("finished_after=Some(3)"), "node {}: {status}\n{log}", i - 1);
    }
    // Each node's receipt reached the aggregator before the connections closed.
    let agg_log = std::fs::read_to_string(dir.join("aggregator.log")).unwrap();
    assert!(!agg_log.contains("not delivered"), "{agg_log}");
    // The stranger was never in the federation, so nobody told it: it is still trying.
    assert!(procs.0[4].try_wait().unwrap().is_none(), "the stranger stopped");

    let m = metrics(&p);
    assert_eq!(m.len(), 3);
    for r in &m {
        assert_eq!(r.participants, vec!["node-00", "node-01", "node-02"], "round {}", r.round);
    }
    // The outputs exist and load; the global model beats the mean local-only model.
    let global = learning::Model::load(&p.aggregator.output.join("global"), s.backend).unwrap();
    assert!(p.aggregator.output.join("global.safetensors").is_file());
    assert!(p.aggregator.output.join("global.onnx").is_file());
    assert!(p.aggregator.output.join("report.md").is_file());
    let test = p.dataset.subset(&p.split.test);
    let acc = learning::eval::evaluate(&global.soft_labels(&test.features, 1.0, 256).unwrap(), &test.labels, 10).accuracy;
    let local = scenarios::baselines::local_only(&p, &test).unwrap();
    let mean_local = local.iter().sum::<f32>() / local.len() as f32;
    assert!(acc > mean_local, "global {acc} vs mean local-only {mean_local}");
    // The stranger never got in: no announcement reached it, so it never submitted.
    let ledger = net::ledger::Ledger::read(&dir.join("stranger/egress.jsonl")).unwrap_or_default();
    assert!(ledger.iter().all(|e| e.kind != "Submission"), "{ledger:?}");
    assert!(agg_log.contains("incoming connection refused"), "{agg_log}");
    let _ = port;
}

#[test]
fn a_node_killed_mid_round_misses_it_and_rejoins_later() {
    let s = scenario("killnode", 3, 5);
    let (p, _) = prepare(&s, |p| {
        p.aggregator.round.quorum = Some(2);
        p.aggregator.round.deadline_secs = 5.0;
    });
    let dir = p.dir.clone();
    // Node 2 is a straggler, so that it can be killed mid-round.
    let straggler = scenarios::faults::Simulation { delay_ms: 1500, ..Default::default() };
    let sim = dir.join("straggler.toml");
    setup::write_toml(&sim, &straggler).unwrap();
    let mut procs = Procs(vec![spawn("fd-aggregator", &dir.join("federation.toml"), &dir.join("aggregator.log"))]);
    for i in 0..2 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.join(format!("node-{i}.log"))));
    }
    procs.0.push(spawn_sim(&node_toml(&dir, 2), &sim, &dir.join("node-2.log")));
    wait_until("round 1", Duration::from_secs(120), || !metrics(&p).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    procs.0[3].kill().unwrap();
    procs.0[3].wait().unwrap();
    wait_until("round 2", Duration::from_secs(120), || metrics(&p).len() >= 2);
    // Restart it as a plain fd-node: it resumes its checkpoint and joins a later round.
    procs.0.push(spawn("fd-node", &node_toml(&dir, 2), &dir.join("node-2.log")));
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success());
    let m = metrics(&p);
    assert_eq!(m.len(), 5);
    assert_eq!(m[0].participants, vec!["node-00", "node-01", "node-02"]);
    assert_eq!(m[1].participants, vec!["node-00", "node-01"], "round 2 closed at quorum without the killed node");
    assert!(m[2..].iter().any(|r| r.participants.contains(&"node-02".to_string())), "{m:?}");
}

#[test]
fn a_sigkilled_aggregator_resumes_with_its_rounds_intact() {
    let s = scenario("killagg", 3, 4);
    let (p, _) = prepare(&s, |_| {});
    let dir = p.dir.clone();
    let mut procs = Procs(vec![spawn("fd-aggregator", &dir.join("federation.toml"), &dir.join("aggregator.log"))]);
    for i in 0..3 {
        procs.0.push(spawn("fd-node", &node_toml(&dir, i), &dir.join(format!("node-{i}.log"))));
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
    procs.0[0] = spawn("fd-aggregator", &dir.join("federation.toml"), &dir.join("aggregator.log"));
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "{}", std::fs::read_to_string(dir.join("aggregator.log")).unwrap_or_default());
    let after = metrics(&p);
    assert_eq!(after.len(), 4);
    assert_eq!(after[..2], before[..2], "rounds 1 and 2 survive the crash unchanged");
    assert_eq!(after.iter().map(|m| m.round).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(learning::Model::load(&p.aggregator.output.join("global"), s.backend).is_ok());
}
