//! The federation as real processes: `fd-aggregator` and one `fd-node` per node, each with its
//! own config file, as a user would run them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aggregator::RoundMetrics;
use net::multiaddr::{Multiaddr, Protocol};

use super::{bar, follow, read_metrics};
use crate::setup::{Prepared, write_configs, write_toml};

/// Path of a workspace binary built next to the running one (or the test binary).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "cannot find the `{name}` binary near {}; build the workspace first (cargo build --release)",
        exe.display()
    )
}

/// The addresses that `fd-aggregator run --addr-file PATH` reported in `path`, once it has.
pub fn read_addr_file(path: &Path) -> Option<Vec<Multiaddr>> {
    let text = std::fs::read_to_string(path).ok()?;
    let addrs: Vec<Multiaddr> = text.lines().map(str::parse).collect::<Result<_, _>>().ok()?;
    (!addrs.is_empty()).then_some(addrs)
}

/// How long an aggregator process may take to load its inputs and bind.
const ADDR_WAIT: Duration = Duration::from_secs(120);

/// Waits for the aggregator process to report where it listens, failing if it exits first.
async fn wait_for_addrs(agg: &mut tokio::process::Child, file: &Path, log: &Path) -> anyhow::Result<Vec<Multiaddr>> {
    let deadline = tokio::time::Instant::now() + ADDR_WAIT;
    loop {
        if let Some(addrs) = read_addr_file(file) {
            return Ok(addrs);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("fd-aggregator did not report its addresses within {ADDR_WAIT:?}; see {}", log.display());
        }
        tokio::select! {
            s = agg.wait() => anyhow::bail!("fd-aggregator exited with {} before listening; see {}", s?, log.display()),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Runs the federation of `p` as processes; returns each round's metrics (from the aggregator's
/// `metrics.jsonl`).
pub(super) async fn federate(p: &mut Prepared, progress: bool) -> anyhow::Result<Vec<RoundMetrics>> {
    let agg_bin = sibling_binary("fd-aggregator")?;
    let node_bin = sibling_binary("fd-node")?;
    let sim_bin = sibling_binary("fd-sim-node")?;
    std::fs::create_dir_all(p.dir.logs())?;
    // The aggregator binds port 0 and reports the addresses it got; nothing guesses a free port.
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    write_toml(&p.dir.federation(), &p.aggregator)?;
    let addr_file = p.dir.aggregator_addrs();
    let _ = std::fs::remove_file(&addr_file);
    let mut args = run_args(&p.dir.federation());
    args.extend(["--addr-file".into(), addr_file.clone().into_os_string()]);
    let agg_log = p.dir.aggregator_log();
    let mut agg = spawn(&agg_bin, args, &agg_log)?;
    let addrs = wait_for_addrs(&mut agg, &addr_file, &agg_log).await?;
    // federation.toml now listens where the aggregator is bound and each node.toml names that
    // address, so that the files in the run folder run as they are.
    p.aggregator.listen = addrs.iter().map(|a| a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()).collect();
    write_configs(p, &addrs[0])?;
    let mut nodes = Vec::new();
    for i in 0..p.nodes.len() {
        let ndir = p.dir.node(i);
        let log = p.dir.node_log(i);
        let child = if p.faults[i].is_honest() {
            spawn(&node_bin, run_args(&ndir.config()), &log)?
        } else {
            // fd-sim-node takes no subcommand.
            let args = vec![
                "--config".into(),
                ndir.config().into_os_string(),
                "--simulation".into(),
                ndir.simulation().into_os_string(),
            ];
            spawn(&sim_bin, args, &log)?
        };
        nodes.push(child);
    }
    let status = follow(agg.wait(), &p.dir.metrics(), bar(p.scenario.rounds, progress)).await?;
    // A finished aggregator tells the nodes, which then stop on their own; stop any that did
    // not hear it (a node that left, or one still reconnecting).
    for mut n in nodes {
        if !matches!(tokio::time::timeout(Duration::from_secs(10), n.wait()).await, Ok(Ok(s)) if s.success()) {
            let _ = n.start_kill();
            let _ = n.wait().await;
        }
    }
    if !status.success() {
        anyhow::bail!("fd-aggregator exited with {status}; see {}", agg_log.display());
    }
    read_metrics(&p.dir)
}

/// `run --config CONFIG`, as `fd-aggregator` and `fd-node` take it.
fn run_args(config: &Path) -> Vec<OsString> {
    vec!["run".into(), "--config".into(), config.as_os_str().to_owned()]
}

/// Starts `bin` with `args`, its standard error into `log`, killed if dropped.
fn spawn(bin: &Path, args: Vec<OsString>, log: &Path) -> anyhow::Result<tokio::process::Child> {
    let f = std::fs::File::create(log)?;
    Ok(tokio::process::Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(f)
        .kill_on_drop(true)
        .spawn()?)
}
