//! The federation as a Slurm job: the processes of [`super::processes`], placed by a cluster's
//! own scheduler rather than started here.
//!
//! [`write_job`] writes two batch scripts into the run folder's `slurm/`, which must be on a
//! filesystem that every compute node shares (so must the workspace's binaries):
//!
//! 1. `federation.sbatch`, one task: `fd-aggregator run` as the job's one step, listening on
//!    every interface at a port of its choosing and reporting where (`logs/aggregator.addrs`).
//!    Once it has, the script runs `fd-scenarios connect`, which names the first reported
//!    address (the host's first non-loopback one) in every `node.toml` ([`connect`]), then
//!    submits `nodes.sbatch`; when the aggregator has finished, it gives the nodes 30 s to stop
//!    on their own (the aggregator tells them) and cancels the rest as it exits.
//! 2. `nodes.sbatch`, a job array with a task a node: task `i` runs `fd-node run` with
//!    `nodes/node-XX/node.toml` (`fd-sim-node` where the scenario gives node `i` faults), its
//!    log in `logs/node-XX.log`.
//!
//! [`federate`] submits the first with `sbatch`, shows the rounds as `metrics.jsonl` grows,
//! waits for the job to end (`scontrol show job`) and returns the rounds' metrics, as the other
//! transports do; a job it submitted is cancelled if the run stops first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aggregator::RoundMetrics;
use anyhow::{Context, bail};
use net::multiaddr::Multiaddr;
use node::config::NodeConfig;

use super::processes::{read_addr_file, sibling_binary};
use super::{bar, follow, read_metrics};
use crate::layout::RunDir;
use crate::setup::{Prepared, write_configs, write_toml};

/// How long the aggregator may take to load its inputs and bind, inside the job.
const ADDR_WAIT_SECS: u32 = 120;
/// How long the finished federation's nodes have to stop on their own before they are cancelled.
const NODES_STOP_SECS: u32 = 30;

/// Writes the run folder's configs for a Slurm job (the aggregator listening on every interface,
/// each `node.toml` naming no aggregator until [`connect`] does) and its two scripts; returns the
/// path of the one to submit, `slurm/federation.sbatch`.
pub fn write_job(p: &mut Prepared) -> anyhow::Result<PathBuf> {
    p.aggregator.listen = vec!["/ip4/0.0.0.0/tcp/0".parse()?];
    write_configs(p, &Multiaddr::empty())?;
    std::fs::create_dir_all(p.dir.logs())?;
    std::fs::create_dir_all(p.dir.slurm())?;
    let bins = Binaries {
        aggregator: sibling_binary("fd-aggregator")?,
        node: sibling_binary("fd-node")?,
        sim_node: sibling_binary("fd-sim-node")?,
        scenarios: sibling_binary("fd-scenarios")?,
    };
    let name = p.aggregator.federation.as_str();
    let federation = p.dir.slurm_federation();
    learning::fs::atomic_write(&federation, federation_script(&p.dir, name, &bins)?.as_bytes())?;
    learning::fs::atomic_write(&p.dir.slurm_nodes(), nodes_script(&p.dir, name, p.nodes.len(), &bins)?.as_bytes())?;
    Ok(federation)
}

/// Inside the job, once the aggregator has reported its addresses: names the first of them in
/// the `node.toml` of every node of the run folder `dir`; returns it.
pub fn connect(dir: &RunDir) -> anyhow::Result<Multiaddr> {
    let file = dir.aggregator_addrs();
    let addr = read_addr_file(&file)
        .and_then(|a| a.into_iter().next())
        .with_context(|| format!("{} holds no aggregator address", file.display()))?;
    let mut i = 0;
    while dir.node(i).config().is_file() {
        let path = dir.node(i).config();
        let mut config: NodeConfig = net::cli::read_toml(&path)?;
        config.aggregator = addr.clone();
        write_toml(&path, &config)?;
        i += 1;
    }
    if i == 0 {
        bail!("{} holds no node", dir.nodes().display());
    }
    Ok(addr)
}

/// Runs the federation of `p` as a Slurm job; returns each round's metrics.
pub(super) async fn federate(p: &mut Prepared, progress: bool) -> anyhow::Result<Vec<RoundMetrics>> {
    let script = write_job(p)?;
    let mut job = Job::submit(&script).await?;
    let state = follow(job.ended(), &p.dir.metrics(), bar(p.scenario.rounds, progress)).await?;
    if state != "COMPLETED" {
        bail!(
            "the Slurm job {} ended {state}; see {} and {}",
            job.id,
            p.dir.slurm_log().display(),
            p.dir.aggregator_log().display()
        );
    }
    read_metrics(&p.dir)
}

/// The workspace binaries that the job runs.
struct Binaries {
    aggregator: PathBuf,
    node: PathBuf,
    sim_node: PathBuf,
    scenarios: PathBuf,
}

/// `path` in single quotes, for a shell.
fn quote(path: &Path) -> anyhow::Result<String> {
    let s = path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}

/// `path` as an `#SBATCH` line takes it: sbatch reads no quotes there, and `%` starts a pattern.
fn sbatch_path(path: &Path) -> anyhow::Result<String> {
    let s = path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))?;
    if s.chars().any(|c| c.is_whitespace() || c == '%') {
        bail!("a Slurm job's run folder cannot hold white space or `%` in its path: {s}");
    }
    Ok(s.to_owned())
}

/// `federation.sbatch` (see the module's documentation).
fn federation_script(dir: &RunDir, name: &str, bins: &Binaries) -> anyhow::Result<String> {
    let (output, run) = (sbatch_path(&dir.slurm_log())?, quote(dir.root())?);
    let (aggregator, scenarios) = (quote(&bins.aggregator)?, quote(&bins.scenarios)?);
    Ok(format!(
        r#"#!/bin/bash
# The federation `{name}` as a Slurm job, written by fd-scenarios. The aggregator is this job's
# one step; once it listens, `fd-scenarios connect` names its address in every node.toml and the
# nodes are submitted as a job array (nodes.sbatch), cancelled when this job ends. The run folder
# and the binaries must be on a filesystem that every compute node shares.
#SBATCH --job-name=fd-{name}
#SBATCH --ntasks=1
#SBATCH --output={output}
set -euo pipefail
run={run}
addrs="$run/logs/aggregator.addrs"
rm -f "$addrs"
srun --ntasks=1 --output=/dev/null --error="$run/logs/aggregator.log" \
  {aggregator} run --config "$run/federation.toml" --addr-file "$addrs" &
aggregator=$!
nodes=
trap 'if [ -n "$nodes" ]; then scancel "$nodes"; fi' EXIT
# It binds a port of its own choosing on every interface and reports its addresses.
for _ in $(seq {addr_polls}); do
  if [ -s "$addrs" ]; then break; fi
  if ! kill -0 "$aggregator" 2>/dev/null; then
    echo "fd-aggregator exited before listening; see $run/logs/aggregator.log" >&2
    exit 1
  fi
  sleep 0.2
done
if [ ! -s "$addrs" ]; then
  echo "fd-aggregator did not report its addresses within {ADDR_WAIT_SECS} s; see $run/logs/aggregator.log" >&2
  exit 1
fi
{scenarios} connect "$run"
nodes=$(sbatch --parsable "$run/slurm/nodes.sbatch")
echo "the nodes: job array $nodes"
wait "$aggregator"
# The finished aggregator tells the nodes, which stop on their own; the trap cancels any that
# have not within {NODES_STOP_SECS} s (a node that left, or one still reconnecting).
for _ in $(seq {stop_polls}); do
  if [ -z "$(squeue -h -j "$nodes" -o %i 2>/dev/null)" ]; then break; fi
  sleep 0.2
done
"#,
        addr_polls = ADDR_WAIT_SECS * 5,
        stop_polls = NODES_STOP_SECS * 5,
    ))
}

/// `nodes.sbatch` for `nodes` nodes (see the module's documentation).
fn nodes_script(dir: &RunDir, name: &str, nodes: usize, bins: &Binaries) -> anyhow::Result<String> {
    // Slurm pads the array index `%a` to two digits as `%2a`: node-XX.log, as the layout names it.
    let log = sbatch_path(&dir.logs())?;
    let (node_dir, node, sim_node) = (quote(&dir.nodes())?, quote(&bins.node)?, quote(&bins.sim_node)?);
    Ok(format!(
        r#"#!/bin/bash
# The nodes of the federation `{name}`, a task a node, written by fd-scenarios and submitted by
# federation.sbatch once the aggregator listens (each node.toml names its address then).
#SBATCH --job-name=fd-{name}-nodes
#SBATCH --array=0-{last}
#SBATCH --ntasks=1
#SBATCH --output=/dev/null
#SBATCH --error={log}/node-%2a.log
set -euo pipefail
node={node_dir}/node-$(printf %02d "$SLURM_ARRAY_TASK_ID")
if [ -f "$node/simulation.toml" ]; then
  exec {sim_node} --config "$node/node.toml" --simulation "$node/simulation.toml"
fi
exec {node} run --config "$node/node.toml"
"#,
        last = nodes - 1,
    ))
}

/// A submitted Slurm job, cancelled if dropped before it ended.
struct Job {
    id: String,
    over: bool,
}

impl Job {
    /// `sbatch --parsable script`.
    async fn submit(script: &Path) -> anyhow::Result<Self> {
        let out = tokio::process::Command::new("sbatch")
            .arg("--parsable")
            .arg(script)
            .output()
            .await
            .context("cannot run sbatch: is Slurm installed (see docs/slurm.md)?")?;
        if !out.status.success() {
            bail!(
                "sbatch {} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // `ID` or `ID;CLUSTER`.
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or_default().to_owned();
        if id.is_empty() {
            bail!("sbatch printed no job id");
        }
        Ok(Self { id, over: false })
    }

    /// Waits for the job to end; returns its final state (`COMPLETED`, `FAILED`, …).
    async fn ended(&mut self) -> anyhow::Result<String> {
        loop {
            let out = tokio::process::Command::new("scontrol")
                .args(["show", "job", "--oneliner", &self.id])
                .output()
                .await
                .context("cannot run scontrol")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(state) = out.status.success().then(|| job_state(&text)).flatten() else {
                bail!("Slurm no longer knows job {}: {}", self.id, String::from_utf8_lossy(&out.stderr).trim());
            };
            if !RUNNING.contains(&state) {
                self.over = true;
                return Ok(state.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.over {
            let _ = std::process::Command::new("scancel").arg(&self.id).status();
        }
    }
}

/// The states of a job that has not ended.
const RUNNING: [&str; 8] =
    ["PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT"];

/// The `JobState` of `scontrol show job --oneliner`'s line.
fn job_state(text: &str) -> Option<&str> {
    text.split_whitespace().find_map(|f| f.strip_prefix("JobState="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_read_from_scontrols_line() {
        let line = "JobId=7 JobName=fd-q UserId=root(0) Priority=1 JobState=COMPLETED Reason=None ExitCode=0:0";
        assert_eq!(job_state(line), Some("COMPLETED"));
        assert_eq!(job_state("JobId=7 JobState=RUNNING Reason=None"), Some("RUNNING"));
        assert_eq!(job_state("slurm_load_jobs error: Invalid job id specified"), None);
    }

    #[test]
    fn paths_are_quoted_for_the_shell_and_refused_where_sbatch_cannot_take_them() {
        assert_eq!(quote(Path::new("/runs/it's here")).unwrap(), r"'/runs/it'\''s here'");
        assert_eq!(sbatch_path(Path::new("/runs/q/logs")).unwrap(), "/runs/q/logs");
        assert!(sbatch_path(Path::new("/runs/my run")).is_err());
        assert!(sbatch_path(Path::new("/runs/100%")).is_err());
    }

    #[test]
    fn the_array_has_a_task_a_node_each_logging_where_the_layout_says() {
        let dir = RunDir::new("/runs/q");
        let bins = Binaries {
            aggregator: "/b/fd-aggregator".into(),
            node: "/b/fd-node".into(),
            sim_node: "/b/fd-sim-node".into(),
            scenarios: "/b/fd-scenarios".into(),
        };
        let script = nodes_script(&dir, "q", 20, &bins).unwrap();
        assert!(script.contains("#SBATCH --array=0-19\n"), "{script}");
        // Slurm's `%2a` of task 7 is `07`: the layout's log of node 7.
        let pattern = script.lines().find_map(|l| l.strip_prefix("#SBATCH --error=")).unwrap();
        assert_eq!(pattern.replace("%2a", "07"), dir.node_log(7).to_str().unwrap());
        assert!(script.contains("node='/runs/q/nodes'/node-$(printf %02d \"$SLURM_ARRAY_TASK_ID\")"), "{script}");
        assert!(script.ends_with("exec '/b/fd-node' run --config \"$node/node.toml\"\n"), "{script}");
        let federation = federation_script(&dir, "q", &bins).unwrap();
        assert!(federation.contains("#SBATCH --output=/runs/q/logs/slurm-federation.out\n"), "{federation}");
        assert!(federation.contains("'/b/fd-scenarios' connect \"$run\"\n"), "{federation}");
    }
}
