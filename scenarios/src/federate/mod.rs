//! The federated part of a run: the aggregator and the nodes, as real libp2p peers inside this
//! process ([`in_process`]), as real `fd-aggregator` and `fd-node` processes ([`processes`]), or
//! as those processes in a Slurm job ([`slurm`]). Each writes the run folder's configs once the
//! aggregator has bound its address, and returns the aggregator's metrics of each round.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use aggregator::RoundMetrics;
use anyhow::Context;

use crate::layout::RunDir;
use crate::setup::Prepared;
use crate::spec::Transport;

pub mod in_process;
pub mod processes;
pub mod slurm;

/// Runs the federation of `p` over its scenario's transport; returns each round's metrics.
pub async fn federate(p: &mut Prepared, progress: bool) -> anyhow::Result<Vec<RoundMetrics>> {
    match p.scenario.transport {
        Transport::InProcess => in_process::federate(p, progress).await,
        Transport::Processes => processes::federate(p, progress).await,
        Transport::Slurm => slurm::federate(p, progress).await,
    }
}

/// Waits for `ended` (the aggregator process or job), showing on `pb` the rounds its `metrics`
/// file holds; returns what `ended` gives.
async fn follow<T>(ended: impl Future<Output = T>, metrics: &Path, pb: indicatif::ProgressBar) -> T {
    tokio::pin!(ended);
    let out = loop {
        tokio::select! {
            out = &mut ended => break out,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Ok(text) = std::fs::read_to_string(metrics) {
                    pb.set_position(text.lines().count() as u64);
                }
            }
        }
    };
    pb.finish_and_clear();
    out
}

/// The aggregator's metrics of each round, from the `metrics.jsonl` of the run folder `dir`.
pub(crate) fn read_metrics(dir: &RunDir) -> anyhow::Result<Vec<RoundMetrics>> {
    let text = std::fs::read_to_string(dir.metrics()).context("reading the aggregator's metrics")?;
    text.lines().map(|l| serde_json::from_str(l).context("metrics line")).collect()
}

/// A progress bar over the rounds (hidden unless `show`).
fn bar(total: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}
