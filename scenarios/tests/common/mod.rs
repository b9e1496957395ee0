//! Helpers shared by the tests that run real `fd-aggregator` and `fd-node` processes: a small
//! scenario in a scratch folder that goes with the test, spawning the binaries (on this host or
//! inside a network namespace), and waiting for the files they write and for their exit, with
//! deadlines, never for a duration or a log line.
#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net::ledger::{Ledger, LedgerEntry};
use net::multiaddr::Multiaddr;
use scenarios::Scenario;
use scenarios::layout::RunDir;
use scenarios::presets::preset;
use scenarios::run::Results;
use scenarios::run::{read_addr_file, sibling_binary};
use scenarios::setup::Prepared;
use scenarios::spec::data_dir;
use tempfile::TempDir;

/// The quickstart preset, made small: `nodes` nodes, `rounds` rounds, few samples.
pub fn scenario(name: &str, nodes: usize, rounds: u64) -> Scenario {
    let mut s = preset("quickstart", &data_dir()).unwrap();
    s.name = name.into();
    s.rounds = rounds;
    s.split.nodes = nodes;
    s.split.reference = 400;
    s.round.samples = 200;
    s.nodes.train.epochs = 3;
    s
}

/// A fresh folder for a test's files, `fd-{kind}-{name}-` and a random suffix in the system's
/// temporary folder, removed with its contents when the returned guard is dropped, also when the
/// test fails: hold the guard until every process that uses the folder has been stopped. With
/// `FD_KEEP_TEST_DIRS` set, the folder is kept instead and its path printed (shown with the
/// test's output when it fails, or with `--nocapture`), to be looked at after the run.
pub fn test_dir(kind: &str, name: &str) -> TempDir {
    let keep = std::env::var_os("FD_KEEP_TEST_DIRS").is_some();
    let dir = tempfile::Builder::new().prefix(&format!("fd-{kind}-{name}-")).disable_cleanup(keep).tempdir().unwrap();
    if keep {
        eprintln!("FD_KEEP_TEST_DIRS: {kind} {name} keeps its files in {}", dir.path().display());
    }
    dir
}

/// A scenario prepared in its own [`test_dir`], which is removed when this is dropped. It derefs
/// to the [`Prepared`] run; declare it before the [`Procs`] that use its folder, so that they are
/// stopped first.
pub struct PreparedDir {
    prepared: Prepared,
    _dir: TempDir,
}

impl Deref for PreparedDir {
    type Target = Prepared;

    fn deref(&self) -> &Prepared {
        &self.prepared
    }
}

impl DerefMut for PreparedDir {
    fn deref_mut(&mut self) -> &mut Prepared {
        &mut self.prepared
    }
}

/// Prepares `s`'s files in a fresh [`test_dir`] named after `kind` and the scenario, with a
/// `logs/` folder for the processes' logs.
pub fn prepare(s: &Scenario, kind: &str) -> PreparedDir {
    let dir = test_dir(kind, &s.name);
    let prepared = scenarios::setup::prepare(s, dir.path()).unwrap();
    std::fs::create_dir_all(prepared.dir.logs()).unwrap();
    PreparedDir { prepared, _dir: dir }
}

/// `node.toml` of node `i` of the run folder `dir`.
pub fn node_toml(dir: &RunDir, i: usize) -> PathBuf {
    dir.node(i).config()
}

/// Workspace binary `bin`, run inside the network namespace `netns` if one is given.
pub fn command(bin: &str, netns: Option<&str>) -> Command {
    let exe = sibling_binary(bin).expect("workspace binaries are built by cargo test --workspace");
    match netns {
        None => Command::new(exe),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
    }
}

/// Starts `command` with `args`, its log (stderr) appended to `log` (at `FD_TEST_LOG`'s levels if
/// set, e.g. `info,net=debug,libp2p_autonat=debug`).
pub fn launch(mut command: Command, args: &[&OsStr], log: &Path) -> Child {
    command
        .args(args)
        .env("RUST_LOG", std::env::var("FD_TEST_LOG").unwrap_or_else(|_| "info,libp2p=warn".to_owned()))
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap()
}

pub fn spawn_args(bin: &str, args: &[&OsStr], log: &Path) -> Child {
    launch(command(bin, None), args, log)
}

/// `bin run --config config`, inside `netns` if given.
pub fn spawn_run(bin: &str, netns: Option<&str>, config: &Path, log: &Path) -> Child {
    launch(command(bin, netns), &["run".as_ref(), "--config".as_ref(), config.as_os_str()], log)
}

/// `fd-aggregator run` on the prepared `federation.toml` (inside `netns` if given), reporting
/// its addresses in `addr_file`.
pub fn spawn_aggregator_in(p: &Prepared, netns: Option<&str>, addr_file: &Path) -> Child {
    let _ = std::fs::remove_file(addr_file);
    let config = p.dir.federation();
    let args: [&OsStr; 5] =
        ["run".as_ref(), "--config".as_ref(), config.as_os_str(), "--addr-file".as_ref(), addr_file.as_os_str()];
    launch(command("fd-aggregator", netns), &args, &p.dir.aggregator_log())
}

/// Waits until the aggregator has reported the addresses it bound (failing if it exits first).
pub fn wait_for_addrs(agg: &mut Child, addr_file: &Path, log: &Path) -> Vec<Multiaddr> {
    let mut addrs = None;
    wait_until("the aggregator's addresses", Duration::from_secs(120), || {
        if let Some(status) = agg.try_wait().unwrap() {
            panic!(
                "the aggregator exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        addrs = read_addr_file(addr_file);
        addrs.is_some()
    });
    addrs.unwrap()
}

/// Processes killed (if still running) and reaped when dropped.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The aggregator's per-round metrics so far.
pub fn metrics(p: &Prepared) -> Vec<aggregator::RoundMetrics> {
    std::fs::read_to_string(p.dir.metrics())
        .map(|t| t.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
        .unwrap_or_default()
}

/// What a node has sent so far (empty while its ledger does not exist or a line is half written).
pub fn egress(state_dir: &Path) -> Vec<LedgerEntry> {
    Ledger::read(&state_dir.join("egress.jsonl")).unwrap_or_default()
}

/// The rounds a node submitted soft labels for, in order.
pub fn submitted(state_dir: &Path) -> Vec<u64> {
    egress(state_dir).iter().filter(|e| e.kind == "Submission").filter_map(|e| e.round).collect()
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_exit(c: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("a process to exit", limit, || {
        status = c.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Starts the aggregator on a TCP port of 127.0.0.1 that it picks, waits for the addresses it
/// reports, then writes `federation.toml` with that port (so that a restart comes back where the
/// nodes look for it) and each node's config naming it. Returns the process and its address
/// with its PeerId.
pub fn launch_aggregator_tcp(p: &mut Prepared) -> (Child, Multiaddr) {
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    scenarios::setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    let addr_file = p.dir.aggregator_addrs();
    // Killed if waiting for its addresses fails; handed over once it is listening.
    let mut guard = Procs(vec![spawn_aggregator_in(p, None, &addr_file)]);
    let addrs = wait_for_addrs(&mut guard.0[0], &addr_file, &p.dir.aggregator_log());
    let agg = guard.0.pop().unwrap();
    p.aggregator.listen =
        addrs.iter().map(|a| a.iter().filter(|p| !matches!(p, net::multiaddr::Protocol::P2p(_))).collect()).collect();
    scenarios::setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.aggregator = addrs[0].clone();
        scenarios::setup::write_toml(&node_toml(&p.dir, i), n).unwrap();
    }
    (agg, addrs[0].clone())
}

/// What a run measured, for comparing two runs of the same seed: its results without the
/// timings (round, federation and baseline seconds, inference latencies), the peak RSS and the
/// scenario's name.
pub fn figures(r: &Results) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    for x in v["rounds"].as_array_mut().unwrap() {
        x["seconds"] = 0.into();
    }
    for k in ["federation_seconds", "peak_rss_mib", "processes_memory", "scenario"] {
        v[k] = 0.into();
    }
    for m in ["global_model", "node_model"] {
        v[m]["latency_us_batch1"] = 0.into();
        v[m]["latency_us_batch256"] = 0.into();
    }
    for b in ["centralized", "fedavg", "public_labels"] {
        v[b]["seconds"] = 0.into();
    }
    v
}

/// The peak resident set size of a running process so far (`VmHWM`, KiB), if it can be read.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for `c` to exit, sampling its peak RSS every poll; returns its status and the last
/// peak read (the high-water mark up to one poll, 20 ms, before it exited).
pub fn wait_exit_with_peak(c: &mut Child, limit: Duration) -> (std::process::ExitStatus, u64) {
    let (mut status, mut peak) = (None, 0);
    let pid = c.id();
    wait_until("a process to exit", limit, || {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        status = c.try_wait().unwrap();
        status.is_some()
    });
    (status.unwrap(), peak)
}
